"""Make the kernel see a disk's partition table after we changed it, and find a
partition's device node.

BLKRRPART asks the kernel to re-read the table; it fails with EBUSY while a partition is
in use (retried a few times: udev and blkid open new partitions briefly) and does nothing
on devices whose table the kernel does not scan (loop devices without partscan, some
virtual disks). There we add the partitions ourselves with BLKPG, as ``partx -a`` does.

Redeploys: the disk still shows the old OS's partitions in the kernel's view. A stale
partition that nothing holds is deleted and the new table's added in its place (BLKPG
delete, then add; before, a stale one was left and the new config partition got no node:
"BLKPG could not add partition 2: Device or resource busy"). One that something holds
(mounted, swap, a dm/md holder, a process with it open) the kernel refuses to delete:
:func:`refuse_held_partitions` names them before anything is written.
When udev runs we wait for it (``udevadm settle``) so that /dev/disk/by-* links exist.
Everything acts on the deploy's ``Target``: its descriptor for the ioctls, its device number
for sysfs (/sys/dev/block/MAJ:MIN), never the name the user gave, which may name another
disk by now. A partition's node is reported only if it is that partition's device number.
Nothing here is needed to write the drive (that goes through the whole-disk device at
the partition's offset); it is what lets the OS and the operator see the result.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from .device import Target, busy_reasons_of, sys_block
from ..errors import PartitionError
from ..tables import Partition
from ..tools import udev_settle

# <linux/fs.h>, <linux/blkpg.h>
BLKRRPART = 0x125F
BLKPG = 0x1269
BLKPG_ADD_PARTITION = 1
BLKPG_DEL_PARTITION = 2
SYSFS_SECTOR = 512            # sysfs start/size are always in 512-byte units


class _BlkpgPartition(ctypes.Structure):
    _fields_ = [("start", ctypes.c_longlong), ("length", ctypes.c_longlong), ("pno", ctypes.c_int),
                ("devname", ctypes.c_char * 64), ("volname", ctypes.c_char * 64)]


class _BlkpgIoctlArg(ctypes.Structure):
    _fields_ = [("op", ctypes.c_int), ("flags", ctypes.c_int), ("datalen", ctypes.c_int),
                ("data", ctypes.c_void_p)]


@dataclass
class Rescan:
    method: str = ""                    # "BLKRRPART", "BLKPG", or "" for a regular file
    node: str | None = None             # the asked-for partition's device node, if it exists
    notes: list[str] = field(default_factory=list)


def _sysdir(disk: "str | Target") -> Path | None:
    """The disk's sysfs directory: a Target's by its device number; a path (a caller that
    holds no Target) by what the path names now."""
    return disk.sysfs if isinstance(disk, Target) else sys_block(disk)


def _name(disk: "str | Target") -> str:
    return disk.path if isinstance(disk, Target) else disk


def kernel_partitions(disk: "str | Target") -> dict[int, tuple[int, int, str]]:
    """{number: (start byte, size in bytes, name)} of the partitions the kernel knows."""
    sysdir = _sysdir(disk)
    found = {}
    if sysdir is None:
        return found
    for pfile in sysdir.glob("*/partition"):
        try:
            number = int(pfile.read_text())
            start = int((pfile.parent / "start").read_text()) * SYSFS_SECTOR
            size = int((pfile.parent / "size").read_text()) * SYSFS_SECTOR
        except (OSError, ValueError):
            continue
        found[number] = (start, size, pfile.parent.name)
    return found


def reread(target: Target, partitions: list[Partition], want: Partition | None = None,
           *, retries: int = 5, delay: float = 0.2) -> Rescan:
    """Refresh the kernel's view of ``target`` (through its descriptor, which may be our
    O_EXCL one) to ``partitions`` (none: after a wipe, the kernel shows none either), and
    look up the node of ``want``."""
    result = Rescan()
    if not target.is_block:
        return result                   # an image file: nothing to tell the kernel
    disk, fd = target.path, target.fd
    os.fsync(fd)
    error = _blkrrpart(fd, retries, delay)
    if error is None and _kernel_agrees(target, partitions):
        result.method = "BLKRRPART"
    else:
        if error is not None and error.errno != errno.EINVAL:
            result.notes.append(f"{disk}: BLKRRPART failed ({error.strerror}); partitions updated with BLKPG")
        result.method = "BLKPG"
        _blkpg_add_missing(target, partitions, result.notes)
    why = udev_settle(30)
    if why and partitions:
        result.notes.append(f"{why}: /dev/disk/by-* links for the new partitions may be missing")
    if want is not None:
        result.node = _wait_for_node(target, want, retries, delay)
        if result.node is None:
            result.notes.append(f"{disk}: no device node for {want.describe()} "
                                f"(the drive is written; the kernel does not show the partition yet)")
    return result


def _blkrrpart(fd: int, retries: int, delay: float) -> OSError | None:
    for attempt in range(retries):
        try:
            fcntl.ioctl(fd, BLKRRPART)
            return None
        except OSError as exc:
            if exc.errno != errno.EBUSY or attempt == retries - 1:
                return exc
            time.sleep(delay * (attempt + 1))
    return None


def _kernel_agrees(target: Target, partitions: list[Partition]) -> bool:
    known = {n: (s, z) for n, (s, z, _) in kernel_partitions(target).items()}
    if not partitions:
        return not known
    return all(known.get(p.number) == (p.start, p.size) for p in partitions)


def _blkpg_add_missing(target: Target, partitions: list[Partition], notes: list[str]) -> None:
    """Make the kernel's partitions those of ``partitions``: stale ones (another start or
    size, or no longer in the table) deleted, missing ones added."""
    disk, fd = target.path, target.fd
    known = kernel_partitions(target)
    wanted = {part.number: part for part in partitions}
    for number, (start, size, name) in sorted(known.items()):
        part = wanted.get(number)
        if part is not None and (start, size) == (part.start, part.size):
            continue
        error = _blkpg(fd, BLKPG_DEL_PARTITION, number, 0, 0)
        if error is not None:
            notes.append(f"{disk}: stale partition /dev/{name} could not be removed "
                         f"({error.strerror}); {_holders_of(target, name)}")
            wanted.pop(number, None)
    known = kernel_partitions(target)
    for number, part in sorted(wanted.items()):
        if number in known:
            continue
        error = _blkpg(fd, BLKPG_ADD_PARTITION, number, part.start, part.size)
        if error is not None:
            notes.append(f"{disk}: BLKPG could not add partition {number}: {error.strerror}")


def _blkpg(fd: int, op: int, number: int, start: int, size: int) -> OSError | None:
    spec = _BlkpgPartition(start, size, number, b"", b"")
    arg = _BlkpgIoctlArg(op, 0, ctypes.sizeof(spec), ctypes.cast(ctypes.pointer(spec), ctypes.c_void_p))
    try:
        fcntl.ioctl(fd, BLKPG, arg)
    except OSError as exc:
        return exc
    return None


def held_partitions(disk: "str | Target") -> list[str]:
    """Why each of the kernel's partitions of ``disk`` cannot be deleted: mounted, swap,
    held by dm/md (device.busy_reasons), or open in a process (the kernel refuses to
    delete a partition with any opener). Empty when all can be replaced."""
    partitions = {name for _, _, name in kernel_partitions(disk).values()}
    if not partitions:
        return []
    reasons = [r for r in busy_reasons_of(_sysdir(disk)) if r.split()[0].removeprefix("/dev/") in partitions]
    reasons.extend(_openers(disk, partitions))
    return reasons


def refuse_held_partitions(disk: "str | Target") -> None:
    """Before a new image goes onto ``disk``: refuse, naming them, when old partitions are
    held, since the kernel would go on showing them in place of the new table's."""
    reasons = held_partitions(disk)
    if reasons:
        raise PartitionError(f"{_name(disk)}: old partitions are in use and cannot be replaced by the "
                             f"new image's: {'; '.join(reasons)}")


