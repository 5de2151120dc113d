"""Open a write target (a whole-disk block device or a regular file) once, and answer
the questions a writer asks it: size, logical sector size, which device it is, write
zeros, flush.

The API is small on purpose::

    with open_target("/dev/sda") as target:      # O_EXCL + flock; refuses a busy disk with names
        target.size, target.sector_size, target.is_block, target.identity, target.sysfs
        target.pwrite(data, offset); target.write_zeros(offset, length); target.sync()
        target.fileobj()                          # a seekable binary file on the same fd

Names against handles: the name a user gives (``/dev/sda``, a /dev/disk/by-id link) is
looked up exactly once, with O_PATH; the descriptor that writes is opened through that
lookup (/proc/self/fd/N), so whatever the name points at later (udev re-pointing a by-id
link when disks re-enumerate, a /dev/sdX node re-created for another disk) the deploy goes
on writing the disk it resolved, locked and checked. Every later step takes the
``Target``, never the name: sysfs is reached through the device number
(/sys/dev/block/MAJ:MIN), a second descriptor (O_DIRECT) through /proc/self/fd and is
checked to be the same device (``identity``: device number and the kernel's disk sequence
number, which a re-attached loop device or a re-plugged disk changes).

A block device is opened with O_EXCL so the kernel itself refuses one that is mounted or
held (LVM, MD, dm), and stays so opened for the whole deploy; we look for the reasons in
/proc/mounts, /proc/swaps and the holders in sysfs so the message can name them. The
descriptor also holds an exclusive flock, so a second deploy onto the same target is
refused by name (two deploys onto one disk-image file once both exited 0, interleaved).
A target that does not exist is refused (``--device /dev/sdz`` once became a regular file
in devtmpfs holding the whole image) unless creating it was asked for; a regular file we
did not create is never grown past its length.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import io
import os
import stat
import struct
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from ..errors import PartitionError

# <linux/fs.h>
BLKSSZGET = 0x1268          # logical sector size (int)
BLKGETSIZE64 = 0x80081272   # size in bytes (u64)
BLKZEROOUT = 0x127F         # write zeros to a range {start, length} (u64[2])
BLKGETDISKSEQ = 0x80081280  # the disk's sequence number (u64), Linux 5.15+
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02

ZERO_BLOCK = bytes(1 << 20)

SYNC_FILE_RANGE_WAIT_BEFORE, SYNC_FILE_RANGE_WRITE, SYNC_FILE_RANGE_WAIT_AFTER = 1, 2, 4


@functools.cache
def _libc():
    """libc through ctypes, loaded on first use: importing ctypes costs more than the
    interpreter's own start, and ``configdrive --help`` or a read-only command never
    needs fallocate or sync_file_range. The process's own C library (dlopen of NULL),
    not ``ctypes.util.find_library("c")``, which runs `ldconfig -p` in a child process:
    strace of a deploy showed that fork and exec between opening the device and its
    first write, 20-30 ms of every deploy."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return libc


