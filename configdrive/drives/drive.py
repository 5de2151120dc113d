"""A config drive that was read (:class:`Drive`: where it was, its format, label and whole
tree, and the summary ``inspect`` shows), and where one starts inside a file or disk
(:class:`Located`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, BinaryIO

from ..model.nocloud import is_seed, summary_fields as seed_summary
from ..documents.schema import parse_checked


@dataclass
class Drive:
    """A config drive that was read: where it was, what it is, and its whole tree."""

    source: str
    format: str                 # "iso9660", "vfat" or "directory"
    label: str
    tree: dict[str, bytes]
    partition: dict[str, Any] | None = None   # set when found inside a disk
    notes: list[str] = field(default_factory=list)

    def versions(self) -> list[str]:
        return sorted({p.split("/")[1] for p in self.tree
                       if p.startswith("openstack/") and p.count("/") >= 2 and p.split("/")[1] != "content"})

    def _document(self, kind: str, rel: str) -> dict[str, Any]:
        """A metadata file of the drive through the type boundary ({} when absent)."""
        data = self.tree.get(rel)
        if data is None:
            return {}
        return parse_checked(kind, data, f"{self.source.rstrip('/')}/{rel}")

    def summary(self) -> dict[str, Any]:
        """What ``inspect`` shows; the keys are the stable ``--json`` contract."""
        versions = self.versions()
        chosen = "latest" if "latest" in versions else (versions[-1] if versions else None)
        meta = self._document("meta_data", f"openstack/{chosen}/meta_data.json") if chosen else {}
        net = self._document("network_data", f"openstack/{chosen}/network_data.json") if chosen else {}
        summary = {
            "source": self.source,
            "datasource": "configdrive",
            "format": self.format,
            "label": self.label,
            "versions": versions,
            "ec2_versions": sorted({p.split("/")[1] for p in self.tree if p.startswith("ec2/") and p.count("/") >= 2}),
            "uuid": meta.get("uuid"),
            "hostname": meta.get("hostname"),
            "name": meta.get("name"),
            "public_keys": sorted((meta.get("public_keys") or {}).keys()),
            "links": len(net.get("links") or []),
            "networks": len(net.get("networks") or []),
            "services": len(net.get("services") or []),
            "user_data_bytes": len(self.tree[f"openstack/{chosen}/user_data"])
            if chosen and f"openstack/{chosen}/user_data" in self.tree else None,
            "files": [{"path": p, "size": len(d)} for p, d in sorted(self.tree.items())],
            "partition": self.partition,
            "notes": self.notes,
        }
        if is_seed(self.tree):   # a NoCloud seed: meta-data at the root, no openstack/
            summary.update(seed_summary(self.tree))
        return summary


@dataclass
class Located:
    """Where a drive's filesystem starts: ``fp`` reads it from byte 0, ``source`` names
    it in errors; ``partition`` and ``notes`` say where it was found inside a disk."""

    fp: BinaryIO
    format: str                 # "iso9660" or "vfat"
    label: str
    source: str
    partition: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
