"""Writing a drive's file tree as an ISO 9660 image, as nova's genisoimage would.

The image carries three name trees over the same files: Rock Ridge (exact POSIX names,
what Linux uses), Joliet (exact names for Windows, at most 64 characters) and the plain
ISO 9660 primary tree with the names genisoimage gives under nova's flags (see
:mod:`configdrive.formats.isonames`), because ironic and older readers look only at those.
It is built in-process with pycdlib; nothing is written to a temporary directory.
Reading an image back is configdrive/formats/isoreader.py.

pycdlib is imported inside the functions: ``configdrive --help`` must not pay for it.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import threading
import time
from collections import defaultdict
from typing import BinaryIO, Iterator, Mapping

from ..files.dirfd import HeldFile
from ..errors import ConfigDriveError
from .isonames import primary_names

# The primary volume identifier holds 32 bytes, Joliet's the same 32 bytes as UCS-2.
LABEL_MAX = 16
# The publisher identifier field of a volume descriptor (ECMA-119 8.4.20).
PUBLISHER_MAX = 128
JOLIET_NAME_MAX = 64            # characters, genisoimage without -joliet-long
# Characters Joliet forbids in a name; genisoimage writes "_" instead.
_JOLIET_FORBIDDEN = re.compile(r"[\x00-\x1f*/:;?\\]")
PUBLISHER = "configdrive"
APPLICATION = "configdrive (pycdlib)"
_CLOCK_LOCK = threading.Lock()
# pycdlib copies file data in pieces of this size: 1 MiB keeps a multi-GiB file's copy
# to a few thousand calls while memory stays one piece.
WRITE_BLOCK = 1 << 20


# -- writing -------------------------------------------------------------------------

def write(tree: Mapping[str, bytes | HeldFile], out: BinaryIO, *, label: str = "config-2",
          epoch: int | None = None, publisher: str = PUBLISHER, application: str = APPLICATION) -> None:
    """Write ``tree`` ({relative POSIX path: bytes or a HeldFile}, files only) as an ISO 9660 image with
    Joliet and Rock Ridge 1.09 to ``out``, volume label ``label``, publisher identifier
    ``publisher`` (nova writes "OpenStack Nova X.Y.Z" there) and application identifier
    ``application``.

    With ``epoch`` (SOURCE_DATE_EPOCH) every date in the image is that instant, so equal
    inputs give byte-identical images; without it, the current time. Dates are UTC.
    (pycdlib writes an epoch of 0 into the volume descriptors as "date not specified".)
    Directories deeper than 8 levels are relocated as ``genisoimage -r`` does, but
    pycdlib calls the relocation directory ``RR_MOVED`` in the primary tree, not
    ``rr_moved``; Rock Ridge readers see the tree as given either way.
    """
    _check_label(label)
    if len(publisher.encode("utf-8", "surrogateescape")) > PUBLISHER_MAX:
        raise ConfigDriveError(f"publisher {publisher[:40]!r}...: longer than {PUBLISHER_MAX} bytes")
    if not publisher.isascii():
        # the primary volume descriptor holds it in ASCII (pycdlib encodes it so and fails)
        raise ConfigDriveError(f"publisher {publisher!r}: ISO 9660 writes the publisher in ASCII only")
    files, dirs = _check_tree(tree)
    primary = _primary_paths(files, dirs)
    joliet = _joliet_paths(files, dirs)

    import pycdlib

    now = int(time.time()) if epoch is None else epoch
    with _pycdlib_clock(now):
        iso = pycdlib.PyCdlib()
        # Level 3: pycdlib writes an extra ISO 9660:1999 descriptor at level 4, which
        # genisoimage does not; level 4 is only needed to let lowercase and "." pass
        # its name checks, so it is raised after the descriptors exist.
        iso.new(interchange_level=3, vol_ident=label, pub_ident_str=publisher,
                app_ident_str=application, joliet=3, rock_ridge="1.09")
        iso.interchange_level = 4
        for path in sorted(dirs, key=_depth_first):
            iso.add_directory(primary[path], rr_name=_basename(path), joliet_path=joliet[path])
        for path in files:
            data = tree[path]
            # a HeldFile is read while the image is written, in write_fp's blocks
            fp, size = (data, data.size) if isinstance(data, HeldFile) else (io.BytesIO(data), len(data))
            iso.add_fp(fp, size, primary[path], rr_name=_basename(path), joliet_path=joliet[path])
        # pycdlib seeks to absolute offsets: give it a stream that starts at 0.
        if out.seekable() and out.tell() == 0:
            iso.write_fp(out, blocksize=WRITE_BLOCK)
        else:
            buffer = io.BytesIO()
            iso.write_fp(buffer, blocksize=WRITE_BLOCK)
            out.write(buffer.getbuffer())
        iso.close()


def _check_label(label: str) -> None:
    try:
        raw = label.encode("ascii")
    except UnicodeEncodeError as exc:
        raise ConfigDriveError(f"label {label!r}: ISO 9660 labels are ASCII only") from exc
    if not raw or len(raw) > LABEL_MAX:
        raise ConfigDriveError(
            f"label {label!r}: an ISO 9660 label with Joliet has 1 to {LABEL_MAX} characters")


def _check_tree(tree: Mapping[str, bytes | HeldFile]) -> tuple[list[str], set[str]]:
    """The files in a stable order and every directory they need; refuses paths that
    cannot be a file on a drive."""
    files = sorted(tree)
    dirs: set[str] = set()
    for path in files:
        parts = path.split("/")
        if path.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\0" in path:
            raise ConfigDriveError(f"{path!r}: not a relative path to a file on the drive")
        if not isinstance(tree[path], (bytes, bytearray, memoryview, HeldFile)):
            raise ConfigDriveError(f"{path}: content must be bytes or a HeldFile, not {type(tree[path]).__name__}")
        if len(path.encode("utf-8", "surrogateescape")) > 1023:
            raise ConfigDriveError(f"{path[:60]}...: path longer than 1023 bytes")
        for name in parts:
            if len(name.encode("utf-8", "surrogateescape")) > 255:
                raise ConfigDriveError(f"{path}: name {name[:40]!r}... is longer than 255 bytes")
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
    clash = dirs.intersection(files)
    if clash:
        raise ConfigDriveError(f"{min(clash)}: is both a file and a directory")
    return files, dirs


def _children(files: list[str], dirs: set[str]) -> dict[str, list[tuple[str, bool]]]:
    """{directory ("" for the root): [(name, is_dir)]}."""
    children: dict[str, list[tuple[str, bool]]] = defaultdict(list)
    for path, is_dir in [(d, True) for d in dirs] + [(f, False) for f in files]:
        parent, _, name = path.rpartition("/")
        children[parent].append((name, is_dir))
    return children


def _primary_paths(files: list[str], dirs: set[str]) -> dict[str, str]:
    """{tree path: absolute primary path} with genisoimage's names, unique per directory."""
    names = {parent: primary_names(entries) for parent, entries in _children(files, dirs).items()}
    result: dict[str, str] = {}
    for path in sorted(dirs, key=_depth_first) + files:
        parent, _, name = path.rpartition("/")
        result[path] = (result[parent] if parent else "") + "/" + names[parent][name]
    return result


