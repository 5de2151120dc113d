"""The guest's root filesystem as the injection steps see it: a handful of operations
that a host-mounted directory (loop, nbd, guestmount) and an unmounted ext2/3/4 image
(debugfs) both provide, so the steps are written once.

Every operation takes a :data:`~.guestpath.GuestPath` and must resolve it inside the
guest, one component at a time, failing with :class:`~.guestpath.GuestPathError` when a
component is a symbolic link: a link planted in an untrusted image is never followed.
"""

from __future__ import annotations

import stat as statmod
from abc import ABC, abstractmethod
from dataclasses import dataclass

from .guestpath import GuestPath, GuestPathError, show


# The most we read of one guest file. The files the steps read and rewrite (authorized_keys,
# etc/passwd, etc/shadow, rc.local) hold kilobytes; the guest is a stranger's image, and a
# sparse 8 GiB authorized_keys costs it nothing to make (issue 11).
MAX_GUEST_READ = 4 << 20


def check_read_size(path: GuestPath, size: int) -> None:
    """Refuse, before reading a byte, a guest file larger than we read."""
    if size > MAX_GUEST_READ:
        raise GuestPathError(f"guest path {show(path)}: {size} bytes, more than the {MAX_GUEST_READ} "
                             "bytes we read from a guest file; not read")


@dataclass(frozen=True)
class GuestStat:
    """What the steps need to know about an existing guest file (lstat, not stat)."""

    kind: str       # "file", "dir", "symlink" or "other"
    mode: int       # permission bits only (07777)
    uid: int
    gid: int
    size: int = 0   # bytes, as the guest's inode says

    @classmethod
    def from_mode(cls, st_mode: int, uid: int, gid: int, size: int = 0) -> "GuestStat":
        if statmod.S_ISREG(st_mode):
            kind = "file"
        elif statmod.S_ISDIR(st_mode):
            kind = "dir"
        elif statmod.S_ISLNK(st_mode):
            kind = "symlink"
        else:
            kind = "other"
        return cls(kind, statmod.S_IMODE(st_mode), uid, gid, size)


class GuestRoot(ABC):
    """The operations a handler's guest root provides. Paths are relative to the guest's
    root; parents must exist (see :meth:`makedirs`)."""

    @abstractmethod
    def lstat(self, path: GuestPath) -> GuestStat | None:
        """The entry itself (a symlink is reported as one), or None when absent.
        A symlink among the parents raises GuestPathError."""

    @abstractmethod
    def read(self, path: GuestPath) -> bytes:
        """A regular file's bytes; a symlink, or a file larger than MAX_GUEST_READ,
        raises GuestPathError (see :func:`check_read_size`)."""

    @abstractmethod
    def write(self, path: GuestPath, data: bytes, mode: int, uid: int, gid: int) -> None:
        """Create or replace a regular file with exactly these bytes, mode and owner."""

    @abstractmethod
    def mkdir(self, path: GuestPath, mode: int, uid: int, gid: int) -> None:
        """Create one directory (the parent exists)."""

    @abstractmethod
    def set_attrs(self, path: GuestPath, mode: int, uid: int, gid: int) -> None:
        """Set mode and owner of an existing file or directory (never through a link)."""

    # -- built from the operations above --------------------------------------------

    def exists(self, path: GuestPath) -> bool:
        return self.lstat(path) is not None

    def require(self, path: GuestPath, kind: str) -> GuestStat | None:
        """lstat, refusing anything but ``kind`` (a planted symlink most of all)."""
        st = self.lstat(path)
        if st is None or st.kind == kind:
            return st
        if st.kind == "symlink":
            raise GuestPathError(f"guest path {show(path)}: is a symbolic link; refusing to follow it")
        raise GuestPathError(f"guest path {show(path)}: is a {st.kind}, expected a {kind}")

    def makedirs(self, path: GuestPath, mode: int, uid: int, gid: int) -> None:
        """Create missing directories along ``path`` with the given mode and owner;
        existing ones are left as they are."""
        for depth in range(1, len(path) + 1):
            part = path[:depth]
            if self.require(part, "dir") is None:
                self.mkdir(part, mode, uid, gid)

    def append(self, path: GuestPath, data: bytes, mode: int, uid: int, gid: int) -> None:
        """Add bytes at the end of a file (created when absent). The file is rewritten
        whole, which both roots can do safely; guest files we append to are small."""
        old = self.read(path) if self.require(path, "file") else b""
        self.write(path, old + data, mode, uid, gid)
