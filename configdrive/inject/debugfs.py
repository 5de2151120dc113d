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

from ..errors import one_line
from .guestpath import GuestPath, GuestPathError, show
from .guestroot import MAX_GUEST_READ, GuestRoot, GuestStat, check_read_size
from .handler import Handler
from .target import Target, locate
from .tools import ToolError, run_tool, which

EXT_TYPES = ("ext2", "ext3", "ext4")
# debugfs prints this banner on stderr; any other stderr line is a command's complaint
# (debugfs itself exits 0 when a request fails).
_BANNER = re.compile(rb"^debugfs \S+ \(.*\)$")
# debugfs -f echoes each request on stdout before running it.
_ECHO = b"debugfs: "
# One ``ls -p`` record: /inode/mode/uid/gid/name/size/ (size empty for a directory),
# debugfs/ls.c list_dir_proc. A name holds neither '/' nor, once we checked, '\n'.
_RECORD = re.compile(rb"/(\d+)/([0-7]+)/(\d+)/(\d+)/([^/]*)/(\d*)/")
# debugfs -f reads its requests with fgets into a BUFSIZ (8192) buffer (debugfs/debugfs.c
# source_file): a longer line would be cut, and its tail run as a request of its own.
_MAX_REQUEST = 8191


def _quote(text: str) -> str:
    """``text`` as one argument that debugfs's command parser reads back unchanged.

    debugfs splits a request with the ss library's parser (e2fsprogs lib/ss/parse.c
    ss_parse): blanks separate words outside double quotes; inside them everything is
    literal, and a doubled quote stands for one quote. No backslash escapes exist, so
    quotes, spaces, tabs, '<', '-' and '#' in a name are all expressible. A line ends at
    '\n', and source_file also cuts it at '\r' (debugfs/debugfs.c): those, and NUL,
    cannot be passed, and are refused.

    The words this makes are paths or names only; what a command does with them is
    decided where the request is written (see :meth:`DebugfsRoot._where`)."""
    for ch in ("\n", "\r", "\0"):
        if ch in text:
            raise GuestPathError(f"guest path {one_line(text)}: a {_NAMES[ch]} in a name cannot be passed to debugfs")
    return '"' + text.replace('"', '""') + '"'


_NAMES = {"\n": "newline", "\r": "carriage return", "\0": "NUL"}


def _absolute(path: GuestPath) -> str:
    """The argument for a request that resolves a path with string_to_inode (cd, ls, cat,
    sif): always absolute. debugfs/util.c string_to_inode reads an argument of the form
    ``<N>`` as inode number N (``sif "<12>" mode 0`` changes inode 12, whatever file that
    is), and commands that take options (``ls``) read a leading '-' as one; an argument
    that starts with '/' is neither, and is looked up as a path (ext2fs_namei)."""
    return _quote("/" + "/".join(path))