class Target:
    """An open write target. ``size`` is the disk's size in bytes (for a regular file, its
    length); ``sector_size`` the logical sector size (512 for files unless told);
    ``path`` the name the user gave, for messages only (nothing is opened by it again);
    ``identity`` what was opened, taken from the descriptor (see :func:`identity_of`)."""

    def __init__(self, path: str, fd: int, size: int, sector_size: int, is_block: bool,
                 sector_size_known: bool = True, created: tuple[int, str] | None = None):
        self.path, self.fd, self.size = path, fd, size
        self.created = bool(created)   # a file this deploy made: it may grow to the image's end
        self._made_in = created or None   # (held directory, name) it was made as
        self.sector_size, self.is_block = sector_size, is_block
        # A regular file has no sector size of its own: unless told, a writer may adopt
        # the image's.
        self.sector_size_known = sector_size_known
        self.identity = identity_of(fd)
        self._file: BinaryIO | None = None

    # -- which device ----------------------------------------------------------------
    @property
    def rdev(self) -> int | None:
        return self.identity[1] if self.is_block else None

    @property
    def named(self) -> str:
        """The name given and, for a block device, the number it led to when opened: how
        a message about a change to the disk names it (the name may lead elsewhere by now)."""
        return f"{self.path} ({describe_identity(self.identity)})" if self.is_block else self.path

    @property
    def sysfs(self) -> Path | None:
        """The disk's directory in sysfs, by device number (never by the user's name)."""
        return sys_dev(self.rdev) if self.is_block else None

    def reopen(self, flags: int) -> int:
        """A second descriptor on the very device or file of this one (O_DIRECT wants its
        own), through /proc/self/fd rather than the name, and proven to be the same: a
        disk that went away and whose device number now names another is refused."""
        try:
            fd = os.open(f"/proc/self/fd/{self.fd}", flags | os.O_CLOEXEC)
        except OSError as exc:
            raise PartitionError(f"{self.path}: cannot open it again: {exc.strerror}") from exc
        if identity_of(fd) != self.identity:
            os.close(fd)
            raise PartitionError(f"{self.path}: {describe_identity(self.identity)} is no longer "
                                 "the device this deploy opened: refused")
        return fd

    def describe(self) -> dict:
        """What was written, for the summary: a block device by its number, kernel name and
        /dev/disk/by-id name; a file by its device, inode and current path."""
        if self.is_block:
            sysdir = self.sysfs
            return {"kind": "block", "dev": _number(self.rdev),
                    "name": f"/dev/{sysdir.name}" if sysdir else None,
                    "diskseq": self.identity[2], "by_id": _by_id(self.rdev)}
        try:
            where = os.readlink(f"/proc/self/fd/{self.fd}")
        except OSError:
            where = None
        return {"kind": "file", "dev": _number(self.identity[1]), "inode": self.identity[2],
                "name": where}

    def expect_sector_size(self, sector_size: int | None) -> None:
        """A sector size the caller insists on: a block device must have it; a file takes it."""
        if not sector_size:
            return
        if self.is_block and sector_size != self.sector_size:
            raise PartitionError(f"{self.path}: logical sector size is {self.sector_size}, "
                                 f"not {sector_size}")
        self.sector_size, self.sector_size_known = sector_size, True

    def size_new_file(self, size: int | None) -> None:
        """A file this deploy created (still empty) is made ``size`` bytes long (sparse):
        the image's virtual size, once the image is open."""
        if not (self.created and self.size == 0 and size):
            return
        try:
            os.ftruncate(self.fd, size)
        except OSError as exc:     # EFBIG: a qcow2 declaring a petabyte onto ext4
            raise PartitionError(f"{self.path}: cannot make a file of {size} bytes (the "
                                 f"image's virtual size): {exc.strerror}") from exc
        self.size = size

    # -- writing ---------------------------------------------------------------------
    def pwrite(self, data, offset: int) -> None:
        view = memoryview(data)
        while view:
            try:
                done = os.pwrite(self.fd, view, offset)
            except OSError as exc:
                raise PartitionError(f"{self.path}: write of {len(view)} bytes at byte {offset} "
                                     f"failed: {exc.strerror}") from exc
            if done == 0:
                raise PartitionError(f"{self.path}: no space left at byte {offset}")
            view, offset = view[done:], offset + done

    def write_zeros(self, offset: int, length: int) -> None:
        """Make ``[offset, offset+length)`` read back as zeros.

        A regular file gets a punched hole. A block device gets the same call, which the
        kernel turns into "write zeroes, unmapping allowed" and refuses unless the device
        guarantees that the range reads back as zeros (never a plain discard, which might
        not); then BLKZEROOUT (the kernel writes the zeros itself if need be). Both fall
        back to writing zero buffers."""
        if length <= 0:
            return
        mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
        if self.is_block:
            aligned = offset % self.sector_size == 0 and length % self.sector_size == 0
            if aligned:
                if _libc().fallocate(self.fd, mode, offset, length) == 0:
                    return
                try:
                    fcntl.ioctl(self.fd, BLKZEROOUT, struct.pack("QQ", offset, length))
                    return
                except OSError:
                    pass
        else:
            self.grow_to(offset + length)   # a hole cannot grow a file: extend it first
            if _libc().fallocate(self.fd, mode, offset, length) == 0:
                return
        while length:
            n = min(length, len(ZERO_BLOCK))
            self.pwrite(memoryview(ZERO_BLOCK)[:n], offset)
            offset, length = offset + n, length - n

    def grow_to(self, length: int) -> None:
        """A regular file: make it at least ``length`` bytes long (sparse) and update
        ``size`` to its actual length (writes past the end grow it too)."""
        actual = os.fstat(self.fd).st_size
        if actual < length:
            if not self.created:
                raise PartitionError(f"{self.path}: {actual} bytes long; writing up to byte "
                                     f"{length} would grow a file we did not create: refused")
            os.ftruncate(self.fd, length)
            actual = length
        self.size = actual

    def start_writeback(self, offset: int, length: int) -> None:
        """Have the kernel start writing this range out now, without waiting."""
        _libc().sync_file_range(self.fd, offset, length, SYNC_FILE_RANGE_WRITE)

    def wait_writeback(self, offset: int, length: int) -> None:
        """Wait until this range is written out (bounds dirty memory; no cache flush:
        ``sync`` at the end does that)."""
        flags = SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER
        if _libc().sync_file_range(self.fd, offset, length, flags) == 0:
            return
        import ctypes
        code = ctypes.get_errno()
        if code in (errno.ENOSYS, errno.EINVAL, errno.ESPIPE):
            self.sync()          # the call is not supported here: fsync does the same
            return
        # A write-out that failed (EIO, ENOSPC from a loop device over a full filesystem):
        # the kernel reports it to this descriptor once, and sync_file_range has just
        # consumed it, so the fsync that used to follow here returned 0 and the deploy
        # went on to write the head over a disk whose pages never reached it.
        raise PartitionError(f"{self.path}: writing out bytes {offset}-{offset + length - 1} "
                             f"failed: {os.strerror(code)}")

    def sync(self) -> None:
        try:
            os.fsync(self.fd)
        except OSError as exc:
            raise PartitionError(f"{self.path}: fsync failed: {exc.strerror}") from exc

    def drop_cache(self) -> None:
        """Flush, then evict this target's pages from the page cache, so that what is
        read next comes from the device itself (a read-back check must not read our own
        writes out of memory)."""
        self.sync()
        try:
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass    # advice only: a target that ignores it is read back all the same

    def fileobj(self) -> BinaryIO:
        """A seekable, unbuffered binary file on this target's descriptor (closing it
        leaves the target open), for code that wants ``seek``/``read``/``write``."""
        if self._file is None:
            self._file = io.FileIO(self.fd, "r+b", closefd=False)
        return self._file

    def close(self) -> None:
        """Close the descriptor; a file this deploy created and left empty (the image was
        refused) is removed, if its name still names it."""
        if self.fd < 0:
            return
        if self._made_in is not None:
            parent, name = self._made_in
            if os.fstat(self.fd).st_size == 0:
                unlink_if_still(parent, name, self.identity)
            os.close(parent)
            self._made_in = None
        os.close(self.fd)
        self.fd = -1

    def __enter__(self) -> "Target":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def identity_of(fd: int) -> tuple:
    """What a descriptor is open on: ("block", st_rdev, diskseq) for a block device (the
    disk sequence number tells a re-attached loop device or a re-plugged disk from the one
    before it at the same number; None where the kernel has none), ("file", st_dev,
    st_ino) otherwise."""
    st = os.fstat(fd)
    if not stat.S_ISBLK(st.st_mode):
        return identity_of_stat(st)
    try:
        seq = struct.unpack("Q", fcntl.ioctl(fd, BLKGETDISKSEQ, bytes(8)))[0]
    except OSError:
        seq = None
    return "block", st.st_rdev, seq


