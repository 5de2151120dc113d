"""Files under a directory reached through descriptors: each name opened relative to its
parent's descriptor with O_NOFOLLOW and judged by fstat of what was opened, so that a name
swapped for a symlink between a look and an open can never send a read or a write to the
link's target.

Checking a name with lstat and then opening it by name is a race anyone who can write the
directory wins: an entry flipping between a regular file and a link to a host file put the
host file into configdrive-mkisofs's ISO within 150 tries. Every caller that reads files
out of a directory (configdrive-mkisofs, ``build --from DIR``, ``--file``, a mounted guest
root) or writes them into one (``extract``) goes through here.

The directory a caller names itself (the top) is opened as given, links included: it is the
caller's own choice. Below it, nothing is followed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass
from typing import Iterator, Sequence

from ..errors import ConfigDriveError
from .window import Window

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO put where a file was must not hang the open; O_NOCTTY: a terminal
# put there must not become ours. Neither changes how a regular file reads.
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
# O_EXCL: the name is made here, so it cannot already be a link or a hard link to a file
# elsewhere (O_TRUNC on an existing name would write into whatever inode it names).
CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

_KINDS = ((stat.S_ISLNK, "is a symbolic link"), (stat.S_ISFIFO, "is a FIFO"),
          (stat.S_ISSOCK, "is a socket"), (stat.S_ISCHR, "is a character device"),
          (stat.S_ISBLK, "is a block device"), (stat.S_ISDIR, "is a directory"))


class Refused(Exception):
    """A name under the top that cannot be used: ``parts`` is its path below the top,
    ``why`` a phrase such as "is a symbolic link"; ``link`` says whether that is the reason."""

    def __init__(self, parts: Sequence[str], why: str, link: bool = False):
        super().__init__(f"{'/'.join(parts)}: {why}")
        self.parts, self.why, self.link = tuple(parts), why, link


def what_it_is(mode: int) -> str:
    """"is a FIFO", "is a symbolic link", ... for anything that is not a regular file."""
    return next((why for test, why in _KINDS if test(mode)), "is not a regular file")


def _refusal(parts: Sequence[str], exc: OSError, dir_fd: int, want: str) -> Refused:
    """Why opening ``parts[-1]`` under ``dir_fd`` failed, in words. The lstat here only
    words the message; the open that failed already decided."""
    if exc.errno == errno.ELOOP:      # O_NOFOLLOW met a link, whatever is there now
        return Refused(parts, "is a symbolic link", link=True)
    if exc.errno in (errno.ENOTDIR, errno.ENXIO):
        with contextlib.suppress(OSError):
            mode = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False).st_mode
            if not stat.S_ISDIR(mode) and not stat.S_ISREG(mode):
                return Refused(parts, what_it_is(mode), link=stat.S_ISLNK(mode))
        return Refused(parts, f"is not {want}")
    if exc.errno == errno.ENOENT:
        return Refused(parts, "does not exist")
    return Refused(parts, exc.strerror or str(exc))


def open_top(path: str | os.PathLike, *, create: bool = False) -> int:
    """A descriptor of the directory the caller named (made first with ``create``)."""
    if create:
        os.makedirs(path, exist_ok=True)
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def open_dirs(top: int, parts: Sequence[str], *, create: bool = False) -> int:
    """A new descriptor of ``top/parts[0]/.../parts[-1]``, each directory opened relative to
    the one before without following a link (made first, mode 0755, with ``create``).
    Refused names the first component that is not a directory."""
    fd = os.dup(top)
    try:
        for depth, name in enumerate(parts, 1):
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o755, dir_fd=fd)
            try:
                child = os.open(name, DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise _refusal(parts[:depth], exc, fd, "a directory") from exc
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_file(parts: Sequence[str], dir_fd: int) -> tuple[int, os.stat_result]:
    """``parts[-1]`` under ``dir_fd`` open for reading, and fstat of that very descriptor;
    Refused unless it is a regular file."""
    try:
        fd = os.open(parts[-1], READ_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        raise _refusal(parts, exc, dir_fd, "a regular file") from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise Refused(parts, what_it_is(st.st_mode))
    return fd, st


def open_regular(path: str, below: int = 0) -> tuple[int, os.stat_result]:
    """A file the caller named (``--file``'s LOCAL_FILE): the directory ``below`` levels
    above it as given; the directories below that and the file itself without following a
    link, and only if fstat says it is a regular file."""
    head, name = os.path.split(path)
    if not name:
        raise Refused([path], "is a directory")
    middle: list[str] = []
    for _ in range(below):
        head, part = os.path.split(head)
        middle.insert(0, part)
    top = open_top(head or ".")
    try:
        where = open_dirs(top, middle) if middle else top
    finally:
        if middle:
            os.close(top)
    try:
        return open_file([*middle, name], where)
    finally:
        os.close(where)


def create_file(top: int, parts: Sequence[str], mode: int = 0o644) -> int:
    """A new file at ``top/parts`` open for writing, its directories made as needed, no
    component followed through a link. An existing regular file of that name is replaced
    by a new one (its name removed, never its inode written), so a hard link planted there
    to a file elsewhere leaves that file as it was."""
    parent = open_dirs(top, parts[:-1], create=True)
    try:
        try:
            return os.open(parts[-1], CREATE_FLAGS, mode, dir_fd=parent)
        except FileExistsError:
            st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                raise Refused(parts, what_it_is(st.st_mode), link=stat.S_ISLNK(st.st_mode)) from None
            os.unlink(parts[-1], dir_fd=parent)
            # O_EXCL again: whatever was put there since the unlink is refused, not written
            return os.open(parts[-1], CREATE_FLAGS, mode, dir_fd=parent)
    except Refused:
        raise
    except OSError as exc:
        raise _refusal(parts, exc, parent, "a regular file") from exc
    finally:
        os.close(parent)


@dataclass
class Entry:
    """One thing found by :func:`walk`: a regular file (``fd`` open for reading, ``st`` its
    fstat; the caller closes ``fd``) or, with ``fd`` None, what else it is (``why``)."""

    rel: str
    fd: int | None
    st: os.stat_result | None = None
    why: str = ""


def walk(top: str | os.PathLike) -> Iterator[Entry]:
    """Everything under the directory ``top``, depth first in sorted order: each regular
    file open, and anything else (a link, FIFO, device, socket, empty directory) named with
    what it is. Nothing is followed; directories are read through their own descriptors,
    one level at a time on a stack (no recursion, however deep)."""
    try:
        root = open_top(top)
    except OSError as exc:
        raise Refused((), exc.strerror or str(exc)) from exc       # () : the top itself
    stack: list[tuple[int, tuple[str, ...]]] = [(root, ())]
    try:
        while stack:
            dir_fd, parts = stack.pop()
            subdirs: list[tuple[int, tuple[str, ...]]] = []
            try:
                names = sorted(os.listdir(dir_fd))
                if not names and parts:
                    yield Entry("/".join(parts), None, why="is an empty directory")
                for name in names:
                    entry_parts = (*parts, name)
                    rel = "/".join(entry_parts)
                    if not _is_utf8(name):
                        # ISO 9660 (Rock Ridge, Joliet) and FAT names are written as text;
                        # such a name could only be changed or lost on the way
                        raise Refused(entry_parts, "the name is not UTF-8")
                    # lstat only spares opening a device or FIFO at all; what is used is
                    # decided by fstat of the descriptor opened below
                    try:
                        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
                    except OSError as exc:
                        raise _refusal(entry_parts, exc, dir_fd, "a regular file") from exc
                    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                        yield Entry(rel, None, why=what_it_is(mode))
                        continue
                    try:
                        fd = os.open(name, READ_FLAGS, dir_fd=dir_fd)
                    except OSError as exc:
                        refusal = _refusal(entry_parts, exc, dir_fd, "a regular file")
                        if not refusal.link:
                            raise refusal from exc
                        yield Entry(rel, None, why=refusal.why)   # became a link since
                        continue
                    st = os.fstat(fd)
                    if stat.S_ISDIR(st.st_mode):
                        subdirs.append((fd, entry_parts))
                    elif stat.S_ISREG(st.st_mode):
                        yield Entry(rel, fd, st)
                    else:
                        os.close(fd)
                        yield Entry(rel, None, why=what_it_is(st.st_mode))
            except BaseException:
                for fd, _ in subdirs:
                    os.close(fd)
                raise
            finally:
                os.close(dir_fd)
            stack.extend(reversed(subdirs))
    finally:
        for fd, _ in stack:
            os.close(fd)


def _is_utf8(name: str) -> bool:
    """False for a name whose bytes are not UTF-8 (os.listdir keeps them as surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class HeldFile(Window):
    """A regular file's bytes read through the descriptor that was judged, as a file object
    for pycdlib's ``add_fp``: exactly ``size`` bytes (fstat's when opened), read with pread
    so no offset is shared. There is no ``fileno``: pycdlib would take the file's mode from
    it, and the image's Rock Ridge modes are genisoimage -r's, not the source's."""

    mode = "rb"   # what pycdlib looks for before it takes a file object

    def __init__(self, fd: int, size: int, name: str):
        super().__init__(size)
        self.fd, self.name = fd, name

    def read_at(self, pos: int, n: int) -> bytes:
        # all n bytes or an error: pycdlib takes a short read for the end of the file and
        # pads the rest silently, so the image would hold bytes that were never in it
        pieces = []
        while n:
            data = os.pread(self.fd, n, pos)
            if not data:
                raise ConfigDriveError(f"{self.name}: {self.size} bytes when opened, ended at byte "
                                       f"{pos} while being read (changed during the build)")
            pieces.append(data)
            pos += len(data)
            n -= len(data)
        return b"".join(pieces)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
