"""Opening a drive from anything that holds one: a directory tree, an ISO 9660 or vfat
image, or a whole disk (image file or block device) whose config partition holds it;
reading is bounded by configdrive/files/drivefiles.py's caps."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import BinaryIO, Iterator

from partition.tables.probe import probe_filesystem

from ..files.dirfd import Refused, walk
from .drive import Drive, Located
from ..files.drivefiles import Budget, Listing, read_all
from ..errors import ConfigDriveError


def open_drive(path: str) -> Drive:
    """Read the config drive held by ``path``: a directory tree, an ISO 9660 or vfat
    image, or a whole disk (image file or block device) with a config partition.
    Reading is capped at 64 MiB and 10 000 entries (configdrive.files.drivefiles)."""
    if Path(path).is_dir():
        return Drive(path, "directory", "", read_directory(Path(path)))
    with open_path(path) as fp:
        found = locate(fp, path)
        tree = read_all(found.fp, scan_image(found.fp, found.format, found.source))
    return Drive(path, found.format, found.label, tree, partition=found.partition, notes=found.notes)


@contextlib.contextmanager
def open_path(path: str) -> Iterator[BinaryIO]:
    try:
        fp = open(path, "rb")
    except OSError as exc:
        raise ConfigDriveError(f"{path}: cannot open ({exc.strerror or exc})") from exc
    with fp:
        yield fp


def locate(fp: BinaryIO, path: str) -> Located:
    fs = probe_filesystem(fp, 0)
    if fs is not None:
        return Located(fp, fs.type, fs.label, path)
    from ..formats.fatreader import has_boot_signature
    fp.seek(0)
    if has_boot_signature(fp.read(512)):   # a FAT whose geometry blkid would not take
        return Located(fp, "vfat", "", path)
    from .disk import locate_drive_in_disk
    return locate_drive_in_disk(fp, path)


def scan_image(fp: BinaryIO, fs_type: str, source: str) -> Listing:
    """Where every file of an ISO 9660 or vfat image at byte 0 of ``fp`` lies."""
    if fs_type == "iso9660":
        from ..formats import isoreader
        return isoreader.scan(fp, source=source)
    from ..formats import fatreader
    return fatreader.scan(fp, source=source)


def read_image(fp: BinaryIO, fs_type: str, source: str) -> dict[str, bytes]:
    """The tree of an ISO 9660 or vfat image that starts at byte 0 of ``fp``."""
    return read_all(fp, scan_image(fp, fs_type, source))


def read_directory(root: Path) -> dict[str, bytes]:
    """A drive's tree from an extracted directory (regular files only, links not
    followed), under the same caps as an image. Each file is judged by fstat of the
    descriptor its bytes come from (configdrive/files/dirfd.py): an entry swapped for a link
    after a look at its name is left out like any link, never read through."""
    budget = Budget(str(root))
    tree = {}
    try:
        for entry in walk(root):
            if entry.fd is None:
                budget.count_entry(entry.rel)
                continue
            with open(entry.fd, "rb") as fp:
                budget.count_entry(entry.rel)
                data = fp.read(budget.limit - budget.bytes_read + 1)   # never past the cap
            budget.charge(len(data), f"file {entry.rel}")
            tree[entry.rel] = data
    except Refused as exc:
        raise ConfigDriveError(f"{os.path.join(root, *exc.parts)}: {exc.why}") from exc
    return tree
