"""A guest root that the host has mounted (loop, nbd, guestmount): every path is walked
with ``openat``-style calls from a descriptor of the mount's top, one name at a time,
with O_NOFOLLOW, so a symlink planted in the guest (``root/.ssh -> /etc``, or
``../../../host``) can never send a write onto the host."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets

from ..files.dirfd import CREATE_FLAGS, DIR_FLAGS as _DIR_FLAGS, READ_FLAGS, Refused, open_dirs, open_file
from .guestpath import GuestPath, GuestPathError, show
from .guestroot import MAX_GUEST_READ, GuestRoot, GuestStat, check_read_size


class HostDirRoot(GuestRoot):
    """The guest filesystem mounted at ``top`` on the host."""

    def __init__(self, top: str) -> None:
        self.top = top

    @contextlib.contextmanager
    def _parent(self, path: GuestPath):
        """A descriptor of ``path``'s parent directory, reached without following links."""
        top = os.open(self.top, _DIR_FLAGS)
        try:
            fd = open_dirs(top, path[:-1])
        except Refused as exc:
            raise self._refuse(exc) from exc
        finally:
            os.close(top)
        try:
            yield fd
        finally:
            os.close(fd)

    @staticmethod
    def _refuse(exc: Refused) -> GuestPathError:
        """The message for a component that could not be opened, and why."""
        if exc.link:
            return GuestPathError(f"guest path {show(exc.parts)}: is a symbolic link; refusing to follow it")
        return GuestPathError(f"guest path {show(exc.parts)}: {exc.why}")

    def lstat(self, path: GuestPath) -> GuestStat | None:
        with self._parent(path) as pfd:
            try:
                st = os.stat(path[-1], dir_fd=pfd, follow_symlinks=False)
            except FileNotFoundError:
                return None
        return GuestStat.from_mode(st.st_mode, st.st_uid, st.st_gid, st.st_size)

    def read(self, path: GuestPath) -> bytes:
        self.require(path, "file")
        with self._parent(path) as pfd:
            try:
                fd, st = open_file(path, pfd)     # judged by fstat of what was opened
            except Refused as exc:
                raise self._refuse(exc) from exc
            with os.fdopen(fd, "rb") as f:
                check_read_size(path, st.st_size)
                # at most one byte past the cap: a FUSE filesystem may report any size
                data = f.read(MAX_GUEST_READ + 1)
        check_read_size(path, len(data))
        return data

    def write(self, path: GuestPath, data: bytes, mode: int, uid: int, gid: int) -> None:
        # Write a new file beside the target and rename it over: a reader of etc/shadow
        # never sees half a file, and rename replaces a name, never what it points to.
        self.require(path, "file")
        with self._parent(path) as pfd:
            tmp = f".{path[-1]}.configdrive-{secrets.token_hex(4)}"
            fd = os.open(tmp, CREATE_FLAGS, 0o600, dir_fd=pfd)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    os.fchown(f.fileno(), uid, gid)
                    os.fchmod(f.fileno(), mode)   # after chown: chown clears set-id bits
                    f.flush()
                    os.fsync(f.fileno())
                os.rename(tmp, path[-1], src_dir_fd=pfd, dst_dir_fd=pfd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=pfd)
                raise

    def mkdir(self, path: GuestPath, mode: int, uid: int, gid: int) -> None:
        if self.require(path, "dir") is not None:
            raise GuestPathError(f"guest path {show(path)}: already exists")
        with self._parent(path) as pfd:
            os.mkdir(path[-1], 0o700, dir_fd=pfd)
        self.set_attrs(path, mode, uid, gid)

    def set_attrs(self, path: GuestPath, mode: int, uid: int, gid: int) -> None:
        with self._parent(path) as pfd:
            fd = self._open_no_follow(pfd, path)
            try:
                os.fchown(fd, uid, gid)
                os.fchmod(fd, mode)
            finally:
                os.close(fd)

    def _open_no_follow(self, pfd: int, path: GuestPath) -> int:
        """The last component (a file or a directory), opened without following a link.
        O_NONBLOCK: a FIFO planted where a file should be must not hang the injection."""
        try:
            return os.open(path[-1], READ_FLAGS, dir_fd=pfd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self._refuse(Refused(path, "is a symbolic link", link=True)) from exc
            raise GuestPathError(f"guest path {show(path)}: {exc.strerror}") from exc
