"""ISO 9660 config drives: write a tree as nova's genisoimage would, read any drive back.

The image carries three name trees over the same files: Rock Ridge (exact POSIX names,
what Linux uses), Joliet (exact names for Windows, at most 64 characters) and the plain
ISO 9660 primary tree with the names genisoimage gives under nova's flags (see
:mod:`configdrive.isonames`), because ironic and older readers look only at those.
It is built in-process with pycdlib; nothing is written to a temporary directory.

pycdlib is imported inside the functions: ``configdrive --help`` must not pay for it.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import struct
import threading
import time
from collections import defaultdict
from typing import BinaryIO, Iterator, Mapping

from .errors import ConfigDriveError
from .isonames import primary_names

BLOCK = 2048
# The primary volume identifier holds 32 bytes, Joliet's the same 32 bytes as UCS-2.
LABEL_MAX = 16
# The publisher identifier field of a volume descriptor (ECMA-119 8.4.20).
PUBLISHER_MAX = 128
JOLIET_NAME_MAX = 64            # characters, genisoimage without -joliet-long
# Characters Joliet forbids in a name; genisoimage writes "_" instead.
_JOLIET_FORBIDDEN = re.compile(r"[\x00-\x1f*/:;?\\]")
PUBLISHER = "configdrive"
APPLICATION = "configdrive (pycdlib)"
# Volume descriptors start at block 16; in the primary one, the volume space size
# (blocks, little-endian) and the logical block size.
_DESCRIPTORS_OFFSET = 16 * BLOCK
_MAX_DESCRIPTORS = 32
_READ_CHUNK = 1 << 20
_PRIMARY, _TERMINATOR = 1, 255
_PVD_SPACE_SIZE = struct.Struct("<I")
_PVD_BLOCK_SIZE = struct.Struct("<H")

# nova's dated directories, as the primary tree spells them (genisoimage turns "-" to "_").
_PRIMARY_DATED_DIR = re.compile(r"^(openstack|ec2)/(\d{4})_(\d{2})_(\d{2})(?=/|$)")
# The EC2 file names that genisoimage's "-" to "_" makes collide with nothing else.
_EC2_PRIMARY_FILES = {"meta_data.json": "meta-data.json", "user_data": "user-data"}

_CLOCK_LOCK = threading.Lock()
# What pycdlib's parser raises, besides its own exceptions, on corrupt records (found by
# flipping bytes of our images): short struct reads, undecodable names and numbers,
# extents that point nowhere, records missing their parent.
_PYCDLIB_PARSER_SLIPS = (struct.error, ValueError, KeyError, AttributeError)


# -- writing -------------------------------------------------------------------------

def write(tree: Mapping[str, bytes], out: BinaryIO, *, label: str = "config-2",
          epoch: int | None = None, publisher: str = PUBLISHER) -> None:
    """Write ``tree`` ({relative POSIX path: bytes}, files only) as an ISO 9660 image with
    Joliet and Rock Ridge 1.09 to ``out``, volume label ``label``, publisher identifier
    ``publisher`` (nova writes "OpenStack Nova X.Y.Z" there).

    With ``epoch`` (SOURCE_DATE_EPOCH) every date in the image is that instant, so equal
    inputs give byte-identical images; without it, the current time. Dates are UTC.
    (pycdlib writes an epoch of 0 into the volume descriptors as "date not specified".)
    Directories deeper than 8 levels are relocated as ``genisoimage -r`` does, but
    pycdlib calls the relocation directory ``RR_MOVED`` in the primary tree, not
    ``rr_moved``; Rock Ridge readers see the tree as given either way.
    """
    _check_label(label)
    if len(publisher.encode("utf-8")) > PUBLISHER_MAX:
        raise ConfigDriveError(f"publisher {publisher[:40]!r}...: longer than {PUBLISHER_MAX} bytes")
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
                app_ident_str=APPLICATION, joliet=3, rock_ridge="1.09")
        iso.interchange_level = 4
        for path in sorted(dirs, key=_depth_first):
            iso.add_directory(primary[path], rr_name=_basename(path), joliet_path=joliet[path])
        for path in files:
            data = tree[path]
            iso.add_fp(io.BytesIO(data), len(data), primary[path], rr_name=_basename(path),
                       joliet_path=joliet[path])
        # pycdlib seeks to absolute offsets: give it a stream that starts at 0.
        if out.seekable() and out.tell() == 0:
            iso.write_fp(out)
        else:
            buffer = io.BytesIO()
            iso.write_fp(buffer)
            out.write(buffer.getbuffer())
        iso.close()


def _check_label(label: str) -> None:
    try:
        raw = label.encode("ascii")
    except UnicodeEncodeError:
        raise ConfigDriveError(f"label {label!r}: ISO 9660 labels are ASCII only") from None
    if not raw or len(raw) > LABEL_MAX:
        raise ConfigDriveError(
            f"label {label!r}: an ISO 9660 label with Joliet has 1 to {LABEL_MAX} characters")


def _check_tree(tree: Mapping[str, bytes]) -> tuple[list[str], set[str]]:
    """The files in a stable order and every directory they need; refuses paths that
    cannot be a file on a drive."""
    files = sorted(tree)
    dirs: set[str] = set()
    for path in files:
        parts = path.split("/")
        if path.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\0" in path:
            raise ConfigDriveError(f"{path!r}: not a relative path to a file on the drive")
        if not isinstance(tree[path], (bytes, bytearray, memoryview)):
            raise ConfigDriveError(f"{path}: content must be bytes, not {type(tree[path]).__name__}")
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


# -- reading -------------------------------------------------------------------------

def read(fp: BinaryIO, source: str = "ISO image") -> dict[str, bytes]:
    """Every file of the ISO 9660 image at byte 0 of ``fp``: {relative path: bytes}.

    Names come from Rock Ridge when present, else Joliet, else the primary tree with the
    ``;1`` version and a final ``.`` removed. A primary-only image cannot say where
    genisoimage turned ``-`` into ``_``; the dated version directories
    (``openstack/2012_08_10``) and ec2's ``meta-data.json``/``user-data`` are mapped
    back, any other such name is returned as the image spells it.
    """
    from pycdlib import PyCdlib

    _check_not_truncated(fp, source)
    iso = PyCdlib()
    with _reading(source):
        iso.open_fp(fp)
        if iso.has_rock_ridge():
            kind = "rr_path"
        elif iso.has_joliet():
            kind = "joliet_path"
        else:
            kind = "iso_path"
        files = [where.rstrip("/") + "/" + name
                 for where, _dirs, names in iso.walk(**{kind: "/"}) for name in names]
    tree: dict[str, bytes] = {}
    for path in files:
        buffer = io.BytesIO()
        with _reading(source):
            iso.get_file_from_iso_fp(buffer, blocksize=_READ_CHUNK, **{kind: path})
        rel = path.lstrip("/")
        tree[_from_primary(rel) if kind == "iso_path" else rel] = buffer.getvalue()
    iso.close()
    return tree


@contextlib.contextmanager
def _reading(source: str) -> Iterator[None]:
    """Turn what pycdlib raises on a damaged image into one line naming ``source``."""
    from pycdlib.pycdlibexception import PyCdlibInvalidInput, PyCdlibInvalidISO
    try:
        yield
    except (PyCdlibInvalidISO, PyCdlibInvalidInput) as exc:
        raise ConfigDriveError(f"{source}: damaged ISO 9660 image ({exc})") from None
    except _PYCDLIB_PARSER_SLIPS as exc:
        raise ConfigDriveError(
            f"{source}: damaged ISO 9660 image (a directory record cannot be parsed: "
            f"{type(exc).__name__})") from None


def _check_not_truncated(fp: BinaryIO, source: str) -> None:
    """Refuse an image shorter than its primary volume descriptor says: pycdlib would
    hand back the missing part of a file as silently short data."""
    size = fp.seek(0, io.SEEK_END)
    pvd = None
    for index in range(_MAX_DESCRIPTORS):   # boot records may come first
        fp.seek(_DESCRIPTORS_OFFSET + index * BLOCK)
        desc = fp.read(BLOCK)
        if len(desc) < BLOCK or desc[1:6] != b"CD001" or desc[0] == _TERMINATOR:
            break
        if desc[0] == _PRIMARY:
            pvd = desc
            break
    fp.seek(0)
    if pvd is None:
        raise ConfigDriveError(
            f"{source}: not an ISO 9660 image (no primary volume descriptor from byte "
            f"{_DESCRIPTORS_OFFSET}; the file has {size} bytes)")
    declared = _PVD_SPACE_SIZE.unpack_from(pvd, 80)[0] * _PVD_BLOCK_SIZE.unpack_from(pvd, 128)[0]
    if size < declared:
        raise ConfigDriveError(
            f"{source}: truncated ISO 9660 image: {size} bytes, its volume descriptor "
            f"declares {declared}")


def _from_primary(path: str) -> str:
    """A primary-tree path as the producer most likely named it (see :func:`read`)."""
    parts = [name.split(";", 1)[0] for name in path.split("/")]
    parts[-1] = parts[-1][:-1] if parts[-1].endswith(".") else parts[-1]
    rel = _PRIMARY_DATED_DIR.sub(r"\1/\2-\3-\4", "/".join(parts))
    if rel.startswith("ec2/") and rel.count("/") == 2:
        head, _, name = rel.rpartition("/")
        rel = f"{head}/{_EC2_PRIMARY_FILES.get(name, name)}"
    return rel
