"""Identify an ISO 9660 or FAT filesystem and its label from raw bytes, as blkid does.

Used to find a config partition by its filesystem label and to tell what kind of drive a
file holds. Reads a few sectors at a byte offset of any seekable file (an image, a
partition, or a whole disk at a partition's offset); mounts nothing.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

ISO_DESCRIPTOR_OFFSET = 16 * 2048  # volume descriptors start at logical sector 16
ISO_PRIMARY, ISO_TERMINATOR = 1, 255
FAT_DIR_ENTRY = 32
FAT_ATTR_VOLUME_ID, FAT_ATTR_LFN = 0x08, 0x0F


@dataclass(frozen=True)
class Filesystem:
    type: str   # "iso9660" or "vfat" (blkid's names)
    label: str


def probe_filesystem(fp: BinaryIO, offset: int = 0, size: int | None = None) -> Filesystem | None:
    """The filesystem at ``offset`` of ``fp``, or None when it is neither ISO 9660 nor FAT.

    ``size``: the partition's size; nothing outside ``[offset, offset + size)`` is read.
    Offsets inside a filesystem come from its bytes, and partitions come from a table
    someone else wrote: bounded by the partition, probing every partition of a table
    reads each byte of the disk a few times at most, whatever the table claims."""
    end = 1 << 62 if size is None else offset + size
    return _probe_iso(fp, offset, end) or _probe_fat(fp, offset, end)


def _read(fp: BinaryIO, offset: int, size: int, end: int) -> bytes:
    # Offsets come from the bytes being probed: a root cluster below 2 or a huge FAT size
    # points before the start or past any disk. Such a place holds nothing.
    size = min(size, end - offset)
    if not 0 <= offset < 1 << 62 or size <= 0:
        return b""
    fp.seek(offset)
    return fp.read(size)


def _probe_iso(fp: BinaryIO, offset: int, end: int) -> Filesystem | None:
    # Walk the descriptor set to the primary volume descriptor (boot records may precede it).
    for index in range(32):
        desc = _read(fp, offset + ISO_DESCRIPTOR_OFFSET + index * 2048, 2048, end)
        if len(desc) < 2048 or desc[1:6] != b"CD001":
            return None
        if desc[0] == ISO_PRIMARY:
            return Filesystem("iso9660", desc[40:72].decode("ascii", "replace").rstrip(" \0"))
        if desc[0] == ISO_TERMINATOR:
            return None
    return None


def _probe_fat(fp: BinaryIO, offset: int, end: int) -> Filesystem | None:
    boot = _read(fp, offset, 512, end)
    if len(boot) < 512 or boot[510:512] != b"\x55\xaa" or boot[0] not in (0xEB, 0xE9):
        return None
    bytes_per_sector, sectors_per_cluster, reserved, fats, root_entries, total16, _, fat16_size = \
        struct.unpack_from("<HBHBHHBH", boot, 11)
    if bytes_per_sector not in (512, 1024, 2048, 4096) or sectors_per_cluster == 0 \
            or sectors_per_cluster & (sectors_per_cluster - 1) or fats == 0 or reserved == 0:
        return None
    if fat16_size:  # FAT12/16: extended boot record at 36, fixed root directory
        label_at, fat_size = 43, fat16_size
        root_at = (reserved + fats * fat_size) * bytes_per_sector
        root = _read(fp, offset + root_at, min(root_entries * FAT_DIR_ENTRY, 64 * 1024), end)
    else:           # FAT32: extended boot record at 64, root directory is a cluster chain
        label_at, fat_size = 71, struct.unpack_from("<I", boot, 36)[0]
        root_cluster = struct.unpack_from("<I", boot, 44)[0]
        data_at = (reserved + fats * fat_size) * bytes_per_sector
        cluster_bytes = bytes_per_sector * sectors_per_cluster
        root = _read(fp, offset + data_at + (root_cluster - 2) * cluster_bytes, cluster_bytes, end)
    boot_label = boot[label_at:label_at + 11] if boot[label_at - 5] == 0x29 else b""
    # blkid prefers the root directory's volume-label entry; mkfs.vfat and we write both.
    label = _root_dir_label(root) or boot_label
    text = label.decode("cp437", "replace").rstrip(" \0")
    return Filesystem("vfat", "" if text == "NO NAME" else text)


def _root_dir_label(root: bytes) -> bytes | None:
    for pos in range(0, len(root) - FAT_DIR_ENTRY + 1, FAT_DIR_ENTRY):
        entry = root[pos:pos + FAT_DIR_ENTRY]
        if entry[0] == 0x00:
            return None
        if entry[0] == 0xE5 or entry[11] == FAT_ATTR_LFN:
            continue
        if entry[11] & FAT_ATTR_VOLUME_ID:
            return entry[:11]
    return None