def identity_of_stat(st: os.stat_result) -> tuple:
    """As :func:`identity_of`, from a stat (no disk sequence number: the node is not open)."""
    if stat.S_ISBLK(st.st_mode):
        return "block", st.st_rdev, None
    return "file", st.st_dev, st.st_ino


def unlink_if_still(parent: int, name: str, identity: tuple) -> None:
    """Remove ``name`` from the directory open as ``parent`` (through it, never by a path)
    if it still names ``identity``, a file this process made: whatever was renamed over
    the name since is left alone. Best effort, as every clean-up after a failure."""
    try:
        if identity_of_stat(os.stat(name, dir_fd=parent, follow_symlinks=False)) == identity:
            os.unlink(name, dir_fd=parent)
    except OSError:
        pass


def describe_identity(identity: tuple) -> str:
    if identity[0] == "block":
        return f"block device {_number(identity[1])}"
    return f"file {identity[2]} on device {_number(identity[1])}"


def _number(rdev: int) -> str:
    return f"{os.major(rdev)}:{os.minor(rdev)}"


def _by_id(rdev: int) -> str | None:
    """The /dev/disk/by-id link (udev's) that names this device now, if any."""
    links = Path("/dev/disk/by-id")
    try:
        names = sorted(links.iterdir())
    except OSError:
        return None
    for link in names:
        try:
            st = os.stat(link)
        except OSError:
            continue
        if stat.S_ISBLK(st.st_mode) and st.st_rdev == rdev:
            return str(link)
    return None


