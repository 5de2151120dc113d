"""A config drive as a whole: build one from content, open one from anything that holds it.

Building: content -> (validate) -> layout tree -> ISO 9660 or vfat image.
Opening: an image file, a directory tree, or a whole disk (image or block device) whose
config partition holds the drive -> a :class:`Drive` with its format, label and tree.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Mapping

from partition.probe import probe_filesystem

from .content import Content
from .errors import ConfigDriveError
from .layout import build_tree

FORMATS = ("iso", "vfat")
DEFAULT_LABEL = "config-2"
# The largest drive ironic accepts, and the default vfat size nova uses.
MAX_DRIVE_BYTES = 64 * 1024 * 1024


def source_date_epoch() -> int | None:
    """SOURCE_DATE_EPOCH (reproducible-builds.org) as an int, or None when unset."""
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigDriveError(f"SOURCE_DATE_EPOCH={value!r}: not a whole number of seconds") from None


def write_image(tree: Mapping[str, bytes], out: BinaryIO, *, format: str = "iso",
                label: str = DEFAULT_LABEL, size: int | None = None,
                sector_size: int | None = None) -> None:
    """Write ``tree`` as a filesystem image of ``format`` to the binary stream ``out``.
    ``size`` and ``sector_size`` (the FAT's logical sector, 512 unless given) are vfat's;
    ISO 9660 has its own fixed 2048-byte blocks and ignores both."""
    epoch = source_date_epoch()
    if format == "iso":
        from . import iso
        iso.write(tree, out, label=label, epoch=epoch)
    elif format == "vfat":
        from . import vfat
        vfat.write(tree, out, label=label, size=size, epoch=epoch, sector_size=sector_size or vfat.SECTOR)
    else:
        raise ConfigDriveError(f"format {format!r}: unknown (use one of {', '.join(FORMATS)})")


def build(content: Content, out: str | os.PathLike | BinaryIO | None = None, *,
          format: str = "iso", label: str = DEFAULT_LABEL, size: int | None = None,
          versions: str | list[str] | None = None, ec2: bool = True,
          validate: bool = True, sector_size: int | None = None) -> bytes | None:
    """Build a config drive. Returns the image bytes when ``out`` is None, else writes
    it to the path or binary stream ``out`` and returns None.

    With ``validate`` the content is checked first and every error is raised at once.
    ``size`` and ``sector_size`` are the vfat image's (see :func:`write_image`).
    """
    content.fill_defaults()
    tree = build_tree(content, versions=versions, ec2=ec2)
    if validate:
        from .validate import check_build
        check_build(content, tree, label=label, versions=versions, ec2=ec2)
    return write_drive(tree, out, format=format, label=label, size=size, sector_size=sector_size)


def write_drive(tree: Mapping[str, bytes], out: str | os.PathLike | BinaryIO | None = None,
                **options: Any) -> bytes | None:
    """Write ``tree`` as an image (options of :func:`write_image`) to the path or binary
    stream ``out``, or return its bytes when ``out`` is None."""
    if out is None:
        buffer = io.BytesIO()
        write_image(tree, buffer, **options)
        return buffer.getvalue()
    if isinstance(out, (str, os.PathLike)):
        # Straight into the file (vfat leaves its zeros as a hole), under a temporary name
        # so that a failed build never leaves a half-written image under the final one.
        with atomic_output(Path(out)) as fp:
            write_image(tree, fp, **options)
    elif _seekable(out):
        write_image(tree, out, **options)
    else:  # a pipe: the writers seek, so build in memory first
        buffer = io.BytesIO()
        write_image(tree, buffer, **options)
        out.write(buffer.getbuffer())
    return None


def _seekable(fp: BinaryIO) -> bool:
    try:
        return fp.seekable()
    except (AttributeError, OSError, ValueError):
        return False


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[BinaryIO]:
    """A file that appears under ``path`` only when the block completes."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fp:
            yield fp
        os.replace(tmp, path)
    except OSError as exc:
        raise ConfigDriveError(f"{path}: cannot write ({exc.strerror or exc})") from None
    finally:
        tmp.unlink(missing_ok=True)


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

    def summary(self) -> dict[str, Any]:
        """What ``inspect`` shows; the keys are the stable ``--json`` contract."""
        versions = self.versions()
        chosen = "latest" if "latest" in versions else (versions[-1] if versions else None)
        meta = _load(self.tree.get(f"openstack/{chosen}/meta_data.json")) if chosen else None
        net = _load(self.tree.get(f"openstack/{chosen}/network_data.json")) if chosen else None
        meta = meta if isinstance(meta, dict) else {}
        net = net if isinstance(net, dict) else {}
        return {
            "source": self.source,
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


def open_drive(path: str) -> Drive:
    """Read the config drive held by ``path``: a directory tree, an ISO 9660 or vfat
    image, or a whole disk (image file or block device) with a config partition."""
    p = Path(path)
    if p.is_dir():
        return Drive(path, "directory", "", read_directory(p))
    try:
        fp = open(p, "rb")
    except OSError as exc:
        raise ConfigDriveError(f"{path}: cannot open ({exc.strerror or exc})") from None
    with fp:
        fs = probe_filesystem(fp, 0)
        if fs is not None:
            return Drive(path, fs.type, fs.label, read_image(fp, fs.type, path))
        from .disk import find_drive_in_disk
        return find_drive_in_disk(fp, path)


def read_image(fp: BinaryIO, fs_type: str, source: str) -> dict[str, bytes]:
    """The tree of an ISO 9660 or vfat image that starts at byte 0 of ``fp``."""
    if fs_type == "iso9660":
        from . import iso
        return iso.read(fp, source=source)
    from . import vfat
    return vfat.read(fp, source=source)


def read_directory(root: Path) -> dict[str, bytes]:
    """A drive's tree from an extracted directory (regular files only, links not followed)."""
    tree = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath, name)
            if full.is_file() and not full.is_symlink():
                tree[full.relative_to(root).as_posix()] = full.read_bytes()
    return tree


def extract(tree: Mapping[str, bytes], dest: str | os.PathLike) -> None:
    """Write a drive's tree under ``dest``; refuses paths that would leave it."""
    root = Path(dest).resolve()
    for rel, data in tree.items():
        target = (root / rel).resolve()
        if root != target and root not in target.parents:
            raise ConfigDriveError(f"{rel}: path leaves the extraction directory {dest}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def _load(data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None
