"""Find the config drive inside a whole disk (image file or block device): read its
partition table, find the config partition by any identity, and read the drive at the
partition's byte offset. Used by ``inspect`` and ``extract`` on a disk."""

from __future__ import annotations

import os
from typing import BinaryIO

from partition.tables.config_partition import find_config_partition
from partition.writing.device import disk_geometry
from partition.errors import PartitionError
from partition.tables import read_table

from .drive import Located
from ..errors import ConfigDriveError
from ..files.window import Window


class _Window(Window):
    """A read-only view of ``fp`` from ``offset`` on, so that readers written for a drive
    that starts at byte 0 read one inside a partition."""

    def __init__(self, fp: BinaryIO, offset: int, size: int):
        super().__init__(size)
        self._fp, self._offset = fp, offset

    def read_at(self, pos: int, n: int) -> bytes:
        self._fp.seek(self._offset + pos)
        return self._fp.read(n)


def locate_drive_in_disk(fp: BinaryIO, path: str) -> Located:
    """The drive in the config partition of the disk open as ``fp``."""
    try:
        table = read_table(fp, *disk_geometry(fp), source=path)
    except PartitionError as exc:
        raise ConfigDriveError(str(exc)) from exc
    if table is None:
        raise ConfigDriveError(f"{path}: neither a config drive (ISO 9660 or vfat) nor a disk "
                               f"with a partition table")
    try:
        found = find_config_partition(fp, table, source=path)
    except PartitionError as exc:
        raise ConfigDriveError(str(exc)) from exc
    if found is None:
        raise ConfigDriveError(f"{path}: {table.kind} disk with no config partition (no GPT name "
                               f"config-v2, MBR type 0x99 or filesystem label config-2)")
    part = found.partition
    if found.filesystem is None:
        raise ConfigDriveError(f"{path}: config {part.describe()} (by {found.identity}) holds no "
                               f"ISO 9660 or vfat filesystem")
    fs = found.filesystem
    info = {"number": part.number, "start": part.start, "size": part.size,
            "identity": found.identity, "table": table.kind, "uuid": part.uuid}
    notes = [f"read from {part.describe()} of a {table.kind} disk, found by {found.identity}",
             *table.notes]
    return Located(_Window(fp, part.start, part.size), fs.type, fs.label,
                   f"{path} partition {part.number}", partition=info, notes=notes)
