"""A config drive as a whole: build one from content, open one from anything that holds it.

Building: content -> (validate) -> layout tree -> ISO 9660 or vfat image.
Opening: an image file, a directory tree, or a whole disk (image or block device) whose
config partition holds the drive -> a :class:`Drive` with its format, label and tree.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Mapping

from partition.probe import probe_filesystem

from .content import Content
from .drivefiles import MAX_DRIVE_BYTES, Budget, Listing, read_all, read_file  # noqa: F401 (MAX_DRIVE_BYTES: imported from here by others)
from .errors import ConfigDriveError
from .layout import build_tree
from .nocloud import FORMATS as NOCLOUD_FORMATS, LABEL as NOCLOUD_LABEL, is_seed, summary_fields as seed_summary

FORMATS = ("iso", "vfat", *NOCLOUD_FORMATS)
DEFAULT_LABEL = "config-2"


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


def default_label(format: str) -> str:
    """config-2 for a config drive, cidata for a NoCloud seed."""
    return NOCLOUD_LABEL if format in NOCLOUD_FORMATS else DEFAULT_LABEL


def drive_tree(content: Content, format: str = "iso", versions: str | list[str] | None = None,
               ec2: bool = True) -> tuple[dict[str, bytes], str]:
    """The files a drive of ``format`` holds, and the filesystem ("iso" or "vfat") that
    carries them: a config drive's tree, or the same content as a NoCloud seed."""
    if format in NOCLOUD_FORMATS:
        from .nocloud import seed_tree
        return seed_tree(content), NOCLOUD_FORMATS[format]
    return build_tree(content, versions=versions, ec2=ec2), format


def build(content: Content, out: str | os.PathLike | BinaryIO | None = None, *,
          format: str = "iso", label: str | None = None, size: int | None = None,
          versions: str | list[str] | None = None, ec2: bool = True,
          validate: bool = True, sector_size: int | None = None) -> bytes | None:
    """Build a config drive. Returns the image bytes when ``out`` is None, else writes
    it to the path or binary stream ``out`` and returns None.

    With ``validate`` the content is checked first and every error is raised at once.
    ``size`` and ``sector_size`` are the vfat image's (see :func:`write_image`).
    """
    label = label or default_label(format)
    tree, fs = checked_tree(content, format=format, label=label, versions=versions, ec2=ec2,
                            validate=validate)
    return write_drive(tree, out, format=fs, label=label, size=size, sector_size=sector_size)


def checked_tree(content: Content, *, format: str = "iso", label: str | None = None,
                 versions: str | list[str] | None = None, ec2: bool = True,
                 validate: bool = True) -> tuple[dict[str, bytes], str]:
    """The tree :func:`build` writes and its filesystem, after the same checks (every
    error raised at once): what a deploy runs before its image goes down, so that content
    that would be refused never costs the target its old disk."""
    content.fill_defaults()
    label = label or default_label(format)
    tree, fs = drive_tree(content, format, versions=versions, ec2=ec2)
    if validate:
        from .validate import check_build
        check_build(content, tree, label=label, versions=versions, ec2=ec2,
                    consumers=format not in NOCLOUD_FORMATS)
    return tree, fs


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

    def _document(self, kind: str, rel: str) -> dict[str, Any]:
        """A metadata file of the drive through the type boundary ({} when absent)."""
        data = self.tree.get(rel)
        if data is None:
            return {}
        from .validate import parse_checked   # validate imports this module
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


def open_drive(path: str) -> Drive:
    """Read the config drive held by ``path``: a directory tree, an ISO 9660 or vfat
    image, or a whole disk (image file or block device) with a config partition.
    Reading is capped at 64 MiB and 10 000 entries (configdrive.drivefiles)."""
    if Path(path).is_dir():
        return Drive(path, "directory", "", read_directory(Path(path)))
    with _open(path) as fp:
        found = _locate(fp, path)
        tree = read_all(found.fp, scan_image(found.fp, found.format, found.source))
    return Drive(path, found.format, found.label, tree, partition=found.partition, notes=found.notes)


def extract_drive(path: str, dest: str | os.PathLike) -> Drive:
    """Copy the drive at ``path`` into ``dest`` file by file, each streamed from the image
    in pieces (never a whole file in memory). Returns the drive with an empty tree."""
    if Path(path).is_dir():
        drive = open_drive(path)
        extract(drive.tree, dest)
        return drive
    with _open(path) as fp:
        found = _locate(fp, path)
        listing = scan_image(found.fp, found.format, found.source)
        for rel, ref in listing.files.items():
            _write_under(dest, rel, read_file(found.fp, ref, found.source, rel))
    return Drive(path, found.format, found.label, dict.fromkeys(listing.files, b""),
                 partition=found.partition, notes=found.notes)


@contextlib.contextmanager
def _open(path: str) -> Iterator[BinaryIO]:
    try:
        fp = open(path, "rb")
    except OSError as exc:
        raise ConfigDriveError(f"{path}: cannot open ({exc.strerror or exc})") from None
    with fp:
        yield fp


def _locate(fp: BinaryIO, path: str) -> Located:
    fs = probe_filesystem(fp, 0)
    if fs is not None:
        return Located(fp, fs.type, fs.label, path)
    from .vfat import has_boot_signature
    fp.seek(0)
    if has_boot_signature(fp.read(512)):   # a FAT whose geometry blkid would not take
        return Located(fp, "vfat", "", path)
    from .disk import locate_drive_in_disk
    return locate_drive_in_disk(fp, path)


def scan_image(fp: BinaryIO, fs_type: str, source: str) -> Listing:
    """Where every file of an ISO 9660 or vfat image at byte 0 of ``fp`` lies."""
    if fs_type == "iso9660":
        from . import iso
        return iso.scan(fp, source=source)
    from . import vfat
    return vfat.scan(fp, source=source)


def read_image(fp: BinaryIO, fs_type: str, source: str) -> dict[str, bytes]:
    """The tree of an ISO 9660 or vfat image that starts at byte 0 of ``fp``."""
    return read_all(fp, scan_image(fp, fs_type, source))


def read_directory(root: Path) -> dict[str, bytes]:
    """A drive's tree from an extracted directory (regular files only, links not
    followed), under the same caps as an image."""
    budget = Budget(str(root))
    tree = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath, name)
            rel = full.relative_to(root).as_posix()
            budget.count_entry(rel)
            if full.is_file() and not full.is_symlink():
                with open(full, "rb") as fp:   # never more than the cap, whatever its size
                    data = fp.read(budget.limit - budget.bytes_read + 1)
                budget.charge(len(data), f"file {rel}")
                tree[rel] = data
    return tree


def extract(tree: Mapping[str, bytes], dest: str | os.PathLike) -> None:
    """Write a drive's tree under ``dest``; refuses paths that would leave it."""
    for rel, data in tree.items():
        _write_under(dest, rel, [data])


def _write_under(dest: str | os.PathLike, rel: str, pieces) -> None:
    """Write one file of a drive at ``dest/rel``, refusing a path that would leave
    ``dest`` (``..``, an absolute path, or a link already inside it)."""
    root = Path(dest).resolve()
    target = (root / rel).resolve()
    if root != target and root not in target.parents:
        raise ConfigDriveError(f"{rel}: path leaves the extraction directory {dest}")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise ConfigDriveError(f"{target}: cannot write ({exc.strerror or exc})") from None
    with open(fd, "wb") as out:
        for piece in pieces:
            out.write(piece)

