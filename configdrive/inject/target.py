"""The image being injected into: its container format and which part of it holds the
guest's root filesystem (a partition's byte range, or the whole image).

The image is named once: ``Target.open`` opens it, and every later step (the format read,
the partition table, blkid, losetup, debugfs) goes through that descriptor, as
``/dev/fd/N`` (the same file, for this process and for a tool given the descriptor), never
through the name again. A name checked and then opened again by a tool could by then name
another file or a mounted disk (a symbolic link renamed over it in a writable directory).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from partition.writing.device import disk_geometry, identity_of
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
    """What the user asked to inject into, held open (``close`` when done)."""

    path: str          # as the user named it: for messages only
    format: str        # "raw" or a container name ("qcow2", ...)
    partition: str     # "auto", "none" or a partition number
    fd: int            # the image, opened once, read-only
    st: os.stat_result

    @property
    def cow(self) -> bool:
        return self.format != "raw"

    @property
    def is_block(self) -> bool:
        return stat.S_ISBLK(self.st.st_mode)

    @property
    def node(self) -> str:
        """The image as a path: for this process, and for a tool run with
        ``pass_fds=(target.fd,)``."""
        return f"/dev/fd/{self.fd}"

    @classmethod
    def open(cls, path: str, partition: str | int = "auto") -> "Target":
        partition = str(partition).strip().lower()
        if partition not in ("auto", "none") and not (partition.isdigit() and int(partition) > 0):
            raise ConfigDriveError(f"--partition {partition}: expected a partition number, auto or none")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
        except OSError as exc:
            raise ConfigDriveError(f"{path}: cannot read image ({exc.strerror})") from exc
        try:
            head = os.pread(fd, 512, 0)
            target = cls(path, image_format(head), partition, fd, os.fstat(fd))
            target._refuse_other_files()
            return target
        except OSError as exc:
            os.close(fd)
            raise ConfigDriveError(f"{path}: cannot read image ({exc.strerror})") from exc
        except BaseException:
            os.close(fd)
            raise

    def _refuse_other_files(self) -> None:
        """A container whose header can name other files is refused before any handler
        sees it: qemu (qemu-nbd, libguestfs) would open them, and what the guest then reads
        (a host file as a backing file, a VMDK's extents) is what nova's images did in
        CVE-2024-32498. A qcow2 passes the same checks as one being deployed
        (partition/images/qcow2.py: no backing file, no external data file, its tables
        inside the file); the other containers, whose descriptors and parent links we do
        not read, are refused whole: converted to raw or qcow2 first, they are served."""
        if self.format == "raw":
            return
        if self.format != "qcow2":
            raise ConfigDriveError(f"{self.path}: {self.format} images are refused: their "
                                   "headers can name other files that qemu would read "
                                   "(CVE-2024-32498); convert it to raw or qcow2 first")
        from partition.images.qcow2 import Qcow2
        try:   # its size by seeking: a block device's st_size is 0
            Qcow2(self.fd, os.lseek(self.fd, 0, os.SEEK_END), self.path).close()
        except PartitionError as exc:
            raise ConfigDriveError(str(exc)) from exc

    def open_for_writing(self) -> int:
        """A read-write descriptor of the same file (O_EXCL on a block device: the kernel
        then refuses one that is mounted or otherwise claimed)."""
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_EXCL if self.is_block else 0)
        try:
            fd = os.open(f"/proc/self/fd/{self.fd}", flags)
        except OSError as exc:
            raise ConfigDriveError(f"{self.path}: cannot open for writing ({exc.strerror})") from exc
        if identity_of(fd) != identity_of(self.fd):
            os.close(fd)      # cannot happen through /proc/self/fd; checked, not assumed
            raise ConfigDriveError(f"{self.path}: opened for writing, it is no longer the image")
        return fd

    def close(self) -> None:
        os.close(self.fd)


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


def locate(disk: "Target | str", partition: str) -> Slice:
    """Find the requested filesystem on the held image (a ``Target``) or on a block device
    this process made itself (a loop or nbd device, by its node).

    The partition table is read by partition/tables/__init__.py, the filesystem type by blkid's
    low-level probe; neither needs root for a file."""
    where, name, fds = ((disk.node, disk.path, (disk.fd,)) if isinstance(disk, Target)
                        else (disk, disk, ()))
    parts = _partitions(where, name)
    if partition == "none" or (partition == "auto" and not parts):
        return Slice(None, 0, None, fs_type(where, 0, fds))
    if not parts:
        raise ConfigDriveError(f"{name}: no partition table, but partition {partition} was asked for"
                               " (use --partition none for a whole-disk filesystem)")
    if partition == "auto":
        typed = [(n, off, size, fs_type(where, off, fds)) for n, off, size in parts]
        for n, off, size, fs in typed:
            if fs in ROOT_FS_TYPES:
                return Slice(n, off, size, fs)
        found = ", ".join(f"{n}: {fs or 'no filesystem'}" for n, _, _, fs in typed)
        raise ConfigDriveError(f"{name}: no partition holds a Linux root filesystem ({found});"
                               " name one with --partition N")
    for n, off, size in parts:
        if n == int(partition):
            return Slice(n, off, size, fs_type(where, off, fds))
    raise ConfigDriveError(f"{name}: has no partition {partition} (it has {', '.join(str(p[0]) for p in parts)})")


def _partitions(where: str, name: str) -> list[tuple[int, int, int]]:
    """(number, offset, size) in bytes for each partition; [] when there is no table.
    Read by partition/tables/__init__.py, the one table reader (GPT and MBR, logical partitions
    numbered from 5 as Linux numbers them)."""
    try:
        with open(where, "rb") as fp:
            table = read_table(fp, *disk_geometry(fp), source=name)
    except OSError as exc:
        raise ConfigDriveError(f"{name}: cannot read the partition table ({exc.strerror or exc})") from exc
    except PartitionError as exc:
        raise ConfigDriveError(str(exc)) from exc
    if table is None:
        return []
    return [(p.number, p.start, p.size) for p in table.partitions]


def fs_type(where: str, offset: int, pass_fds: tuple[int, ...] = ()) -> str:
    proc = run_tool("blkid", "-p", "-O", str(offset), "-o", "value", "-s", "TYPE", where,
                    check=False, pass_fds=pass_fds)
    return proc.stdout.decode(errors="replace").strip() if proc.returncode == 0 else ""