def open_target(path: str | os.PathLike, *, sector_size: int | None = None,
                create: bool = False) -> Target:
    """Look ``path`` up once, open what it names for writing with dd semantics and lock it.

    A block device: opened O_EXCL, refused when busy (naming why); size and logical sector
    size come from the kernel (``sector_size`` must agree when given). A regular file: its
    length is the disk's size; ``sector_size`` defaults to 512. A missing path is refused
    unless ``create``: then an empty regular file is made (never under /dev), and removed
    again on close if it is still empty (a refused deploy leaves nothing behind). Either
    way the descriptor holds an exclusive flock until the target is closed."""
    path = os.fspath(path)
    created = None
    try:
        # The one lookup of the name: O_PATH opens nothing (no device is touched, a
        # character device's open has no side effect), the real open goes through it.
        handle = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        if not create:
            raise PartitionError(f"{path}: no such device or file (--create makes a disk image "
                                 "file there)") from exc
        parent, name = _create_in(path)
        try:
            fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o644, dir_fd=parent)
        except OSError as exc:
            os.close(parent)
            raise PartitionError(f"{path}: cannot create: {exc.strerror}") from exc
        created = (parent, name)
    except OSError as exc:
        raise PartitionError(f"{path}: cannot open: {exc.strerror}") from exc
    else:
        try:
            fd = _open_handle(handle, path)
        finally:
            os.close(handle)
    try:
        target = _target(path, fd, sector_size, created)
    except BaseException:
        os.close(fd)
        if created:
            os.close(created[0])
        raise
    try:
        _flock(target.fd, path)
        if target.is_block:
            reasons = busy_reasons_of(target.sysfs)
            if reasons:
                raise PartitionError(f"{path} is busy: {'; '.join(reasons)}")
    except BaseException:
        target.close()
        raise
    return target


