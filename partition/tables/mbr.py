"""DOS (MBR) partition tables: the four primary entries in sector 0, the logical
partitions chained through extended boot records, and adding a primary entry.

Sector numbers are in the disk's logical sectors; starts and sizes are 32-bit, which is
where the 2 TiB limit of 512-byte-sector MBR disks comes from.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import BinaryIO

from ..errors import PartitionError
from .probe import probe_filesystem

ENTRY = struct.Struct("<B3sB3sII")   # status, CHS first, type, CHS last, LBA first, sectors
TABLE_OFFSET = 446
BOOT_SIGNATURE = b"\x55\xaa"
EXTENDED_TYPES = {0x05, 0x0F, 0x85}
PROTECTIVE_TYPE = 0xEE
MAX_SECTORS = 0xFFFFFFFF
MAX_LOGICAL = 128                    # EBRs followed at most (see _read_logicals)


@dataclass
class MbrEntry:
    number: int          # 1-4 primary, 5.. logical (as Linux numbers them)
    type: int
    start: int           # first sector
    sectors: int
    bootable: bool = False

    @property
    def end(self) -> int:
        """One past the last sector."""
        return self.start + self.sectors


@dataclass
class Mbr:
    sector_size: int
    disk_id: int
    primaries: list[MbrEntry]      # used primary slots only, extended containers included
    logicals: list[MbrEntry]
    ebrs: list[int] = field(default_factory=list)   # sectors holding extended boot records
    # A slot of type 0xEE, even of size 0: Linux then reads no DOS partition at all
    # (block/partitions/msdos.c leaves the disk to the GPT reader).
    protective: bool = False

    @property
    def is_protective(self) -> bool:
        return self.protective or any(e.type == PROTECTIVE_TYPE for e in self.primaries)

    def partitions(self) -> list[MbrEntry]:
        """What the kernel shows as partitions: primaries (not extended containers) and
        logicals."""
        return [e for e in self.primaries if e.type not in EXTENDED_TYPES] + self.logicals


def _entries(sector: bytes) -> list[tuple[int, MbrEntry]]:
    """The used slots of a table sector. Used means a size that is not zero, whatever
    the type byte says: so Linux reads them (block/partitions/msdos.c skips only
    entries of size 0), so a type-0 entry with a size is a partition we must not place
    a config partition over or hand its slot out again."""
    used = []
    for slot in range(4):
        status, _, ptype, _, start, sectors = ENTRY.unpack_from(sector, TABLE_OFFSET + 16 * slot)
        if sectors:
            used.append((slot, MbrEntry(slot + 1, ptype, start, sectors, status == 0x80)))
    return used


def read_mbr(fp: BinaryIO, disk_bytes: int, sector_size: int) -> Mbr | None:
    """The MBR in sector 0 (possibly with no partitions yet), or None when there is none.

    A FAT boot sector also ends in 55 AA; it is told apart because its "entries" are not
    plausible (status not 0/0x80, start 0) or, when they are all empty, because it holds
    a FAT boot parameter block."""
    fp.seek(0)
    sector = fp.read(512)
    if len(sector) < 512 or sector[510:512] != BOOT_SIGNATURE:
        return None
    primaries = []
    for slot in range(4):
        status = sector[TABLE_OFFSET + 16 * slot]
        if status not in (0, 0x80):
            return None
    for slot, entry in _entries(sector):
        if entry.type != PROTECTIVE_TYPE and entry.start == 0:
            return None
        primaries.append(entry)
    if not primaries and probe_filesystem(fp, 0) is not None:
        return None     # a FAT boot sector of a whole-disk filesystem, not a table
    mbr = Mbr(sector_size, struct.unpack_from("<I", sector, 440)[0], primaries, [],
              protective=PROTECTIVE_TYPE in sector[TABLE_OFFSET + 4:TABLE_OFFSET + 64:16])
    if mbr.is_protective:
        return mbr
    extended = [e for e in primaries if e.type in EXTENDED_TYPES]
    if len(extended) > 1:
        # DOS, fdisk and sfdisk make one; which chain would another tool follow?
        raise PartitionError(f"MBR: {len(extended)} extended partitions "
                             f"({', '.join(str(e.number) for e in extended)}); at most one is allowed")
    if extended:
        mbr.logicals, mbr.ebrs = _read_logicals(fp, extended[0], sector_size, disk_bytes)
    return mbr


def _read_logicals(fp: BinaryIO, extended: MbrEntry, sector_size: int,
                   disk_bytes: int) -> tuple[list[MbrEntry], list[int]]:
    """Follow the EBR chain: each EBR's first entry is a logical partition (relative to
    that EBR), its second points at the next EBR (relative to the extended partition).
    Returns the logical partitions and the sectors the EBRs sit in.

    The chain is the attacker's to draw: a link pointing back (a loop), outside the
    extended partition or past the disk, or a chain longer than MAX_LOGICAL, is refused
    naming the EBR's byte offset, so the walk does at most MAX_LOGICAL reads of one
    sector. (Linux stops silently after 100 links without a partition, block/partitions/
    msdos.c parse_extended; we say so instead of guessing which partitions were meant.)"""
    logicals: list[MbrEntry] = []
    ebrs: list[int] = []
    ebr = extended.start
    while ebr:
        at = ebr * sector_size
        if ebr in ebrs:
            raise PartitionError(f"MBR: the extended boot record chain loops back to byte {at}")
        if len(ebrs) == MAX_LOGICAL:
            raise PartitionError(f"MBR: more than {MAX_LOGICAL} extended boot records (the next at "
                                 f"byte {at})")
        if not extended.start <= ebr < extended.end or at + 512 > disk_bytes:
            raise PartitionError(f"MBR: extended boot record at byte {at} lies outside the extended "
                                 f"partition (sectors {extended.start} to {extended.end - 1}) or the disk")
        ebrs.append(ebr)
        fp.seek(at)
        sector = fp.read(512)
        if len(sector) < 512 or sector[510:512] != BOOT_SIGNATURE:
            break
        entries = dict(_entries(sector))
        if 0 in entries and entries[0].type not in EXTENDED_TYPES:
            e = entries[0]
            logicals.append(MbrEntry(5 + len(logicals), e.type, ebr + e.start, e.sectors, e.bootable))
        nxt = entries.get(1)
        ebr = extended.start + nxt.start if nxt and nxt.type in EXTENDED_TYPES else 0
    return logicals, ebrs


def add_primary(fp: BinaryIO, mbr: Mbr, ptype: int, start: int, sectors: int) -> MbrEntry:
    """Write a new primary entry into the first free slot of sector 0; nothing else on
    the disk changes. CHS fields get the "beyond CHS" marker, as modern tools write."""
    if start + sectors > MAX_SECTORS + 1 or sectors > MAX_SECTORS:
        raise PartitionError(f"MBR partition at sector {start} of {sectors} sectors passes the "
                             f"32-bit sector limit")
    used = {e.number for e in mbr.primaries}
    free = [n for n in range(1, 5) if n not in used]
    if not free:
        raise PartitionError("MBR: all 4 primary partition slots are in use")
    entry = MbrEntry(free[0], ptype, start, sectors)
    fp.seek(TABLE_OFFSET + 16 * (entry.number - 1))
    fp.write(ENTRY.pack(0, b"\xfe\xff\xff", ptype, b"\xfe\xff\xff", start, sectors))
    mbr.primaries.append(entry)
    mbr.primaries.sort(key=lambda e: e.number)
    return entry
