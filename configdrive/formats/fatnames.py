"""FAT names: which long (VFAT) names a drive may hold, the unique 8.3 short name each
gets (as Windows makes them), the long-name slots that carry it, and an 8.3 entry's name
as Linux shows it."""

from __future__ import annotations

from pyfatfs import FAT_LFN_ENCODING
from pyfatfs.FATDirectoryEntry import FATDirectoryEntry, FATLongDirectoryEntry

from ..errors import ConfigDriveError

LFN_CHARS = 13                           # UTF-16 units per long-name slot
MAX_NAME = 255
NTRES_LOWER_BASE, NTRES_LOWER_EXT = 0x08, 0x10   # Windows NT / Linux case flags of 8.3 names
DELETED, KANJI_E5 = 0xE5, 0x05           # first byte of a deleted entry, and its escape
OEM = "cp437"     # the code page the Linux driver and mtools assume for short names

# Characters a long name may not hold (besides controls), and the ones a short name may not.
LFN_FORBIDDEN = set('"*/:<>?\\|')
SFN_ALLOWED = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'()-@^_`{}~")


def check_fat_name(path: str, name: str) -> None:
    if name in ("", ".", ".."):
        raise ConfigDriveError(f"{path!r}: not a relative path of plain names")
    bad = sorted({c for c in name if c in LFN_FORBIDDEN or ord(c) < 0x20})
    if bad:
        raise ConfigDriveError(f"{path}: FAT names cannot hold {''.join(bad)!r}")
    if name[-1] in ". ":
        raise ConfigDriveError(f"{path}: FAT drops a trailing dot or space from {name!r}")
    if len(name.encode(FAT_LFN_ENCODING)) // 2 > MAX_NAME:
        raise ConfigDriveError(f"{path}: name longer than {MAX_NAME} characters")


def short_names(directory) -> None:
    """Give every child a unique 8.3 name the way Windows does: the name itself when it
    only differs in case, else up to six characters and ``~N``."""
    taken: set[bytes] = set()
    for child in directory.children.values():
        base, ext, lossless = _sfn_parts(child.name)
        n = 0 if lossless else 1
        while True:
            stem = base if n == 0 else base[:8 - len(f"~{n}")] + f"~{n}"
            packed = (stem.ljust(8) + ext.ljust(3)).encode("ascii")
            if packed not in taken:
                break
            n += 1
        taken.add(packed)
        child.short = packed


def _sfn_parts(name: str) -> tuple[str, str, bool]:
    """Upper-case base and extension of a short name for ``name``, and whether they hold
    it exactly (apart from case)."""
    stem = name.lstrip(".")
    base, dot, ext = stem.rpartition(".")
    if not dot:
        base, ext = stem, ""

    def mapped(part: str) -> str:
        return "".join(c if c in SFN_ALLOWED else "_" for c in part.upper() if c not in " .")
    b, e = mapped(base), mapped(ext)
    lossless = (stem == name and b == base.upper() and e == ext.upper()
                and 0 < len(b) <= 8 and len(e) <= 3)
    return (b or "_")[:8], e[:3], lossless



def long_name_slots(name: str, checksum: int) -> FATLongDirectoryEntry:
    """VFAT long-name slots for ``name``: 13 UTF-16 units each, NUL-terminated unless
    the name fills the last slot exactly, padded with 0xFFFF."""
    units = name.encode(FAT_LFN_ENCODING)
    if len(units) % (2 * LFN_CHARS):
        units += b"\0\0"
    units += b"\xff" * (-len(units) % (2 * LFN_CHARS))
    slots = FATLongDirectoryEntry()
    count = len(units) // (2 * LFN_CHARS)
    for i in range(count):
        chunk = units[i * 26:(i + 1) * 26]
        slots.add_lfn_entry(
            LDIR_Ord=(i + 1) | (FATLongDirectoryEntry.LAST_LONG_ENTRY if i == count - 1 else 0),
            LDIR_Name1=chunk[:10], LDIR_Attr=FATDirectoryEntry.ATTR_LONG_NAME, LDIR_Type=0,
            LDIR_Chksum=checksum, LDIR_Name2=chunk[10:22], LDIR_FstClusLO=0, LDIR_Name3=chunk[22:])
    return slots


def slots(name: str) -> int:
    """Directory entries a name takes: its long-name slots and the 8.3 entry."""
    return -(-len(name.encode(FAT_LFN_ENCODING)) // (2 * LFN_CHARS)) + 1



def short_name(entry: bytes) -> str:
    """An 8.3 entry's name as Linux shows it: lowercase where the NT flags say so."""
    raw = bytes([DELETED]) + entry[1:11] if entry[0] == KANJI_E5 else entry[:11]
    base, ext = raw[:8].decode(OEM).rstrip(" "), raw[8:11].decode(OEM).rstrip(" ")
    if entry[12] & NTRES_LOWER_BASE:
        base = base.lower()
    if entry[12] & NTRES_LOWER_EXT:
        ext = ext.lower()
    return f"{base}.{ext}" if ext else base


def sfn_checksum(name: bytes) -> int:
    total = 0
    for byte in name:
        total = (((total & 1) << 7) + (total >> 1) + byte) & 0xFF
    return total

