"""Reading any FAT12/16/32 image back as a drive's file listing, bounded: the boot sector
checked against the image, every cluster in one chain at most, the tree walked with a
stack, every read charged to a Budget (configdrive/files/drivefiles.py)."""

from __future__ import annotations

import io
import struct
import sys
from array import array
from dataclasses import dataclass
from typing import BinaryIO

from ..files.drivefiles import Budget, FileRef, Listing, check_name, check_unique, read_all
from ..errors import ConfigDriveError, one_line
from .fatgeometry import ATTR_DIRECTORY, ATTR_LONG_NAME, ATTR_VOLUME_ID, DIR_ENTRY, END_OF_CHAIN, SECTOR, SECTOR_SIZES
from .fatnames import DELETED, sfn_checksum, short_name

# Our own reader rather than pyfatfs' PyFat: PyFat trusted the boot sector's geometry
# (FATSz16 = 0 on a FAT16 volume raised ZeroDivisionError), walked the tree by recursion
# (a 1200-deep tree raised RecursionError) and followed cross-linked chains as often as
# records pointed at them. Here the boot sector is checked against the image, every
# cluster belongs to one chain at most, the tree is walked with a stack, and every read
# is charged to a Budget (configdrive.files.drivefiles).

_END_OF_DIRECTORY = 0x00
_LFN_LAST = 0x40
_BAD_CLUSTER = {12: 0xFF7, 16: 0xFFF7, 32: 0x0FFFFFF7}
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
            if first_byte == DELETED:
                slots, checksum = {}, None
                continue
            if attr & 0x3F == ATTR_LONG_NAME:
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
            short = short_name(entry)
            name = short
            if long_slots and long_checksum == sfn_checksum(entry[:11]) \
                    and sorted(long_slots) == list(range(1, len(long_slots) + 1)):
                units = b"".join(long_slots[i] for i in sorted(long_slots))
                name = units.decode("utf-16-le", "surrogatepass").split("\0", 1)[0]
            check_name(self.source, path, name)
            # A lookup matches the long name or the short one, without regard to case.
            check_unique(self.source, path, seen, {name.upper(), short.upper()}, name)
            first = struct.unpack_from("<H", entry, 26)[0] | struct.unpack_from("<H", entry, 20)[0] << 16
            yield name, attr, first, struct.unpack_from("<I", entry, 28)[0]