def _create_in(path: str) -> tuple[int, str]:
    """The directory a new disk image file goes into, held (O_PATH), and the file's name in
    it: the file is made, and removed again if the deploy is refused, relative to that
    descriptor, so a parent name re-pointed meanwhile (a link flipped between two
    directories) can never make us remove a file of the same name elsewhere."""
    head, name = os.path.split(path)
    if not name:
        raise PartitionError(f"{path}: names a directory, not a disk image file")
    try:
        parent = os.open(head or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise PartitionError(f"{path}: cannot create: {exc.strerror}") from exc
    if os.path.join(os.readlink(f"/proc/self/fd/{parent}"), "").startswith("/dev/"):
        os.close(parent)
        raise PartitionError(f"{path}: no such device; a disk image file is never created "
                             "under /dev")
    return parent, name


def _open_handle(handle: int, path: str) -> int:
    """The write descriptor, opened through the O_PATH ``handle`` (not the name)."""
    st = os.fstat(handle)
    if not (stat.S_ISBLK(st.st_mode) or stat.S_ISREG(st.st_mode)):
        raise PartitionError(f"{path}: neither a block device nor a regular file")
    # O_EXCL without O_CREAT: exclusive on a block device, ignored for a file.
    try:
        return os.open(f"/proc/self/fd/{handle}", os.O_RDWR | os.O_EXCL | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise PartitionError(f"{path}: cannot open: {exc.strerror}") from exc
        error = exc
    reasons = busy_reasons_of(sys_dev(st.st_rdev))
    if not reasons:
        _refuse_if_locked(handle, path)    # another deploy's O_EXCL: its flock names it
    raise PartitionError(f"{path} is busy: " + ("; ".join(reasons) or "the kernel refuses exclusive "
                         "access (mounted, swap, or held by another program)")) from error


def _refuse_if_locked(handle: int, path: str) -> None:
    """Refuse as :func:`_flock` does if another deploy holds the node's flock (asked only
    to word a refusal: the lock taken here, if free, is let go at once)."""
    try:
        fd = os.open(f"/proc/self/fd/{handle}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        _flock(fd, path)
    finally:
        os.close(fd)


def _target(path: str, fd: int, sector_size: int | None, created: tuple[int, str] | None) -> Target:
    if stat.S_ISBLK(os.fstat(fd).st_mode):
        size, logical = block_geometry(fd)
        target = Target(path, fd, size, logical, is_block=True)
        target.expect_sector_size(sector_size)
        return target
    return Target(path, fd, os.fstat(fd).st_size, sector_size or 512, is_block=False,
                  sector_size_known=sector_size is not None, created=created)


@contextmanager
def held(device: "str | os.PathLike | Target", **open_options):
    """The target a function works on: a ``Target`` the caller holds (used as it is, left
    open), or a path, opened once here for the whole call (``open_options`` as for
    :func:`open_target`) and closed after it."""
    if isinstance(device, Target):
        yield device
        return
    with open_target(device, **open_options) as target:
        yield target


def _flock(fd: int, path: str) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        raise PartitionError(f"{path} is locked by another deploy writing to it: "
                             "refused") from exc


def refuse_same_file(image_stat: os.stat_result | None, image_name: str, target: Target) -> None:
    """The image must not be the target, a partition of it, or the file behind a loop
    device target (``--image X --device X`` once zeroed its own source)."""
    if image_stat is None:
        return
    same = identity_of_stat(image_stat) == identity_of_stat(os.fstat(target.fd))
    if target.is_block:
        sysdir = target.sysfs
        if stat.S_ISBLK(image_stat.st_mode) and sysdir is not None:
            number = f"{os.major(image_stat.st_rdev)}:{os.minor(image_stat.st_rdev)}"
            same = same or number in _dev_numbers(sysdir)
        backing = sysdir / "loop" / "backing_file" if sysdir is not None else None
        if backing is not None and backing.exists() and stat.S_ISREG(image_stat.st_mode):
            try:
                same = same or identity_of_stat(os.stat(backing.read_text().strip())) == identity_of_stat(image_stat)
            except OSError:
                pass
    if same:
        raise PartitionError(f"{image_name}: the image is {target.path} itself (or lies on "
                             "it): refused")


def disk_geometry(fp: BinaryIO) -> tuple[int, int | None]:
    """Size and logical sector size of a block device; an image file's size and None
    (its partition table tells the sector size)."""
    st = os.fstat(fp.fileno())
    if stat.S_ISBLK(st.st_mode):
        return block_geometry(fp.fileno())
    return st.st_size, None


def block_geometry(fd: int) -> tuple[int, int]:
    """A block device's size in bytes and its logical sector size, as the kernel says."""
    size = struct.unpack("Q", fcntl.ioctl(fd, BLKGETSIZE64, bytes(8)))[0]
    logical = struct.unpack("i", fcntl.ioctl(fd, BLKSSZGET, bytes(4)))[0]
    return size, logical


# -- busy check -----------------------------------------------------------------------

def sys_block(path: str) -> Path | None:
    """/sys/block/NAME for a whole-disk device node, or /sys/class/block/NAME for a
    partition, found by the device number the path names now; None when the node is gone
    or the kernel shows no such device. (A target's own is ``Target.sysfs``.)"""
    try:
        rdev = os.stat(path).st_rdev
    except OSError:
        return None
    return sys_dev(rdev)


def sys_dev(rdev: int) -> Path | None:
    """The sysfs directory of the block device numbered ``rdev``."""
    link = Path(f"/sys/dev/block/{_number(rdev)}")
    return link.resolve() if link.exists() else None


def _dev_numbers(sysdir: Path) -> dict[str, str]:
    """{"MAJ:MIN": name} for the device and each of its partitions."""
    found = {}
    for d in [sysdir, *[p.parent for p in sysdir.glob("*/partition")]]:
        try:
            found[(d / "dev").read_text().strip()] = d.name
        except OSError:
            pass
    return found


def busy_reasons(path: str | os.PathLike) -> list[str]:
    """Why the block device ``path`` is in use: mounted partitions, swap, holders.
    Empty when nothing is found (the O_EXCL open still has the last word)."""
    return busy_reasons_of(sys_block(os.fspath(path)))


def busy_reasons_of(sysdir: Path | None) -> list[str]:
    if sysdir is None:
        return []
    numbers = _dev_numbers(sysdir)

    def ours(node: str) -> str | None:
        try:
            rdev = os.stat(node).st_rdev
        except OSError:
            return None
        return numbers.get(f"{os.major(rdev)}:{os.minor(rdev)}")

    reasons = []
    for line in _read_lines("/proc/mounts"):
        fields = line.split()
        if len(fields) >= 2 and fields[0].startswith("/") and ours(fields[0]):
            reasons.append(f"/dev/{ours(fields[0])} is mounted on {_unescape(fields[1])}")
    for line in _read_lines("/proc/swaps")[1:]:
        fields = line.split()
        if fields and ours(_unescape(fields[0])):
            reasons.append(f"/dev/{ours(_unescape(fields[0]))} is in use as swap")
    for name in numbers.values():
        base = sysdir if name == sysdir.name else sysdir / name
        for holder in sorted((base / "holders").glob("*")):
            label = _dm_name(holder) or holder.name
            reasons.append(f"/dev/{name} is held by {label}")
    return reasons


def _dm_name(holder: Path) -> str | None:
    try:
        return "dm " + (holder / "dm" / "name").read_text().strip()
    except OSError:
        return None


def _read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def _unescape(field: str) -> str:
    """/proc/mounts writes spaces and tabs in paths as octal escapes."""
    return field.encode().decode("unicode_escape") if "\\" in field else field
