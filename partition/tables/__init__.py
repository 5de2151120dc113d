"""Partition tables in bytes: here one view of a disk's table, GPT or MBR (``gpt``,
``mbr``): read it (finding the sector size it was made for), move a misplaced backup GPT to
the disk's end, and add a partition; callers never need to know which kind a disk has.
Beside it, the config partition found or planned (``config_partition``) and what a range of
bytes holds (``probe``)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import BinaryIO

from . import gpt as gptmod
from . import mbr as mbrmod
from ..errors import PartitionError

SECTOR_SIZES = (512, 4096)


@dataclass(frozen=True)
class Partition:
    number: int
    start: int                  # bytes from the start of the disk
    size: int                   # bytes
    name: str = ""              # GPT partition name ("" on MBR)
    type: str = ""              # GPT type GUID, or the MBR type as "0x83"
    uuid: str = ""              # PARTUUID as blkid shows it

    @property
    def end(self) -> int:
        return self.start + self.size

    def describe(self) -> str:
        name = f" {self.name!r}" if self.name else ""
        return f"partition {self.number}{name} at byte {self.start} ({self.size} bytes)"


@dataclass
class Table:
    kind: str                   # "gpt" or "dos"
    sector_size: int
    disk_bytes: int
    partitions: list[Partition]
    notes: list[str] = field(default_factory=list)
    gpt: gptmod.Gpt | None = None
    mbr: mbrmod.Mbr | None = None

    @property
    def needs_gpt_fix(self) -> bool:
        """True when the backup GPT is not at the disk's end or one copy is damaged."""
        g = self.gpt
        return bool(g and (not g.primary_ok or not g.backup_ok
                           or g.backup_lba != self.disk_bytes // self.sector_size - 1))


def read_table(fp: BinaryIO, disk_bytes: int, sector_size: int | None = None,
               source: str = "disk") -> Table | None:
    """The partition table of ``fp`` (a disk of ``disk_bytes``), or None when it has none.

    ``sector_size`` is the device's logical sector size (BLKSSZGET); for image files pass
    None and the size is found from where the GPT header is. A GPT made for another sector
    size than the device's is refused: the kernel would not see it."""
    sizes = [sector_size] if sector_size else list(SECTOR_SIZES)
    for size in sizes:
        table = _read_at(fp, disk_bytes, size, source)
        if table is not None:
            return table
    if sector_size:
        for other in SECTOR_SIZES:
            if other != sector_size and _parse(gptmod.read_gpt, fp, disk_bytes, other, source) is not None:
                raise PartitionError(f"{source}: the GPT was made for {other}-byte sectors but the "
                                     f"device has {sector_size}-byte sectors; the kernel will not see it")
    mbr = _parse(mbrmod.read_mbr, fp, disk_bytes, sizes[-1], source)
    if mbr is not None and mbr.is_protective:
        raise PartitionError(f"{source}: protective MBR but no valid GPT header "
                             f"(primary and backup both damaged or missing)")
    return None


def _read_at(fp: BinaryIO, disk_bytes: int, sector_size: int, source: str) -> Table | None:
    disk_sectors = disk_bytes // sector_size
    mbr = _parse(mbrmod.read_mbr, fp, disk_bytes, sector_size, source)
    if mbr is not None and not mbr.is_protective:
        # A real DOS table wins over a stale GPT, as in the kernel (the GPT needs a
        # protective MBR to count).
        _check_mbr_layout(mbr, disk_sectors, source)
        parts = [Partition(e.number, e.start * sector_size, e.sectors * sector_size,
                           type=f"0x{e.type:02x}", uuid=f"{mbr.disk_id:08x}-{e.number:02x}")
                 for e in mbr.partitions()]
        return Table("dos", sector_size, disk_bytes, parts, mbr=mbr)
    gpt = _parse(gptmod.read_gpt, fp, disk_bytes, sector_size, source)
    if gpt is None:
        return None
    entries = list(gpt.entries())
    # The header's usable LBAs were checked against the disk and both tables (gpt.py).
    check_layout([Extent(f"GPT partition {e.number}", e.first_lba, e.last_lba) for e in entries],
                 gpt.first_usable, gpt.last_usable, "the usable LBAs", source)
    parts = [Partition(e.number, e.first_lba * sector_size, (e.last_lba - e.first_lba + 1) * sector_size,
                       e.name, str(e.type_guid), str(e.unique_guid)) for e in entries]
    notes = [f"{source}: {n}" for n in gpt.notes]
    return Table("gpt", sector_size, disk_bytes, parts, notes, gpt=gpt, mbr=mbr)


def _parse(reader, fp: BinaryIO, disk_bytes: int, sector_size: int, source: str):
    """``reader``'s result; its refusal names the disk it was reading."""
    try:
        return reader(fp, disk_bytes, sector_size)
    except PartitionError as exc:
        raise PartitionError(f"{source}: {exc}") from exc


# -- nothing a table says is trusted ------------------------------------------------------
#
# Whatever is written later goes where a partition says: the config drive into the config
# partition, the table into the sectors around the partitions. A crafted entry that
# covers LBA 0, the GPT arrays, an EBR or another partition's data would have us write
# over them; one past the disk's end would grow a disk-image file. So every partition of
# a table must lie in the usable space and overlap no other partition or table sector,
# or the whole table is refused naming the partition and its LBAs (what ``sgdisk -v``
# and ``sfdisk --verify`` call problems; parted refuses overlapping partitions too).

@dataclass(frozen=True)
class Extent:
    what: str           # "GPT partition 2", "extended boot record"
    first: int          # LBAs, inclusive
    last: int

    def __str__(self) -> str:
        return f"{self.what} (LBA {self.first} to {self.last})"


def check_layout(extents: list[Extent], lowest: int, highest: int, space: str, source: str) -> None:
    """Refuse unless every extent lies within LBAs ``lowest``..``highest`` (``space``
    names them) and no two overlap. Sorting makes it O(n log n) in the entries read."""
    for e in extents:
        if not (lowest <= e.first <= highest and lowest <= e.last <= highest):
            raise PartitionError(f"{source}: {e} lies outside {space} {lowest} to {highest}")
        if e.last < e.first:
            raise PartitionError(f"{source}: {e} ends before it starts")
    previous = None
    for e in sorted(extents, key=lambda x: (x.first, x.last)):
        if previous is not None and e.first <= previous.last:
            raise PartitionError(f"{source}: {e} overlaps {previous}")
        if previous is None or e.last > previous.last:
            previous = e


def _check_mbr_layout(mbr: mbrmod.Mbr, disk_sectors: int, source: str) -> None:
    """Primaries (the extended container included) lie in sectors 1.. of the disk and
    apart; logical partitions and the EBRs lie inside the container, apart from each
    other."""
    check_layout([Extent(f"MBR partition {e.number}", e.start, e.end - 1) for e in mbr.primaries],
                 1, disk_sectors - 1, "the disk's sectors", source)
    container = next((e for e in mbr.primaries if e.type in mbrmod.EXTENDED_TYPES), None)
    if container is not None:
        inner = [Extent(f"MBR partition {e.number}", e.start, e.end - 1) for e in mbr.logicals]
        inner += [Extent("extended boot record", s, s) for s in mbr.ebrs]
        check_layout(inner, container.start, container.end - 1,
                     f"extended partition {container.number}, sectors", source)


def fix_backup_gpt(fp: BinaryIO, table: Table) -> bool:
    """Rewrite both GPT copies when the backup is not at the disk's end (an image smaller
    than the disk was written) or one copy is damaged. Returns whether anything changed."""
    if not table.needs_gpt_fix:
        return False
    gptmod.write_gpt(fp, table.gpt, table.disk_bytes)
    return True


def add_partition(fp: BinaryIO, table: Table, start: int, size: int, *, name: str = "",
                  gpt_type: uuid.UUID = gptmod.LINUX_FS_TYPE, mbr_type: int = 0x83) -> Partition:
    """Add a partition of ``size`` bytes at byte ``start`` and write the table (both GPT
    copies, or sector 0 of an MBR disk). The caller has checked that the space is free."""
    ss = table.sector_size
    if start % ss or size % ss:
        raise PartitionError(f"partition at byte {start} of {size} bytes is not sector-aligned ({ss})")
    if table.kind == "gpt":
        g = table.gpt
        entry = gptmod.GptEntry(g.free_slot(), gpt_type, uuid.uuid4(), start // ss,
                                (start + size) // ss - 1, 0, name)
        g.set_entry(entry)
        gptmod.write_gpt(fp, g, table.disk_bytes)
        part = Partition(entry.number, start, size, name, str(gpt_type), str(entry.unique_guid))
    else:
        entry = mbrmod.add_primary(fp, table.mbr, mbr_type, start // ss, size // ss)
        part = Partition(entry.number, start, size, type=f"0x{mbr_type:02x}",
                         uuid=f"{table.mbr.disk_id:08x}-{entry.number:02x}")
    table.partitions = sorted([*table.partitions, part], key=lambda p: p.number)
    fp.flush()
    return part