def _joliet_paths(files: list[str], dirs: set[str]) -> dict[str, str]:
    """{tree path: absolute Joliet path}: the exact name, as genisoimage writes it (the
    characters Joliet forbids become "_", names are cut at 64 characters)."""
    result: dict[str, str] = {}
    seen: dict[str, str] = {}
    for path in sorted(dirs, key=_depth_first) + files:
        parent, _, name = path.rpartition("/")
        joliet_name = _JOLIET_FORBIDDEN.sub("_", _joliet_prefix(name))
        full = (result[parent] if parent else "") + "/" + joliet_name
        if full in seen:
            raise ConfigDriveError(
                f"{path}: its Joliet name {full!r} is the same as that of {seen[full]} "
                f"(Joliet keeps {JOLIET_NAME_MAX} characters)")
        seen[full] = path
        result[path] = full
    return result


def _joliet_prefix(name: str) -> str:
    """The longest prefix of ``name`` that Joliet can take. genisoimage keeps 64 UCS-2
    characters; pycdlib counts the 64 in UTF-8 bytes, so a long name with non-ASCII
    characters is cut a little shorter than genisoimage would cut it."""
    used = 0
    for index, char in enumerate(name):
        used += len(char.encode("utf-8", "surrogateescape"))
        if used > JOLIET_NAME_MAX:
            return name[:index]
    return name


def _depth_first(path: str) -> tuple[int, str]:
    """Parents before children (pycdlib needs the parent to exist)."""
    return path.count("/"), path


def _basename(path: str) -> str:
    return path.rpartition("/")[2]


class _FrozenTime:
    """The part of the ``time`` module pycdlib uses, with the clock stopped at one
    instant and local time being UTC."""

    def __init__(self, now: int):
        self._now = now

    def time(self) -> float:
        return float(self._now)

    def localtime(self, secs: float | None = None) -> time.struct_time:
        return time.gmtime(self._now if secs is None else secs)

    def __getattr__(self, name: str):
        return getattr(time, name)


@contextlib.contextmanager
def _pycdlib_clock(now: int) -> Iterator[None]:
    """Make pycdlib stamp every date with ``now``, in UTC.

    pycdlib takes no timestamp argument: it calls ``time.time()`` when it creates each
    directory record, Rock Ridge TF entry and volume descriptor, and again for the volume
    modification date while writing, and renders them in local time. Reproducible
    builds (SOURCE_DATE_EPOCH) need one fixed instant and no dependence on TZ, so for the
    duration of a build the modules that stamp dates see a stopped clock.
    """
    modules = [importlib.import_module(f"pycdlib.{name}") for name in ("pycdlib", "headervd", "dates")]
    frozen = _FrozenTime(now)
    with _CLOCK_LOCK:
        saved = [module.time for module in modules]
        for module in modules:
            module.time = frozen
        try:
            yield
        finally:
            for module, original in zip(modules, saved):
                module.time = original
