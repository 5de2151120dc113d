"""Plain ISO 9660 names exactly as genisoimage writes them with nova's flags.

nova runs ``genisoimage -ldots -allow-lowercase -allow-multidot -l -J -r``; ironic and
other readers that look at the primary tree (not Rock Ridge, not Joliet) expect the names
that command produces, e.g. ``openstack/2012_08_10/meta_data.json;1`` or ``user_data.;1``.
The rules below restate genisoimage's behaviour (checked against the real tool by
tests/test_iso.py on awkward names), in the order it applies them:

- a name is handled as bytes (UTF-8 of the Rock Ridge name); letters, digits and ``_``
  are kept (lowercase too: -allow-lowercase), every other byte but ``.`` becomes ``_``
  (that is how ``-`` turns into ``_``; a non-ASCII character becomes one ``_`` per byte);
- every ``.`` is kept (-allow-multidot, -ldots); the last one, or the one before it when
  the last is final or followed by ``~``, starts the extension;
- at most 31 characters (-l); for a file the extension is kept whole and the stem is cut,
  unless the extension is longer than 16 characters, then the stem keeps 15 and the
  extension is cut at the 31 character limit;
- a file without an extension gets a final ``.`` (dropping its 31st character to make
  room), then every file gets the version ``;1``; directories get neither;
- names that then collide inside one directory are made unique as genisoimage does:
  the stem is shortened to leave room for three base-36 digits (``000``, ``001``, ...)
  put before the extension.
"""

from __future__ import annotations

import string
from typing import Iterable

from ..errors import ConfigDriveError

# -l ("allow full 31 character filenames")
NAME_MAX = 31
# Bytes genisoimage copies unchanged; DEL is not in its list of bytes to replace.
_KEPT = frozenset((string.ascii_letters + string.digits + "_\x7f").encode())
_DOT = ord(".")
_DIGITS36 = string.digits + string.ascii_uppercase


def primary_name(name: str, is_dir: bool) -> str:
    """The primary (plain ISO 9660) name genisoimage gives ``name`` before collisions
    with its siblings are resolved; files carry the ``;1`` version."""
    raw = name.encode("utf-8", "surrogateescape")
    ext_dot = _extension_dot(raw)
    stem_max, ext_max = NAME_MAX, NAME_MAX - 1
    if not is_dir:
        ext_len = len(raw) - ext_dot if ext_dot is not None else 0   # the dot counts
        if ext_len > NAME_MAX // 2 + 1:
            stem_max, ext_max = NAME_MAX // 2, ext_len
        else:
            stem_max, ext_max = NAME_MAX - ext_len, ext_len

    out: list[str] = []
    stem = ext = 0      # characters written before and after the extension dot
    used = 0            # toward NAME_MAX; a dot that did not fit still counts
    in_ext = False
    for index, byte in enumerate(raw):
        if used >= NAME_MAX:
            break
        if byte == _DOT:
            if index == ext_dot:
                out.append(".")
                in_ext = True
            elif stem < stem_max:
                out.append(".")
                stem += 1
            used += 1
            continue
        if in_ext:
            if ext >= ext_max:
                continue
            ext += 1
        else:
            if stem >= stem_max:
                continue
            stem += 1
        out.append(chr(byte) if byte in _KEPT else "_")
        used += 1

    if is_dir:
        return "".join(out)
    if not in_ext:
        if stem >= NAME_MAX - 1:
            out.pop()
        out.append(".")
    return "".join(out) + ";1"


def _extension_dot(raw: bytes) -> int | None:
    """Index of the dot that starts the extension, as genisoimage picks it."""
    dot = raw.rfind(b".")
    if dot == -1:
        return None
    if raw[dot + 1:dot + 2] in (b"", b"~"):
        earlier = raw.rfind(b".", 0, dot)
        if earlier != -1:
            return earlier
    return dot


def primary_names(entries: Iterable[tuple[str, bool]]) -> dict[str, str]:
    """Primary names for the entries ``(name, is_dir)`` of ONE directory, unique.

    genisoimage walks the directory in readdir order and, on a collision, renames the
    entry that came first; the set of names it ends with does not depend on that order,
    but which entry gets which name does. We walk in sorted order so that a build is
    reproducible.
    """
    # Names collide without their version: a file "0" (``0.;1``) and a directory "0."
    # (``0.``) are the same name to genisoimage. Keyed by the bare name.
    taken: dict[str, tuple[str, bool]] = {}     # bare primary name -> (original, is_dir)
    result: dict[str, str] = {}
    # Files before directories: when a file and a directory collide, genisoimage renames
    # the file (observed on every such pair the name test generated).
    for name, is_dir in sorted(entries, key=lambda entry: (entry[1], entry[0])):
        wanted = primary_name(name, is_dir)
        bare = _bare(wanted)
        holder = taken.pop(bare, None)
        if holder is not None:
            holder_name, _ = holder
            # genisoimage decides the renamed entry's version by the NEWCOMER's kind: a file
            # renamed because of a directory gets no ";1" (checked against genisoimage).
            renamed = _unique_variant(wanted, is_dir, taken.keys() | {bare})
            taken[_bare(renamed)] = holder
            result[holder_name] = renamed
        taken[bare] = (name, is_dir)
        result[name] = wanted
    return result


def _bare(primary: str) -> str:
    return primary.split(";", 1)[0]


def _unique_variant(taken_name: str, is_dir: bool, taken: set[str]) -> str:
    """genisoimage's replacement for a colliding name: stem cut to leave room for three
    base-36 digits, then the digits, then the extension (and ``;1`` for a file).
    ``taken`` holds bare names (no version)."""
    bare = _bare(taken_name)
    dot = bare.find(".")
    if dot == 0 and bare.rfind(".") != 0:
        dot = bare.rfind(".")           # ".profile.d": keep the leading-dot stem
    stem, ext = (bare[:dot], bare[dot:]) if dot != -1 else (bare, "")
    stem = stem[:max(0, NAME_MAX - 3 - len(ext))]
    version = "" if is_dir else ";1"
    for a in _DIGITS36:
        for b in _DIGITS36:
            for c in _DIGITS36:
                candidate = f"{stem}{a}{b}{c}{ext}"
                if candidate not in taken:
                    return candidate + version
    raise ConfigDriveError(f"{taken_name}: more than 46656 names in one directory map to it")