class DebugfsRoot(GuestRoot):
    """An ext2/3/4 filesystem in a file (or at an offset in it), edited by debugfs."""

    def __init__(self, device: str, pass_fds: tuple[int, ...] = ()) -> None:
        self.device = device            # what debugfs opens, e.g. /dev/fd/5?offset=1048576
        self.pass_fds = pass_fds

    # -- running debugfs ------------------------------------------------------------

    def _debugfs(self, requests: list[str], write: bool = False) -> bytes:
        lines = [request.encode("utf-8", "surrogateescape") for request in requests]
        if any(len(line) > _MAX_REQUEST for line in lines):
            raise GuestPathError(f"debugfs {one_line(requests[0][:60])}...: request longer than "
                                 f"debugfs reads ({_MAX_REQUEST} bytes)")
        with tempfile.NamedTemporaryFile("wb", prefix="configdrive-debugfs-", suffix=".cmd") as cmdfile:
            cmdfile.write(b"\n".join(lines) + b"\n")
            cmdfile.flush()
            args = ["debugfs", *(["-w"] if write else []), "-f", cmdfile.name, self.device]
            proc = run_tool(*args, check=False, pass_fds=self.pass_fds, quiet=not write)
        complaints = [line for line in proc.stderr.splitlines() if line.strip() and not _BANNER.match(line)]
        if proc.returncode != 0 or complaints:
            why = complaints[0].decode(errors="replace").strip() if complaints else f"exit {proc.returncode}"
            raise ToolError(one_line(f"debugfs {requests[0]!s}: {why}"))
        return proc.stdout

    def _cat(self, path: GuestPath) -> bytes:
        # -R prints nothing but the file on stdout; -f would echo the request first.
        proc = run_tool("debugfs", "-R", f"cat {_absolute(path)}", self.device, check=False,
                        pass_fds=self.pass_fds, quiet=True, max_stdout=MAX_GUEST_READ)
        if len(proc.stdout) > MAX_GUEST_READ:
            raise GuestPathError(f"guest path {show(path)}: more than {MAX_GUEST_READ} bytes; not read")
        complaints = [line for line in proc.stderr.splitlines() if line.strip() and not _BANNER.match(line)]
        if proc.returncode != 0 or complaints:
            raise ToolError(f"debugfs cat {show(path)}: "
                            + (complaints[0].decode(errors="replace").strip() if complaints else "failed"))
        return proc.stdout

    def _entries(self, directory: GuestPath) -> dict[str, GuestStat]:
        """A directory's entries from ``ls -p``. The guest's names are a stranger's: a name
        holding a newline (or a '/', which a crafted image can hold) could print a line
        that looks like another entry, so every line must be one whole record, and a name
        listed twice refuses the directory."""
        out = self._debugfs([f"ls -p {_absolute(directory)}"])
        entries: dict[str, GuestStat] = {}
        for line in out.split(b"\n"):
            if not line or line.startswith(_ECHO):
                continue
            record = _RECORD.fullmatch(line)
            if record is None:
                raise GuestPathError(f"guest path {show(directory)}: holds a name debugfs cannot list "
                                     f"unambiguously ({one_line(line[:80].decode(errors='replace'))})")
            ino, mode, uid, gid, raw_name, size = record.groups()
            name = raw_name.decode("utf-8", "surrogateescape")
            if int(ino) == 0:
                continue                # an unused directory slot
            if name in entries:
                raise GuestPathError(f"guest path {show((*directory, name))}: listed twice in its directory")
            entries[name] = GuestStat.from_mode(int(mode, 8), int(uid), int(gid), int(size or 0))
        return entries

    # -- GuestRoot ------------------------------------------------------------------

    def lstat(self, path: GuestPath) -> GuestStat | None:
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
        st = self.require(path, "file")
        if st is None:
            raise GuestPathError(f"guest path {show(path)}: does not exist")
        check_read_size(path, st.size)
        return self._cat(path)

    def write(self, path: GuestPath, data: bytes, mode: int, uid: int, gid: int) -> None:
        existing = self.require(path, "file")
        with tempfile.NamedTemporaryFile(prefix="configdrive-inject-") as src:
            src.write(data)
            src.flush()
            # rm and write take the new name literally in the current directory (they
            # look it up with ext2fs_namei, never string_to_inode); sif gets the path.
            name = _quote(path[-1])
            requests = [f"cd {_absolute(path[:-1])}"]
            if existing:
                requests.append(f"rm {name}")
            requests += [f"write {_quote(src.name)} {name}",
                         *_attr_requests(path, stat.S_IFREG | mode, uid, gid)]
            self._debugfs(requests, write=True)

    def mkdir(self, path: GuestPath, mode: int, uid: int, gid: int) -> None:
        if self.require(path, "dir") is not None:     # also checks the parents
            raise GuestPathError(f"guest path {show(path)}: already exists")
        self._debugfs([f"cd {_absolute(path[:-1])}", f"mkdir {_quote(path[-1])}",
                       *_attr_requests(path, stat.S_IFDIR | mode, uid, gid)], write=True)

    def set_attrs(self, path: GuestPath, mode: int, uid: int, gid: int) -> None:
        st = self.lstat(path)
        if st is None or st.kind not in ("file", "dir"):
            raise GuestPathError(f"guest path {show(path)}: " + ("does not exist" if st is None else
                                 f"is a {'symbolic link' if st.kind == 'symlink' else st.kind}; refusing"))
        type_bits = stat.S_IFDIR if st.kind == "dir" else stat.S_IFREG
        self._debugfs(_attr_requests(path, type_bits | mode, uid, gid), write=True)


def _attr_requests(path: GuestPath, full_mode: int, uid: int, gid: int) -> list[str]:
    where = _absolute(path)
    return [f"sif {where} mode 0{full_mode:o}", f"sif {where} uid {uid}", f"sif {where} gid {gid}"]


class DebugfsHandler(Handler):
    """Edit ext2/3/4 in place with debugfs: no root, no mount."""

    name = "debugfs"

    def unusable(self, target: Target) -> str | None:
        if which("debugfs") is None:
            return "debugfs (e2fsprogs) is not installed"
        if target.cow:
            return f"copy-on-write image ({target.format}): debugfs edits raw images only"
        if not os.access(target.node, os.W_OK):
            return "image is not writable by this user"
        if not target.is_block:
            users = run_tool("losetup", "-j", target.node, check=False, quiet=True,
                             pass_fds=(target.fd,))
            attached = users.stdout.decode(errors="replace").split(":", 1)[0].strip()
            if attached:
                return f"image is in use (attached to {attached}); editing it unmounted could corrupt it"
        try:
            self.slice = locate(target, target.partition)
        except Exception as exc:  # a table we cannot read is a reason, not a crash
            return str(exc)
        if self.slice.fs_type not in EXT_TYPES:
            return (f"{self.slice.describe()} holds {self.slice.fs_type or 'no filesystem blkid knows'};"
                    " debugfs edits ext2/3/4 only")
        return None

    def attach(self, target: Target) -> DebugfsRoot:
        if self.slice is None:
            self.slice = locate(target, target.partition)
        # Hand debugfs our own descriptor as /dev/fd/N: the image checked above, never its
        # name again; a path containing '?' would otherwise be cut at the I/O manager's
        # option separator, and a block device is opened O_EXCL so a mounted filesystem is
        # refused rather than corrupted.
        fd = target.open_for_writing()
        self.cleanup.callback(os.close, fd)
        root = DebugfsRoot(f"/dev/fd/{fd}?offset={self.slice.offset}", pass_fds=(fd,))
        features = root._debugfs(["features"])
        if b"needs_recovery" in features:
            raise ToolError(f"{target.path}: {self.slice.describe()}: the ext4 journal needs recovery;"
                            " run e2fsck on it first (debugfs does not replay journals)")
        return root
