"""The image being injected into: its container format and which part of it holds the
guest's root filesystem (a partition's byte range, or the whole image)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from partition.writing.device import disk_geometry
from partition.errors import PartitionError
from partition.tables import read_table

from ..errors import ConfigDriveError
from .tools import run_tool

# Containers whose bytes are not the disk's bytes; only a handler that speaks the format
# (qemu-nbd, libguestfs) can serve them. Magic numbers from each format's header.
_CONTAINER_MAGIC = (
    (b"QFI\xfb", "qcow2"),
    (b"QED\x00", "qed"),
    (b"KDMV", "vmdk"),
    (b"vhdxfile", "vhdx"),
    (b"conectix", "vpc"),
)
_VDI_MAGIC = (0x40, b"\x7f\x10\xda\xbe")

# Filesystems a Linux guest boots from; "auto" picks the first partition holding one, so
# an EFI system partition or a BIOS boot partition in front is passed over.
ROOT_FS_TYPES = ("ext4", "ext3", "ext2", "xfs", "btrfs")


@dataclass(frozen=True)
class Target:
    """What the user asked to inject into."""

    path: str
    format: str        # "raw" or a container name ("qcow2", ...)
    partition: str     # "auto", "none" or a partition number

    @property
    def cow(self) -> bool:
        return self.format != "raw"

    @classmethod
    def open(cls, path: str, partition: str | int = "auto") -> "Target":
        partition = str(partition).strip().lower()
        if partition not in ("auto", "none") and not (partition.isdigit() and int(partition) > 0):
            raise ConfigDriveError(f"--partition {partition}: expected a partition number, auto or none")
        try:
            with open(path, "rb") as f:
                head = f.read(512)
        except OSError as exc:
            raise ConfigDriveError(f"{path}: cannot read image ({exc.strerror})") from exc
        return cls(path, image_format(head), partition)


def image_format(head: bytes) -> str:
    for magic, name in _CONTAINER_MAGIC:
        if head.startswith(magic):
            return name
    offset, magic = _VDI_MAGIC
    if head[offset:offset + len(magic)] == magic:
        return "vdi"
    return "raw"


@dataclass(frozen=True)
class Slice:
    """Where the guest's root filesystem lies on a raw image or block device."""

    number: int | None     # partition number, None for the whole image
    offset: int            # bytes
    size: int | None       # bytes; None: to the end
    fs_type: str           # as blkid names it, "" when unknown

    def describe(self) -> str:
        return "whole image" if self.number is None else f"partition {self.number}"


def locate(raw: str, partition: str) -> Slice:
    """Find the requested filesystem on a raw image file or block device.

    The partition table is read by partition/tables/__init__.py, the filesystem type by blkid's
    low-level probe; neither needs root for a file."""
    parts = _partitions(raw)
    if partition == "none" or (partition == "auto" and not parts):
        return Slice(None, 0, None, fs_type(raw, 0))
    if not parts:
        raise ConfigDriveError(f"{raw}: no partition table, but partition {partition} was asked for"
                               " (use --partition none for a whole-disk filesystem)")
    if partition == "auto":
        typed = [(n, off, size, fs_type(raw, off)) for n, off, size in parts]
        for n, off, size, fs in typed:
            if fs in ROOT_FS_TYPES:
                return Slice(n, off, size, fs)
        found = ", ".join(f"{n}: {fs or 'no filesystem'}" for n, _, _, fs in typed)
        raise ConfigDriveError(f"{raw}: no partition holds a Linux root filesystem ({found});"
                               " name one with --partition N")
    for n, off, size in parts:
        if n == int(partition):
            return Slice(n, off, size, fs_type(raw, off))
    raise ConfigDriveError(f"{raw}: has no partition {partition} (it has {', '.join(str(p[0]) for p in parts)})")


def _partitions(raw: str) -> list[tuple[int, int, int]]:
    """(number, offset, size) in bytes for each partition; [] when there is no table.
    Read by partition/tables/__init__.py, the one table reader (GPT and MBR, logical partitions
    numbered from 5 as Linux numbers them)."""
    try:
        with open(raw, "rb") as fp:
            table = read_table(fp, *disk_geometry(fp), source=raw)
    except OSError as exc:
        raise ConfigDriveError(f"{raw}: cannot read the partition table ({exc.strerror or exc})") from exc
    except PartitionError as exc:
        raise ConfigDriveError(str(exc)) from exc
    if table is None:
        return []
    return [(p.number, p.start, p.size) for p in table.partitions]


def fs_type(raw: str, offset: int) -> str:
    proc = run_tool("blkid", "-p", "-O", str(offset), "-o", "value", "-s", "TYPE", raw, check=False)
    return proc.stdout.decode(errors="replace").strip() if proc.returncode == 0 else ""


def is_block_device(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False
