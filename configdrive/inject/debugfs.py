"""The rootless handler: e2fsprogs' debugfs edits an ext2/3/4 filesystem inside the image
file directly, so the guest filesystem is never mounted by the host kernel and no root is
needed. A partition is reached with the unix I/O manager's ``IMAGE?offset=N`` syntax, so
nothing is copied out and back.

debugfs resolves paths inside the image only (an absolute symlink there points into the
guest, not the host), but the steps must behave the same under every handler, so each
component is still checked with ``ls -p`` and a symlink is refused.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile

from .guestpath import GuestPath, GuestPathError, show
from .guestroot import GuestRoot, GuestStat
from .handler import Handler
from .target import Target, is_block_device, locate
from .tools import ToolError, run_tool, which

EXT_TYPES = ("ext2", "ext3", "ext4")
# debugfs prints this banner on stderr; any other stderr line is a command's complaint
# (debugfs itself exits 0 when a request fails).
_BANNER = re.compile(rb"^debugfs \S+ \(.*\)$")
# A name we pass inside "..." to debugfs's parser: quotes, backslashes and control
# characters cannot be expressed there.
_UNSAFE = re.compile(r'["\\\x00-\x1f\x7f]')


class DebugfsRoot(GuestRoot):
    """An ext2/3/4 filesystem in a file (or at an offset in it), edited by debugfs."""

    def __init__(self, device: str, pass_fds: tuple[int, ...] = ()) -> None:
        self.device = device            # what debugfs opens, e.g. /dev/fd/5?offset=1048576
        self.pass_fds = pass_fds

    # -- running debugfs ------------------------------------------------------------

    def _debugfs(self, requests: list[str], write: bool = False) -> bytes:
        with tempfile.NamedTemporaryFile("w", prefix="configdrive-debugfs-", suffix=".cmd") as cmdfile:
            cmdfile.write("\n".join(requests) + "\n")
            cmdfile.flush()
            args = ["debugfs", *(["-w"] if write else []), "-f", cmdfile.name, self.device]
            proc = run_tool(*args, check=False, pass_fds=self.pass_fds, quiet=not write)
        complaints = [line for line in proc.stderr.splitlines() if line.strip() and not _BANNER.match(line)]
        if proc.returncode != 0 or complaints:
            why = complaints[0].decode(errors="replace").strip() if complaints else f"exit {proc.returncode}"
            raise ToolError(f"debugfs {requests[0]!s}: {why}")
        return proc.stdout

    def _cat(self, path: GuestPath) -> bytes:
        # -R prints nothing but the file on stdout; -f would echo the request first.
        proc = run_tool("debugfs", "-R", f"cat {_q(path)}", self.device, check=False,
                        pass_fds=self.pass_fds, quiet=True)
        complaints = [line for line in proc.stderr.splitlines() if line.strip() and not _BANNER.match(line)]
        if proc.returncode != 0 or complaints:
            raise ToolError(f"debugfs cat {show(path)}: "
                            + (complaints[0].decode(errors="replace").strip() if complaints else "failed"))
        return proc.stdout

    def _entries(self, directory: GuestPath) -> dict[str, GuestStat]:
        """A directory's entries from ``ls -p``: ``/ino/mode/uid/gid/name/size/`` lines.
        Names cannot contain '/', so only a real record starts a line with '/'."""
        out = self._debugfs([f"ls -p {_q(directory)}"])
        entries = {}
        for line in out.split(b"\n"):
            fields = line.split(b"/")
            if len(fields) < 7 or fields[0] != b"" or not fields[1].isdigit():
                continue
            name = fields[5].decode("utf-8", "surrogateescape")
            entries[name] = GuestStat.from_mode(int(fields[2], 8), int(fields[3]), int(fields[4]))
        return entries

    # -- GuestRoot ------------------------------------------------------------------

    def lstat(self, path: GuestPath) -> GuestStat | None:
        for name in path:
            if _UNSAFE.search(name):
                raise GuestPathError(f"guest path {show(path)}: names with quotes, backslashes or "
                                     "control characters cannot be passed to debugfs")
        for depth in range(1, len(path)):
            st = self._entries(path[:depth - 1]).get(path[depth - 1])
            if st is None:
                raise GuestPathError(f"guest path {show(path[:depth])}: does not exist")
            if st.kind == "symlink":
                raise GuestPathError(f"guest path {show(path[:depth])}: is a symbolic link; refusing to follow it")
            if st.kind != "dir":
                raise GuestPathError(f"guest path {show(path[:depth])}: is not a directory")
        return self._entries(path[:-1]).get(path[-1])

    def read(self, path: GuestPath) -> bytes:
        if self.require(path, "file") is None:
            raise GuestPathError(f"guest path {show(path)}: does not exist")
        return self._cat(path)

    def write(self, path: GuestPath, data: bytes, mode: int, uid: int, gid: int) -> None:
        existing = self.require(path, "file")
        with tempfile.NamedTemporaryFile(prefix="configdrive-inject-") as src:
            src.write(data)
            src.flush()
            name = _q((path[-1],), absolute=False)
            requests = [f"cd {_q(path[:-1])}"]
            if existing:
                requests.append(f"rm {name}")
            requests += [f"write {src.name} {name}", *_attr_requests(name, stat.S_IFREG | mode, uid, gid)]
            self._debugfs(requests, write=True)

    def mkdir(self, path: GuestPath, mode: int, uid: int, gid: int) -> None:
        name = _q((path[-1],), absolute=False)
        if self.require(path, "dir") is not None:     # also checks the parents
            raise GuestPathError(f"guest path {show(path)}: already exists")
        self._debugfs([f"cd {_q(path[:-1])}", f"mkdir {name}",
                       *_attr_requests(name, stat.S_IFDIR | mode, uid, gid)], write=True)

    def set_attrs(self, path: GuestPath, mode: int, uid: int, gid: int) -> None:
        st = self.lstat(path)
        if st is None or st.kind not in ("file", "dir"):
            raise GuestPathError(f"guest path {show(path)}: " + ("does not exist" if st is None else
                                 f"is a {'symbolic link' if st.kind == 'symlink' else st.kind}; refusing"))
        type_bits = stat.S_IFDIR if st.kind == "dir" else stat.S_IFREG
        name = _q((path[-1],), absolute=False)
        self._debugfs([f"cd {_q(path[:-1])}", *_attr_requests(name, type_bits | mode, uid, gid)], write=True)


def _q(path: GuestPath, absolute: bool = True) -> str:
    return '"' + ("/" if absolute else "") + "/".join(path) + '"'


def _attr_requests(name: str, full_mode: int, uid: int, gid: int) -> list[str]:
    return [f"sif {name} mode 0{full_mode:o}", f"sif {name} uid {uid}", f"sif {name} gid {gid}"]


class DebugfsHandler(Handler):
    """Edit ext2/3/4 in place with debugfs: no root, no mount."""

    name = "debugfs"

    def unusable(self, target: Target) -> str | None:
        if which("debugfs") is None:
            return "debugfs (e2fsprogs) is not installed"
        if target.cow:
            return f"copy-on-write image ({target.format}): debugfs edits raw images only"
        if not os.access(target.path, os.W_OK):
            return "image is not writable by this user"
        if not is_block_device(target.path):
            users = run_tool("losetup", "-j", os.path.abspath(target.path), check=False, quiet=True)
            attached = users.stdout.decode(errors="replace").split(":", 1)[0].strip()
            if attached:
                return f"image is in use (attached to {attached}); editing it unmounted could corrupt it"
        try:
            self.slice = locate(target.path, target.partition)
        except Exception as exc:  # a table we cannot read is a reason, not a crash
            return str(exc)
        if self.slice.fs_type not in EXT_TYPES:
            return (f"{self.slice.describe()} holds {self.slice.fs_type or 'no filesystem blkid knows'};"
                    " debugfs edits ext2/3/4 only")
        return None

    def attach(self, target: Target) -> DebugfsRoot:
        if self.slice is None:
            self.slice = locate(target.path, target.partition)
        # Hand debugfs our own descriptor as /dev/fd/N: a path containing '?' would
        # otherwise be cut at the I/O manager's option separator, and a block device is
        # opened O_EXCL so a mounted filesystem is refused rather than corrupted.
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_EXCL if is_block_device(target.path) else 0)
        try:
            fd = os.open(target.path, flags)
        except OSError as exc:
            raise ToolError(f"{target.path}: cannot open for writing ({exc.strerror})") from None
        self.cleanup.callback(os.close, fd)
        root = DebugfsRoot(f"/dev/fd/{fd}?offset={self.slice.offset}", pass_fds=(fd,))
        features = root._debugfs(["features"])
        if b"needs_recovery" in features:
            raise ToolError(f"{target.path}: {self.slice.describe()}: the ext4 journal needs recovery;"
                            " run e2fsck on it first (debugfs does not replay journals)")
        return root