def _holders_of(disk: "str | Target", name: str) -> str:
    reasons = [r for r in held_partitions(disk) if r.startswith(f"/dev/{name} ")]
    return "; ".join(reasons) or "something holds it"


def _openers(disk: "str | Target", partitions: set[str]) -> list[str]:
    """Processes with a partition's node open (by device number, whatever its path)."""
    numbers = {}
    sysdir = _sysdir(disk)
    for name in partitions:
        try:
            numbers[(sysdir / name / "dev").read_text().strip()] = name
        except (OSError, TypeError):
            continue
    found = []
    for fd_link in Path("/proc").glob("[0-9]*/fd/*"):
        try:
            st = os.stat(fd_link)
        except OSError:
            continue
        if not stat.S_ISBLK(st.st_mode):
            continue
        name = numbers.get(f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")
        if name is None:
            continue
        pid = fd_link.parent.parent.name
        try:
            command = (fd_link.parent.parent / "comm").read_text().strip()
        except OSError:
            command = "?"
        reason = f"/dev/{name} is open in process {pid} ({command})"
        if reason not in found:
            found.append(reason)
    return found


def _wait_for_node(target: Target, want: Partition, retries: int, delay: float) -> str | None:
    """The node of the partition at ``want``'s offset: found by its position, not its
    number, since device-mapper and md disks number partitions their own way; reported
    only while /dev/NAME is that partition's device number (not a node left from another
    disk)."""
    sysdir = target.sysfs
    for _ in range(retries):
        for start, _size, name in kernel_partitions(target).values():
            if start == want.start and _node_is(Path("/dev", name), sysdir / name / "dev"):
                return f"/dev/{name}"
        time.sleep(delay)
    return None


def _node_is(node: Path, dev_file: Path) -> bool:
    try:
        rdev = os.stat(node).st_rdev
        return f"{os.major(rdev)}:{os.minor(rdev)}" == dev_file.read_text().strip()
    except OSError:
        return False
