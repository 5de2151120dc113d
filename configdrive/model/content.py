"""One normalized model of what a config drive carries (:class:`Content`).

Every producer (files on the command line, configdrive/model/inputs.py; an ironic-style request;
keyword arguments from Python) ends in the same :class:`Content`; the layout, the
validator and the injector read only that. Nothing here touches a file or an image.
"""

from __future__ import annotations

import copy
import json
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from ..documents.checks import pointer
from ..errors import ConfigDriveError
from ..documents.schema import check_types

# The keys the ironic API accepts in its configdrive object (ironic api/controllers/v1/node.py).
IRONIC_KEYS = ("meta_data", "network_data", "user_data", "vendor_data")

# Namespace for the uuid we derive when none is given: a drive without meta_data.uuid is
# rejected by cloud-init, and a random one would break reproducible builds.
_DERIVED_UUID_NAMESPACE = uuidlib.UUID("6c1b4c36-4e8f-4c3a-9d0e-3f0a8c2d6b11")


@dataclass
class InjectedFile:
    """A file the guest should get at ``path`` (nova's "personality" files)."""

    path: str
    data: bytes


@dataclass
class Content:
    """What goes on a drive, independent of format and version layout.

    ``meta_data`` is the OpenStack meta_data.json document as the newest version would
    carry it; the layout trims version-gated keys for older directories. ``user_data`` is
    opaque bytes (text, gzip, MIME multipart, binary). ``None`` means "not given"; the
    layout then writes what nova writes in that case.
    """

    meta_data: dict[str, Any] = field(default_factory=dict)
    user_data: bytes | None = None
    network_data: dict[str, Any] | None = None
    vendor_data: dict[str, Any] | None = None
    vendor_data2: dict[str, Any] | None = None
    files: list[InjectedFile] = field(default_factory=list)
    random_seed: bool = False
    ec2: dict[str, Any] | None = None    # keys of ec2/<version>/meta-data.json to write as given
    # A NoCloud seed's network-config file as given (YAML, version 1 or 2); config
    # drives carry network_data.json instead (configdrive/model/nocloud.py converts it).
    network_config: bytes | None = None

    # -- derived facts the layout, the validator and the injector share --------------

    @property
    def uuid(self) -> str:
        return str(self.meta_data.get("uuid", ""))

    @property
    def hostname(self) -> str:
        return str(self.meta_data.get("hostname") or self.meta_data.get("name") or "")

    def ssh_keys(self) -> list[tuple[str, str]]:
        """(name, key) pairs from public_keys and ssh entries of keys, without repeats."""
        seen: dict[str, str] = {}
        for name, key in (self.meta_data.get("public_keys") or {}).items():
            seen.setdefault(str(key).strip(), str(name))
        for entry in self.meta_data.get("keys") or []:
            if isinstance(entry, Mapping) and entry.get("type", "ssh") == "ssh" and entry.get("data"):
                seen.setdefault(str(entry["data"]).strip(), str(entry.get("name", "")))
        return [(name, key) for key, name in seen.items()]

    # -- builders -------------------------------------------------------------------

    @classmethod
    def from_ironic(cls, obj: Any, source: str = "ironic configdrive") -> "Content":
        """The ironic API's configdrive object: meta_data, network_data, user_data,
        vendor_data and nothing else. A dict or list user_data is JSON-encoded (as
        ironic does); ``vendor_data`` becomes vendor_data2.json, as openstacksdk's
        builder (which ironic calls) writes it."""
        check_types("ironic", obj, source)
        unknown = sorted(set(obj) - set(IRONIC_KEYS))
        if unknown:
            raise ConfigDriveError(
                f"{source}: {pointer(unknown[0])}: unknown key (allowed: {', '.join(IRONIC_KEYS)})")
        content = cls()
        content.meta_data = copy.deepcopy(dict(obj.get("meta_data") or {}))
        if obj.get("network_data") is not None:
            content.network_data = copy.deepcopy(dict(obj["network_data"]))
        if obj.get("vendor_data") is not None:
            content.vendor_data2 = copy.deepcopy(dict(obj["vendor_data"]))
        user_data = obj.get("user_data")
        if isinstance(user_data, (dict, list)):
            content.user_data = json.dumps(user_data).encode()
        elif isinstance(user_data, str):
            content.user_data = user_data.encode()
        return content

    def apply_shortcuts(
        self,
        *,
        uuid: str | None = None,
        name: str | None = None,
        hostname: str | None = None,
        ssh_keys: Iterable[tuple[str, str]] = (),
        admin_pass: str | None = None,
    ) -> None:
        """Set the common keys directly; given values win over those from files."""
        md = self.meta_data
        if uuid is not None:
            md["uuid"] = uuid
        if name is not None:
            md["name"] = name
        if hostname is not None:
            md["hostname"] = hostname
            if name is None:
                # glean names the host from `name`, cloud-init from `hostname`: a new
                # hostname alone must not leave an old name behind.
                md["name"] = hostname.split(".")[0]
        if admin_pass is not None:
            md["admin_pass"] = admin_pass
        for key_name, key in ssh_keys:
            add_ssh_key(md, key_name, key)

    def fill_defaults(self) -> None:
        """What nova always writes: name and hostname from each other, launch_index 0,
        and a uuid (derived from the content, so builds stay reproducible)."""
        md = self.meta_data
        if md.get("hostname") and not md.get("name"):
            md["name"] = str(md["hostname"]).split(".")[0]
        if md.get("name") and not md.get("hostname"):
            md["hostname"] = md["name"]
        md.setdefault("launch_index", 0)
        if not md.get("uuid"):
            md["uuid"] = str(uuidlib.uuid5(_DERIVED_UUID_NAMESPACE, self._fingerprint()))

    def _fingerprint(self) -> str:
        doc = {
            "meta_data": {k: v for k, v in self.meta_data.items() if k != "uuid"},
            "network_data": self.network_data,
            "vendor_data": self.vendor_data,
            "vendor_data2": self.vendor_data2,
            "ec2": self.ec2,
            "user_data": (self.user_data or b"").hex(),
            "files": [(f.path, f.data.hex()) for f in self.files],
        }
        return json.dumps(doc, sort_keys=True, default=str)


def add_ssh_key(meta_data: dict[str, Any], key_name: str, key: str) -> None:
    """Add a key to public_keys and keys, as nova does for a keypair; names stay unique."""
    key = key.strip()
    public_keys = meta_data.setdefault("public_keys", {})
    if key in public_keys.values():
        return
    unique = key_name or "key"
    n = 1
    while unique in public_keys:
        n += 1
        unique = f"{key_name}-{n}"
    public_keys[unique] = key
    meta_data.setdefault("keys", []).append({"name": unique, "type": "ssh", "data": key})


