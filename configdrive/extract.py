"""Copying a drive's files into a directory, never outside it, each streamed from the
image in pieces."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from .drive import Drive
from .drivefiles import read_file
from .errors import ConfigDriveError
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
        for rel, ref in listing.files.items():
            _write_under(dest, rel, read_file(found.fp, ref, found.source, rel))
    return Drive(path, found.format, found.label, dict.fromkeys(listing.files, b""),
                 partition=found.partition, notes=found.notes)


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
        raise ConfigDriveError(f"{target}: cannot write ({exc.strerror or exc})") from exc
    with open(fd, "wb") as out:
        for piece in pieces:
            out.write(piece)
