"""Writing a drive's file tree as a FAT12/16/32 image.

Writing lays the whole filesystem out in memory in one pass: the geometry mkfs.fat would
choose for the size and logical sector size, then every directory and file in contiguous
cluster runs, then the FATs. Only the part up to the last used cluster is built; the rest
of the image is zeros, which a regular file gets as a hole. pyfatfs serialises the on-disk
records (boot sector, FSInfo, directory entries and their long-name slots). Its file-level
API (PyFatFS, and FatIO) is not used: it imports PyFilesystem2, whose namespace package
needs pkg_resources, which setuptools 81 removed; and its mkfs writes an uppercase label
entry that disagrees with the boot sector and fills the image cluster by cluster.

The geometry is fatgeometry.py's, the names fatnames.py's (beside this module in
configdrive/formats/); reading an image back is fatreader.py.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import stat
import sys
from array import array
from dataclasses import dataclass, field
from typing import BinaryIO, Mapping

from pyfatfs import FAT_OEM_ENCODING
from pyfatfs.BootSectorHeader import FAT12BootSectorHeader, FAT32BootSectorHeader
from pyfatfs.EightDotThree import EightDotThree
from pyfatfs.FATDirectoryEntry import FATDirectoryEntry
from pyfatfs.FSInfo import FSInfo

from ..errors import ConfigDriveError
from .fatgeometry import (ATTR_ARCHIVE, ATTR_DIRECTORY, ATTR_VOLUME_ID, DEFAULT_SIZE, DIR_ENTRY, END_OF_CHAIN,
                          MEDIA_FIXED_DISK, NUM_FATS, SECTOR, Geometry, geometry_for)
from .fatnames import check_fat_name, long_name_slots, short_names, slots

DOS_EPOCH_FIRST, DOS_EPOCH_LAST = 315532800, 4354819198   # 1980-01-01, 2107-12-31 23:59:58 UTC

# Characters a volume label may not hold.
LABEL_FORBIDDEN = set('*?.,;:/\\|+=<>[]"')

# A BIOS that boots this disk by mistake runs this: int 18h ("no bootable disk, try the
# next device"), then halt in a loop.
BOOT_CODE = b"\xcd\x18\xeb\xfe"


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
            check_fat_name(path, part)
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
        entry.set_lfn_entry(long_name_slots(long_name, sfn.checksum()))
    return bytes(entry)


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
            + sum(slots(child.name) for child in directory.children.values()))


# -- writing ----------------------------------------------------------------------------

def _volume_label(label: str) -> bytes | None:
    """The 11-byte label field, or None for no label. Kept as given (lowercase
    ``config-2`` too): old consumers compare it case-sensitively."""
    try:
        raw = label.encode(FAT_OEM_ENCODING)
    except UnicodeEncodeError as exc:
        raise ConfigDriveError(f"label {label!r}: not representable in a FAT label (code page 437)") from exc
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
        short_names(directory)
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


