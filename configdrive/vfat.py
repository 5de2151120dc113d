"""vfat config drives: a file tree as a FAT12/16/32 image, and any FAT image back as a tree.

Writing lays the whole filesystem out in memory in one pass: the geometry mkfs.fat would
choose for the size and logical sector size, then every directory and file in contiguous
cluster runs, then the FATs. Only the part up to the last used cluster is built; the rest
of the image is zeros, which a regular file gets as a hole. pyfatfs serialises the on-disk
records (boot sector, FSInfo, directory entries and their long-name slots). Its file-level
API (PyFatFS, and FatIO) is not used: it imports PyFilesystem2, whose namespace package
needs pkg_resources, which setuptools 81 removed; and its mkfs writes an uppercase label
entry that disagrees with the boot sector and fills the image cluster by cluster.

Reading is our own (see the reading section for why): it only reads the stream, at the
offsets the checked boot sector gives.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import stat
import struct
import sys
from array import array
from dataclasses import dataclass, field
from typing import BinaryIO, Mapping

from pyfatfs import FAT_OEM_ENCODING, FAT_LFN_ENCODING
from pyfatfs.BootSectorHeader import FAT12BootSectorHeader, FAT32BootSectorHeader
from pyfatfs.EightDotThree import EightDotThree
from pyfatfs.FATDirectoryEntry import FATDirectoryEntry, FATLongDirectoryEntry
from pyfatfs.FSInfo import FSInfo

from .drivefiles import Budget, FileRef, Listing, check_name, check_unique, read_all
from .errors import ConfigDriveError, one_line

SECTOR = 512                             # the usual logical sector, and the boot record's size
SECTOR_SIZES = (512, 1024, 2048, 4096)   # the logical sector sizes disks have and FAT allows
NUM_FATS = 2
DEFAULT_SIZE = 64 * 1024 * 1024          # what nova creates for a vfat config drive
MIN_SIZE = 1024 * 1024                   # room for the structures and a nova-sized tree
MAX_SIZE = 2 * 1024 * 1024 * 1024        # the image is built in memory; FAT32 from 512 MiB
FAT32_FROM = 512 * 1024 * 1024           # mkfs.fat switches to FAT32 from this size on
MEDIA_FIXED_DISK = 0xF8
DIR_ENTRY = 32
LFN_CHARS = 13                           # UTF-16 units per long-name slot
MAX_NAME = 255

# Cluster-count limits as mkfs.fat (dosfstools 4.2) applies them: it keeps FAT12 below
# 4085 and FAT16 above 4086 because Windows and Linux draw the FAT12/16 line differently.
MAX_CLUSTERS = {12: 4084, 16: 65524, 32: 268435446}
MIN_CLUSTERS = {12: 1, 16: 4087, 32: 65525}
END_OF_CHAIN = {12: 0xFFF, 16: 0xFFFF, 32: 0x0FFFFFFF}

ATTR_DIRECTORY = FATDirectoryEntry.ATTR_DIRECTORY
ATTR_ARCHIVE = FATDirectoryEntry.ATTR_ARCHIVE
ATTR_VOLUME_ID = FATDirectoryEntry.ATTR_VOLUME_ID
DOS_EPOCH_FIRST, DOS_EPOCH_LAST = 315532800, 4354819198   # 1980-01-01, 2107-12-31 23:59:58 UTC
NTRES_LOWER_BASE, NTRES_LOWER_EXT = 0x08, 0x10   # Windows NT / Linux case flags of 8.3 names

# Characters a long name may not hold (besides controls), and the ones a short name may not.
LFN_FORBIDDEN = set('"*/:<>?\\|')
SFN_ALLOWED = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'()-@^_`{}~")
LABEL_FORBIDDEN = set('*?.,;:/\\|+=<>[]"')

# A BIOS that boots this disk by mistake runs this: int 18h ("no bootable disk, try the
# next device"), then halt in a loop.
BOOT_CODE = b"\xcd\x18\xeb\xfe"


# -- geometry ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Geometry:
    """Where everything lies in a FAT image of a given size (all counts in sectors)."""

    size: int
    sector_size: int
    fat_bits: int
    total_sectors: int
    sectors_per_cluster: int
    reserved_sectors: int
    fat_sectors: int
    root_entries: int
    clusters: int
    sectors_per_track: int
    heads: int

    @property
    def cluster_bytes(self) -> int:
        return self.sectors_per_cluster * self.sector_size

    @property
    def fat_offset(self) -> int:
        return self.reserved_sectors * self.sector_size

    @property
    def root_offset(self) -> int:
        return (self.reserved_sectors + NUM_FATS * self.fat_sectors) * self.sector_size

    @property
    def data_offset(self) -> int:
        return self.root_offset + self.root_entries * DIR_ENTRY

    def cluster_offset(self, cluster: int) -> int:
        return self.data_offset + (cluster - 2) * self.cluster_bytes


def geometry_for(size: int, sector_size: int = SECTOR) -> Geometry:
    """The layout ``mkfs.fat -S sector_size`` (dosfstools 4.2) makes for an image file of
    ``size`` bytes. With 512-byte sectors: FAT12 up to about 8 MiB, FAT16 with 2 KiB
    clusters at 64 MiB, FAT32 from 512 MiB. mkfs.fat counts clusters in sectors, so larger
    sectors give larger clusters (4096: FAT12 with 16 KiB clusters up to 32 MiB)."""
    if sector_size not in SECTOR_SIZES:
        raise ConfigDriveError(f"vfat sector size {sector_size!r}: must be one of "
                               f"{', '.join(map(str, SECTOR_SIZES))} bytes")
    if not isinstance(size, int) or isinstance(size, bool):
        raise ConfigDriveError(f"vfat size {size!r}: not a whole number of bytes")
    if size < MIN_SIZE or size > MAX_SIZE:
        raise ConfigDriveError(f"vfat size {size} bytes: must be between {MIN_SIZE} (1 MiB) "
                               f"and {MAX_SIZE} (2 GiB) for a config drive")
    sectors = size // sector_size
    # The CHS geometry only matters to DOS and mtools, which want whole tracks.
    if sectors <= 524288:
        heads = 2 if sectors <= 32768 else 4 if sectors <= 65536 else 8 if sectors <= 262144 else 16
        per_track = 16 if sectors <= 4096 else 32
    else:
        heads = next((h for h in (16, 32, 64, 128) if sectors <= h * 63 * 1024), 255)
        per_track = 63
    total = sectors // per_track * per_track
    fat32 = size >= FAT32_FROM
    # Structures are aligned to the cluster size except on floppy-sized images.
    aligned = total > 8192
    reserved = 32 if fat32 else 1
    root_sectors = 0 if fat32 else -(-512 * DIR_ENTRY // sector_size)
    # FAT32: Microsoft's cluster table for 512-byte sectors, which mkfs.fat applies to the
    # sector count whatever their size: 8 per cluster above 260 MiB worth of 512, else 1.
    per_cluster = (8 if sectors > 260 * 1024 * 2 else 1) if fat32 else 4

    while per_cluster <= 128:
        def align(n: int) -> int:
            return -(-n // per_cluster) * per_cluster if aligned else n
        after_reserved = total - align(reserved)
        fits = {}
        for bits in ((32,) if fat32 else (12, 16)):
            area = after_reserved - (0 if bits == 32 else align(root_sectors))
            fit = _clusters_that_fit(bits, area, per_cluster, sector_size, align)
            if fit:
                fits[bits] = fit
        if fits:
            bits = max(fits, key=lambda b: fits[b][0])
            clusters, fat_sectors = fits[bits]
            return Geometry(size, sector_size, bits, total, per_cluster, align(reserved), fat_sectors,
                            align(root_sectors) * sector_size // DIR_ENTRY, clusters, per_track, heads)
        per_cluster *= 2
    raise ConfigDriveError(f"vfat size {size} bytes: no FAT layout fits")  # unreachable in range


def _clusters_that_fit(bits: int, area: int, per_cluster: int, sector: int,
                       align) -> tuple[int, int] | None:
    """(clusters, FAT sectors) for an area of ``area`` sectors of ``sector`` bytes shared
    by the FATs and the data, or None when the count is outside what a FAT of ``bits``
    may hold."""
    nibbles = bits // 4   # twice the bytes of one FAT entry, to stay in integers for FAT12
    guess = (2 * area * sector + NUM_FATS * 2 * nibbles) // (2 * per_cluster * sector + NUM_FATS * nibbles)
    fat_sectors = align(-(-((guess + 2) * nibbles + 1) // 2 // sector))
    # The unused tail of the FATs could otherwise count as one more (absent) cluster.
    clusters = (area - NUM_FATS * fat_sectors) // per_cluster
    limit = min(fat_sectors * sector * 8 // bits, MAX_CLUSTERS[bits])
    if clusters > limit or clusters < MIN_CLUSTERS[bits]:
        return None
    return clusters, fat_sectors


# -- the tree as directories and files --------------------------------------------------

@dataclass
class _Node:
    name: str
    data: bytes | None = None                       # None: a directory
    children: dict[str, "_Node"] = field(default_factory=dict)   # by name.upper()
    short: bytes = b""
    first_cluster: int = 0
    clusters: int = 0

    @property
    def is_dir(self) -> bool:
        return self.data is None


def _build_nodes(tree: Mapping[str, bytes]) -> _Node:
    root = _Node("")
    for path in sorted(tree):
        parts = path.split("/")
        for part in parts:
            _check_name(path, part)
        node = root
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            key = part.upper()   # FAT looks names up without regard to case
            child = node.children.get(key)
            if child is None:
                child = _Node(part, bytes(tree[path]) if last else None)
                node.children[key] = child
            elif child.name != part:
                raise ConfigDriveError(f"{path}: differs only in case from {child.name!r}, "
                                       f"which FAT cannot tell apart")
            elif last or not child.is_dir:
                raise ConfigDriveError(f"{path}: is both a file and a directory")
            node = child
    return root


def _check_name(path: str, name: str) -> None:
    if name in ("", ".", ".."):
        raise ConfigDriveError(f"{path!r}: not a relative path of plain names")
    bad = sorted({c for c in name if c in LFN_FORBIDDEN or ord(c) < 0x20})
    if bad:
        raise ConfigDriveError(f"{path}: FAT names cannot hold {''.join(bad)!r}")
    if name[-1] in ". ":
        raise ConfigDriveError(f"{path}: FAT drops a trailing dot or space from {name!r}")
    if len(name.encode(FAT_LFN_ENCODING)) // 2 > MAX_NAME:
        raise ConfigDriveError(f"{path}: name longer than {MAX_NAME} characters")


def _short_names(directory: _Node) -> None:
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


# -- directory records ------------------------------------------------------------------

@dataclass(frozen=True)
class _Stamp:
    """One DOS date and time for every record (FAT keeps local time, or UTC when
    reproducible: SOURCE_DATE_EPOCH says nothing about a time zone)."""
    date: int
    time: int
    tenths: int

    @classmethod
    def at(cls, epoch: int | None) -> "_Stamp":
        if epoch is None:
            t = dt.datetime.now()
        else:   # clamped to what a DOS date can say: 1980 to 2107
            epoch = min(max(epoch, DOS_EPOCH_FIRST), DOS_EPOCH_LAST)
            t = dt.datetime.fromtimestamp(epoch, dt.timezone.utc).replace(tzinfo=None)
        t = min(max(t, dt.datetime(1980, 1, 1)), dt.datetime(2107, 12, 31, 23, 59, 58))
        return cls(((t.year - 1980) << 9) | (t.month << 5) | t.day,
                   (t.hour << 11) | (t.minute << 5) | (t.second // 2),
                   (t.second % 2) * 100)


def _record(short: bytes, attr: int, cluster: int, size: int, stamp: _Stamp,
            long_name: str | None = None) -> bytes:
    """A directory entry, preceded by its long-name slots when ``long_name`` is given."""
    sfn = EightDotThree(encoding=FAT_OEM_ENCODING)
    sfn.set_byte_name(short)
    entry = FATDirectoryEntry(
        DIR_Name=sfn, DIR_Attr=attr, DIR_NTRes=0, DIR_CrtTimeTenth=stamp.tenths,
        DIR_CrtTime=stamp.time, DIR_CrtDate=stamp.date, DIR_LstAccessDate=stamp.date,
        DIR_FstClusHI=cluster >> 16, DIR_WrtTime=stamp.time, DIR_WrtDate=stamp.date,
        DIR_FstClusLO=cluster & 0xFFFF, DIR_FileSize=size)
    if long_name is not None:
        entry.set_lfn_entry(_long_name_slots(long_name, sfn.checksum()))
    return bytes(entry)


def _long_name_slots(name: str, checksum: int) -> FATLongDirectoryEntry:
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


def _slots(name: str) -> int:
    """Directory entries a name takes: its long-name slots and the 8.3 entry."""
    return -(-len(name.encode(FAT_LFN_ENCODING)) // (2 * LFN_CHARS)) + 1


def _directory_bytes(directory: _Node, parent_cluster: int, is_root: bool,
                     label: bytes | None, stamp: _Stamp) -> bytes:
    records = []
    if is_root and label is not None:
        # The label's second copy; blkid reads this one, fsck.fat wants both to agree.
        records.append(_record(label, ATTR_VOLUME_ID, 0, 0, stamp))
    if not is_root:
        records.append(_record(b".          ", ATTR_DIRECTORY, directory.first_cluster, 0, stamp))
        records.append(_record(b"..         ", ATTR_DIRECTORY, parent_cluster, 0, stamp))
    for child in directory.children.values():
        attr = ATTR_DIRECTORY if child.is_dir else ATTR_ARCHIVE
        # Every name gets long-name slots, so that its exact case survives any reader.
        records.append(_record(child.short, attr, child.first_cluster,
                               0 if child.is_dir else len(child.data), stamp, child.name))
    return b"".join(records)


def _entry_count(directory: _Node, with_dots: bool, with_label: bool) -> int:
    return (2 * with_dots + with_label
            + sum(_slots(child.name) for child in directory.children.values()))


# -- writing ----------------------------------------------------------------------------

def _volume_label(label: str) -> bytes | None:
    """The 11-byte label field, or None for no label. Kept as given (lowercase
    ``config-2`` too): old consumers compare it case-sensitively."""
    try:
        raw = label.encode(FAT_OEM_ENCODING)
    except UnicodeEncodeError:
        raise ConfigDriveError(f"label {label!r}: not representable in a FAT label (code page 437)") from None
    if len(raw) > 11:
        raise ConfigDriveError(f"label {label!r}: a FAT label holds at most 11 characters")
    bad = sorted({c for c in label if c in LABEL_FORBIDDEN or ord(c) < 0x20})
    if bad:
        raise ConfigDriveError(f"label {label!r}: a FAT label cannot hold {''.join(bad)!r}")
    if label.startswith(" "):
        raise ConfigDriveError(f"label {label!r}: a FAT label cannot start with a space")
    return raw.ljust(11) if raw else None


def _volume_id(tree: Mapping[str, bytes], label: str, epoch: int | None) -> int:
    """The volume serial number: random like mkfs.fat's, or, for a reproducible build,
    derived from everything the image holds so that equal inputs give equal images."""
    if epoch is None:
        return int.from_bytes(os.urandom(4), "little")
    digest = hashlib.sha256(f"{label}\0{epoch}\0".encode())
    for path in sorted(tree):
        digest.update(path.encode() + b"\0" + len(tree[path]).to_bytes(8, "little"))
        digest.update(tree[path])
    return int.from_bytes(digest.digest()[:4], "little")


def write(tree: Mapping[str, bytes], out: BinaryIO, *, label: str = "config-2",
          size: int | None = None, epoch: int | None = None, sector_size: int = SECTOR) -> None:
    """Write ``tree`` ({relative posix path: bytes}) as a vfat image of ``size`` bytes
    (default 64 MiB, as nova makes) with ``sector_size``-byte logical sectors to the
    binary stream ``out``. Linux mounts a FAT only from a device whose logical sectors
    are no larger than the FAT's: a drive for a 4Kn disk needs ``sector_size=4096``.

    Everything is checked and laid out before the first byte goes to ``out``; with
    ``epoch`` (SOURCE_DATE_EPOCH) the same inputs give the same bytes.
    """
    geo = geometry_for(DEFAULT_SIZE if size is None else size, sector_size)
    label_field = _volume_label(label)
    root = _build_nodes(tree)
    stamp = _Stamp.at(epoch)

    files, directories = _allocate(root, geo, label_field is not None)
    used = sum(node.clusters for node in files) + sum(d.clusters for d, _ in directories)
    head = bytearray(geo.cluster_offset(2 + used))
    _put_boot_sectors(head, geo, label_field or b"NO NAME    ", _volume_id(tree, label, epoch), used)
    _put_fats(head, geo, files + [d for d, _ in directories])

    for directory, parent in directories:
        is_root = directory is root
        data = _directory_bytes(directory, parent, is_root, label_field, stamp)
        if is_root and geo.fat_bits != 32:
            head[geo.root_offset:geo.root_offset + len(data)] = data
        else:
            start = geo.cluster_offset(directory.first_cluster)
            head[start:start + len(data)] = data
    for node in files:
        start = geo.cluster_offset(node.first_cluster)
        head[start:start + len(node.data)] = node.data
    _write_padded(out, head, geo.size)


def _allocate(root: _Node, geo: Geometry, has_label: bool):
    """Give each directory and non-empty file a contiguous run of clusters, directories
    before what they hold. Returns (files, [(directory, parent cluster)]); refuses a tree
    that does not fit, saying by how much."""
    directories: list[tuple[_Node, int]] = []
    files: list[_Node] = []
    next_cluster = 2
    needed_bytes = 0

    def take(node: _Node, nbytes: int, minimum: int) -> None:
        nonlocal next_cluster, needed_bytes
        node.clusters = max(minimum, -(-nbytes // geo.cluster_bytes))
        node.first_cluster = next_cluster if node.clusters else 0
        next_cluster += node.clusters
        needed_bytes += node.clusters * geo.cluster_bytes

    stack = [(root, 0)]
    while stack:
        directory, parent = stack.pop()
        _short_names(directory)
        is_root = directory is root
        entries = _entry_count(directory, with_dots=not is_root, with_label=is_root and has_label)
        if is_root and geo.fat_bits != 32:
            if entries > geo.root_entries:
                raise ConfigDriveError(f"vfat: the root directory needs {entries} entries, "
                                       f"a FAT{geo.fat_bits} root holds {geo.root_entries}")
        else:
            take(directory, entries * DIR_ENTRY, 1)
        directories.append((directory, parent))
        for child in directory.children.values():
            if not child.is_dir:
                take(child, len(child.data), 0)
                if child.clusters:
                    files.append(child)
        for child in reversed([c for c in directory.children.values() if c.is_dir]):
            # ".." of a directory in the root names cluster 0, even on FAT32.
            stack.append((child, 0 if is_root else directory.first_cluster))

    available = geo.clusters * geo.cluster_bytes
    if needed_bytes > available:
        raise ConfigDriveError(
            f"vfat: the content needs {needed_bytes} bytes ({geo.cluster_bytes}-byte clusters) "
            f"but a {geo.size}-byte image has {available} bytes for data; choose a larger size")
    return files, directories


def _put_boot_sectors(head: bytearray, geo: Geometry, label: bytes, volume_id: int,
                      used_clusters: int) -> None:
    fat32 = geo.fat_bits == 32
    header = FAT32BootSectorHeader() if fat32 else FAT12BootSectorHeader()
    small = geo.total_sectors < 0x10000
    header.update({
        "BS_jmpBoot": bytes([0xEB, len(header) - 2, 0x90]),   # jump over the BPB to the code
        "BS_OEMName": b"MSWIN4.1",   # the name Microsoft recommends for compatibility
        "BPB_BytsPerSec": geo.sector_size,
        "BPB_SecPerClus": geo.sectors_per_cluster,
        "BPB_RsvdSecCnt": geo.reserved_sectors,
        "BPB_NumFATs": NUM_FATS,
        "BPB_RootEntCnt": geo.root_entries,
        "BPB_TotSec16": geo.total_sectors if small else 0,
        "BPB_Media": MEDIA_FIXED_DISK,
        "BPB_FATSz16": 0 if fat32 else geo.fat_sectors,
        "BPB_SecPerTrk": geo.sectors_per_track,
        "BPB_NumHeads": geo.heads,
        "BPB_HiddSec": 0,
        "BPB_TotSec32": 0 if small else geo.total_sectors,
        "BS_DrvNum": 0x80,
        "BS_Reserved1": 0,
        "BS_BootSig": 0x29,          # the serial, label and type fields below are valid
        "BS_VolID": volume_id,
        "BS_VolLab": label,
        "BS_FilSysType": f"FAT{geo.fat_bits}".ljust(8).encode(),
    })
    if fat32:
        header.update({"BPB_FATSz32": geo.fat_sectors, "BPB_ExtFlags": 0, "BPB_FSVer": 0,
                       "BPB_RootClus": 2, "BPB_FSInfo": 1, "BPB_BkBootSec": 6,
                       "BPB_Reserved": bytes(12)})
    ss = geo.sector_size
    sector = bytearray(ss)   # the boot record fills the first 512 bytes whatever the sector size
    packed = bytes(header)
    sector[:len(packed)] = packed
    sector[len(packed):len(packed) + len(BOOT_CODE)] = BOOT_CODE
    sector[510:512] = b"\x55\xaa"
    head[:ss] = sector
    if fat32:
        # fsck.fat checks the free count; allocation is contiguous from cluster 2.
        next_free = 2 + used_clusters if used_clusters < geo.clusters else 0xFFFFFFFF   # "unknown"
        info = bytes(FSInfo(free_count=geo.clusters - used_clusters, next_free=next_free))
        head[ss:ss + len(info)] = info
        head[6 * ss:7 * ss] = sector              # backup boot sector
        head[7 * ss:7 * ss + len(info)] = info    # and its FSInfo, right after it


def _put_fats(head: bytearray, geo: Geometry, owners: list[_Node]) -> None:
    """Both FATs: the media byte and clean-shutdown marks, then one chain per run."""
    bits = geo.fat_bits
    eoc = END_OF_CHAIN[bits]
    entries = array("I", bytes(4 * (geo.clusters + 2)))
    entries[0] = (eoc & ~0xFF) | MEDIA_FIXED_DISK
    entries[1] = eoc
    for node in owners:
        first, count = node.first_cluster, node.clusters
        if count:
            entries[first:first + count - 1] = array("I", range(first + 1, first + count))
            entries[first + count - 1] = eoc
    if bits == 12:
        if len(entries) % 2:
            entries.append(0)
        packed = bytearray()
        for i in range(0, len(entries), 2):
            a, b = entries[i], entries[i + 1]
            packed += bytes((a & 0xFF, (a >> 8) | ((b & 0xF) << 4), b >> 4))
        fat = bytes(packed)
    else:
        table = array("H", entries) if bits == 16 else entries
        if sys.byteorder != "little":
            table.byteswap()
        fat = table.tobytes()
    for copy in range(NUM_FATS):
        start = geo.fat_offset + copy * geo.fat_sectors * geo.sector_size
        head[start:start + len(fat)] = fat


def _write_padded(out: BinaryIO, head: bytearray, size: int) -> None:
    """``head`` then zeros up to ``size`` bytes. Where the stream reads back zeros past
    its end anyway (a regular file makes a hole, BytesIO zero-fills), skip over them."""
    out.write(head)
    rest = size - len(head)
    if rest <= 0:
        return
    if _zero_beyond_end(out):
        out.seek(rest - 1, io.SEEK_CUR)
        out.write(b"\0")
        return
    zeros = bytes(min(rest, 1 << 20))
    while rest:
        n = min(rest, len(zeros))
        out.write(zeros[:n] if n < len(zeros) else zeros)
        rest -= n


def _zero_beyond_end(out: BinaryIO) -> bool:
    try:
        if not out.seekable() or "a" in getattr(out, "mode", ""):   # appends ignore seeks
            return False
        if not isinstance(out, io.BytesIO) and not stat.S_ISREG(os.fstat(out.fileno()).st_mode):
            return False
        here = out.tell()
        end = out.seek(0, io.SEEK_END)
        out.seek(here)
        return end <= here
    except (OSError, AttributeError, ValueError):
        return False


# -- reading ----------------------------------------------------------------------------
#
# Our own reader rather than pyfatfs' PyFat: PyFat trusted the boot sector's geometry
# (FATSz16 = 0 on a FAT16 volume raised ZeroDivisionError), walked the tree by recursion
# (a 1200-deep tree raised RecursionError) and followed cross-linked chains as often as
# records pointed at them. Here the boot sector is checked against the image, every
# cluster belongs to one chain at most, the tree is walked with a stack, and every read
# is charged to a Budget (configdrive.drivefiles).

_ATTR_LONG_NAME = 0x0F
_DELETED, _END_OF_DIRECTORY, _KANJI_E5 = 0xE5, 0x00, 0x05
_LFN_LAST = 0x40
_BAD_CLUSTER = {12: 0xFF7, 16: 0xFFF7, 32: 0x0FFFFFF7}
_OEM = "cp437"     # the code page the Linux driver and mtools assume for short names
_BPB_FIELDS = {   # name: (byte offset, struct format)
    "BPB_BytsPerSec": (11, "<H"), "BPB_SecPerClus": (13, "<B"), "BPB_RsvdSecCnt": (14, "<H"),
    "BPB_NumFATs": (16, "<B"), "BPB_RootEntCnt": (17, "<H"), "BPB_TotSec16": (19, "<H"),
    "BPB_FATSz16": (22, "<H"), "BPB_TotSec32": (32, "<I"), "BPB_FATSz32": (36, "<I"),
    "BPB_RootClus": (44, "<I"),
}


@dataclass(frozen=True)
class _Volume:
    """A boot sector's geometry, checked against the image, in bytes from the volume's start."""

    fat_bits: int
    cluster_bytes: int
    fat_offset: int
    clusters: int
    root_offset: int        # FAT12/16: the fixed root directory
    root_bytes: int
    root_cluster: int       # FAT32
    data_offset: int

    def cluster_offset(self, cluster: int) -> int:
        return self.data_offset + (cluster - 2) * self.cluster_bytes


def has_boot_signature(boot: bytes) -> bool:
    """A boot sector that says it is FAT (x86 jump, "FAT" in a file-system type field)
    even where its numbers are wrong, so that ``inspect`` names the wrong field instead of
    calling the image an empty disk."""
    return (len(boot) >= 90 and boot[0] in (0xEB, 0xE9)
            and (boot[54:57] == b"FAT" or boot[82:87] == b"FAT32"))


def read(fp: BinaryIO, source: str = "vfat image", *, offset: int = 0) -> dict[str, bytes]:
    """The files of the FAT12/16/32 filesystem at byte ``offset`` of ``fp``, as
    {relative posix path: bytes}, with their long names."""
    listing = scan(fp, source, offset=offset)
    return read_all(fp, listing)


def scan(fp: BinaryIO, source: str = "vfat image", budget: Budget | None = None, *,
         offset: int = 0) -> Listing:
    """Where every file of the FAT filesystem lies (byte runs of ``fp``), data unread."""
    size = fp.seek(0, io.SEEK_END)
    budget = budget or Budget(source)
    listing = Listing(source, size, budget)
    fp.seek(offset)
    budget.charge(SECTOR, "the boot sector")
    boot = fp.read(SECTOR)
    if len(boot) < SECTOR:
        raise ConfigDriveError(f"{source}: not a readable FAT filesystem (the boot sector at "
                               f"byte {offset} is cut short)")
    volume = _volume(boot, size - offset, source, offset)
    fat = _read_fat(fp, volume, offset, budget, source)
    _FatWalk(fp, listing, volume, fat, offset).walk()
    return listing


def _volume(boot: bytes, size: int, source: str, offset: int) -> _Volume:
    """The geometry the boot sector declares, refused (naming the field and its byte)
    where it cannot describe this image."""
    bpb = {name: struct.unpack_from(fmt, boot, at)[0] for name, (at, fmt) in _BPB_FIELDS.items()}

    def refuse(field_name: str, why: str):
        at = offset + _BPB_FIELDS[field_name][0]
        return ConfigDriveError(f"{source}: FAT boot sector field {field_name} (byte {at}) = "
                                f"{bpb[field_name]}: {why}")

    sector = bpb["BPB_BytsPerSec"]
    if sector not in SECTOR_SIZES:
        raise refuse("BPB_BytsPerSec", f"not one of {', '.join(map(str, SECTOR_SIZES))}")
    per_cluster = bpb["BPB_SecPerClus"]
    if per_cluster == 0 or per_cluster & (per_cluster - 1):
        raise refuse("BPB_SecPerClus", "not a power of two")
    if bpb["BPB_RsvdSecCnt"] == 0:
        raise refuse("BPB_RsvdSecCnt", "the boot sector itself is reserved")
    if bpb["BPB_NumFATs"] == 0:
        raise refuse("BPB_NumFATs", "a FAT volume has at least one FAT")
    total_field = "BPB_TotSec16" if bpb["BPB_TotSec16"] else "BPB_TotSec32"
    total = bpb[total_field]
    if total * sector > size:
        raise refuse(total_field, f"{total * sector} bytes of volume, the image has {size}")
    # The Linux driver takes a volume whose FATSz16 is 0 for FAT32 (fat_fill_super).
    fat_field = "BPB_FATSz16" if bpb["BPB_FATSz16"] else "BPB_FATSz32"
    fat_sectors = bpb[fat_field]
    fat32 = fat_field == "BPB_FATSz32"
    root_sectors = 0 if fat32 else -(-bpb["BPB_RootEntCnt"] * DIR_ENTRY // sector)
    if fat32 and bpb["BPB_RootEntCnt"]:
        raise refuse("BPB_FATSz16", f"FAT32, yet BPB_RootEntCnt (byte {offset + 17}) = "
                                    f"{bpb['BPB_RootEntCnt']} asks for a FAT12/16 fixed root")
    data_sector = bpb["BPB_RsvdSecCnt"] + bpb["BPB_NumFATs"] * fat_sectors + root_sectors
    if fat_sectors == 0 or data_sector >= total:
        raise refuse(fat_field, f"the FATs and the root directory ({data_sector} sectors) do not "
                                f"fit the {total}-sector volume")
    clusters = (total - data_sector) // per_cluster
    bits = 32 if fat32 else 12 if clusters < 4085 else 16
    if clusters < 1:
        raise refuse("BPB_SecPerClus", f"the {total}-sector volume holds no cluster")
    if (clusters + 2) * bits > fat_sectors * sector * 8:
        raise refuse(fat_field, f"a FAT of {fat_sectors} sectors cannot map {clusters} clusters")
    root_cluster = bpb["BPB_RootClus"] if fat32 else 0
    if fat32 and not 2 <= root_cluster < clusters + 2:
        raise refuse("BPB_RootClus", "outside the data area")
    return _Volume(bits, per_cluster * sector, bpb["BPB_RsvdSecCnt"] * sector, clusters,
                   (data_sector - root_sectors) * sector, root_sectors * sector, root_cluster,
                   data_sector * sector)


def _read_fat(fp: BinaryIO, volume: _Volume, offset: int, budget: Budget, source: str) -> array:
    """The first FAT's entries for every cluster of the volume (only as many bytes as the
    clusters need, whatever the FAT's declared size)."""
    nbytes = -(-(volume.clusters + 2) * volume.fat_bits // 8)
    budget.charge(nbytes, "the FAT")
    fp.seek(offset + volume.fat_offset)
    raw = fp.read(nbytes)
    if len(raw) < nbytes:
        raise ConfigDriveError(f"{source}: the FAT at byte {offset + volume.fat_offset} is cut short")
    if volume.fat_bits == 12:     # two 12-bit entries in every three bytes
        raw += b"\0"
        entries = array("I", bytes(4 * (volume.clusters + 2)))
        for n in range(volume.clusters + 2):
            pair = int.from_bytes(raw[n * 3 // 2:n * 3 // 2 + 2], "little")
            entries[n] = pair >> 4 if n % 2 else pair & 0xFFF
        return entries
    entries = array("H" if volume.fat_bits == 16 else "I", raw)
    if sys.byteorder != "little":
        entries.byteswap()
    if volume.fat_bits == 32:
        entries = array("I", (e & 0x0FFFFFFF for e in entries))
    return entries


class _FatWalk:
    """One walk over the tree; every cluster may belong to one chain only, so cyclic and
    cross-linked chains are refused and no cluster is read twice."""

    def __init__(self, fp: BinaryIO, listing: Listing, volume: _Volume, fat: array, offset: int):
        self.fp, self.listing, self.volume, self.fat, self.offset = fp, listing, volume, fat, offset
        self.source = listing.source
        self.owner: dict[int, str] = {}

    def _chain(self, first: int, what: str, limit: int | None = None) -> list[int]:
        """The clusters of a chain (its first ``limit`` only, when given), each claimed."""
        v, chain, cluster = self.volume, [], first
        end, bad = END_OF_CHAIN[v.fat_bits] & ~7, _BAD_CLUSTER[v.fat_bits]
        while limit is None or len(chain) < limit:
            where = f"{what}: cluster {cluster}"
            if not 2 <= cluster < v.clusters + 2:
                raise ConfigDriveError(f"{self.source}: {where} lies outside the data area "
                                       f"(clusters 2 to {v.clusters + 1})")
            if cluster in self.owner:
                raise ConfigDriveError(f"{self.source}: {where} is also in the chain of "
                                       f"{one_line(self.owner[cluster])} (cyclic or cross-linked FAT)")
            self.owner[cluster] = what
            chain.append(cluster)
            entry = self.fat[cluster]
            if entry >= end:
                break
            if entry == bad or entry < 2:
                if limit is not None and len(chain) == limit:
                    break
                raise ConfigDriveError(f"{self.source}: {where}: its FAT entry ({entry:#x}) ends "
                                       f"the chain as {'a bad cluster' if entry == bad else 'free'}")
            cluster = entry
        return chain

    def _runs(self, chain: list[int]) -> tuple[tuple[int, int], ...]:
        runs: list[list[int]] = []
        size = self.volume.cluster_bytes
        for cluster in chain:
            start = self.offset + self.volume.cluster_offset(cluster)
            if runs and runs[-1][0] + runs[-1][1] == start:
                runs[-1][1] += size
            else:
                runs.append([start, size])
        return tuple((s, n) for s, n in runs)

    def _directory_bytes(self, cluster: int, path: str) -> bytes:
        v = self.volume
        what = f"directory {path or '/'}"
        if cluster == 0:
            start, length = self.offset + v.root_offset, v.root_bytes
            self.listing.budget.charge(length, what)
            self.fp.seek(start)
            return self.fp.read(length)
        pieces = []
        for start, length in self._runs(self._chain(cluster, what)):
            self.listing.budget.charge(length, one_line(what))
            self.fp.seek(start)
            pieces.append(self.fp.read(length))
        return b"".join(pieces)

    def walk(self) -> None:
        stack = [(self.volume.root_cluster, "")]
        while stack:
            cluster, path = stack.pop()
            data = self._directory_bytes(cluster, path)
            subdirs = []
            for name, attr, first, size in self._entries(data, path):
                rel = f"{path}/{name}" if path else name
                self.listing.budget.count_entry(one_line(rel))
                if attr & ATTR_DIRECTORY:
                    if first == 0:
                        raise ConfigDriveError(f"{self.source}: directory {one_line(rel)} has no "
                                               f"cluster (it would be the root)")
                    subdirs.append((first, rel))
                    continue
                if size and not first:
                    raise ConfigDriveError(f"{self.source}: file {one_line(rel)}: {size} bytes "
                                           f"listed and no cluster")
                needed = -(-size // self.volume.cluster_bytes)
                chain = self._chain(first, rel, needed) if size else []
                if len(chain) < needed:
                    raise ConfigDriveError(f"{self.source}: file {one_line(rel)}: {size} bytes "
                                           f"listed but only {len(chain)} clusters in its chain")
                self.listing.add(rel, FileRef(size, self._runs(chain)))
            stack.extend(reversed(subdirs))

    def _entries(self, data: bytes, path: str):
        """(name, attributes, first cluster, size) of each entry of one directory,
        with the long name where its slots are whole and match the short name."""
        seen: dict[str, str] = {}
        slots: dict[int, bytes] = {}
        checksum = None
        for pos in range(0, len(data) - DIR_ENTRY + 1, DIR_ENTRY):
            entry = data[pos:pos + DIR_ENTRY]
            first_byte, attr = entry[0], entry[11]
            if first_byte == _END_OF_DIRECTORY:
                break
            if first_byte == _DELETED:
                slots, checksum = {}, None
                continue
            if attr & 0x3F == _ATTR_LONG_NAME:
                order = first_byte & 0x1F
                if first_byte & _LFN_LAST:
                    slots, checksum = {}, entry[13]
                if order and entry[13] == checksum:
                    slots[order] = entry[1:11] + entry[14:26] + entry[28:32]
                continue
            long_slots, long_checksum = slots, checksum
            slots, checksum = {}, None
            if attr & ATTR_VOLUME_ID or entry[:11] in (b".          ", b"..         "):
                continue
            short = _short_name(entry)
            name = short
            if long_slots and long_checksum == _sfn_checksum(entry[:11]) \
                    and sorted(long_slots) == list(range(1, len(long_slots) + 1)):
                units = b"".join(long_slots[i] for i in sorted(long_slots))
                name = units.decode("utf-16-le", "surrogatepass").split("\0", 1)[0]
            check_name(self.source, path, name)
            # A lookup matches the long name or the short one, without regard to case.
            check_unique(self.source, path, seen, {name.upper(), short.upper()}, name)
            first = struct.unpack_from("<H", entry, 26)[0] | struct.unpack_from("<H", entry, 20)[0] << 16
            yield name, attr, first, struct.unpack_from("<I", entry, 28)[0]


def _short_name(entry: bytes) -> str:
    """An 8.3 entry's name as Linux shows it: lowercase where the NT flags say so."""
    raw = bytes([_DELETED]) + entry[1:11] if entry[0] == _KANJI_E5 else entry[:11]
    base, ext = raw[:8].decode(_OEM).rstrip(" "), raw[8:11].decode(_OEM).rstrip(" ")
    if entry[12] & NTRES_LOWER_BASE:
        base = base.lower()
    if entry[12] & NTRES_LOWER_EXT:
        ext = ext.lower()
    return f"{base}.{ext}" if ext else base


def _sfn_checksum(name: bytes) -> int:
    total = 0
    for byte in name:
        total = (((total & 1) << 7) + (total >> 1) + byte) & 0xFF
    return total
