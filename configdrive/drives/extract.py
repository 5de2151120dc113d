"""Copying a drive's files into a directory, never outside it, each streamed from the
image in pieces."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, Mapping

from ..files.dirfd import Refused, create_file, open_top
from .drive import Drive
from ..files.drivefiles import read_file
from ..errors import ConfigDriveError
from .reader import locate, open_drive, open_path, scan_image


def extract_drive(path: str, dest: str | os.PathLike) -> Drive:
    """Copy the drive at ``path`` into ``dest`` file by file, each streamed from the image
    in pieces (never a whole file in memory). Returns the drive with an empty tree."""
    if Path(path).is_dir():
        drive = open_drive(path)
        extract(drive.tree, dest)
        return drive
    with open_path(path) as fp:
        found = locate(fp, path)
        listing = scan_image(found.fp, found.format, found.source)
        with _destination(dest) as top:
            for rel, ref in listing.files.items():
                _write_under(top, dest, rel, read_file(found.fp, ref, found.source, rel))
    return Drive(path, found.format, found.label, dict.fromkeys(listing.files, b""),
                 partition=found.partition, notes=found.notes)


def extract(tree: Mapping[str, bytes], dest: str | os.PathLike) -> None:
    """Write a drive's tree under ``dest``; refuses paths that would leave it."""
    with _destination(dest) as top:
        for rel, data in tree.items():
            _write_under(top, dest, rel, [data])


@contextlib.contextmanager
def _destination(dest: str | os.PathLike) -> Iterator[int]:
    """A descriptor of ``dest`` (made if missing), which every file is written under."""
    try:
        top = open_top(dest, create=True)
    except OSError as exc:
        raise ConfigDriveError(f"{dest}: cannot write into it ({exc.strerror or exc})") from exc
    try:
        yield top
    finally:
        os.close(top)


def _write_under(top: int, dest: str | os.PathLike, rel: str, pieces) -> None:
    """Write one file of a drive at ``dest/rel``, refusing a path that would leave
    ``dest``: ``..`` or an absolute path by its words, and a link or a non-directory
    anywhere under ``dest`` by the descriptors that walk there (configdrive/files/dirfd.py): each
    directory opened without following a link, the file made anew (O_EXCL), so a name
    swapped for a link while we write cannot send a byte outside."""
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ConfigDriveError(f"{rel}: path leaves the extraction directory {dest}")
    try:
        fd = create_file(top, parts)
    except Refused as exc:
        raise ConfigDriveError(f"{os.path.join(dest, *exc.parts)}: cannot write ({exc.why})") from exc
    with open(fd, "wb") as out:
        for piece in pieces:
            out.write(piece)
