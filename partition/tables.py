"""One view of a disk's partition table, GPT or MBR, in bytes: read it (finding the
sector size it was made for), move a misplaced backup GPT to the disk's end, and add a
partition. Callers never need to know which kind of table a disk has."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import BinaryIO

from . import gpt as gptmod
from . import mbr as mbrmod
from .errors import PartitionError

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
            if other != sector_size and gptmod.read_gpt(fp, disk_bytes, other) is not None:
                raise PartitionError(f"{source}: the GPT was made for {other}-byte sectors but the "
                                     f"device has {sector_size}-byte sectors; the kernel will not see it")
    mbr = mbrmod.read_mbr(fp, disk_bytes, sizes[-1])
    if mbr is not None and mbr.is_protective:
        raise PartitionError(f"{source}: protective MBR but no valid GPT header "
                             f"(primary and backup both damaged or missing)")
    return None


def _read_at(fp: BinaryIO, disk_bytes: int, sector_size: int, source: str) -> Table | None:
    mbr = mbrmod.read_mbr(fp, disk_bytes, sector_size)
    if mbr is not None and not mbr.is_protective:
        # A real DOS table wins over a stale GPT, as in the kernel (the GPT needs a
        # protective MBR to count).
        parts = [Partition(e.number, e.start * sector_size, e.sectors * sector_size,
                           type=f"0x{e.type:02x}", uuid=f"{mbr.disk_id:08x}-{e.number:02x}")
                 for e in mbr.partitions()]
        return Table("dos", sector_size, disk_bytes, parts, mbr=mbr)
    gpt = gptmod.read_gpt(fp, disk_bytes, sector_size)
    if gpt is None:
        return None
    disk_sectors = disk_bytes // sector_size
    for e in gpt.entries():
        # As for MBR entries: a partition the disk cannot hold is refused, never read at.
        if e.first_lba > e.last_lba or e.last_lba >= disk_sectors:
            raise PartitionError(f"{source}: GPT partition {e.number} (LBA {e.first_lba} to "
                                 f"{e.last_lba}) lies outside the disk's {disk_sectors} sectors")
    parts = [Partition(e.number, e.first_lba * sector_size, (e.last_lba - e.first_lba + 1) * sector_size,
                       e.name, str(e.type_guid), str(e.unique_guid)) for e in gpt.entries()]
    notes = [f"{source}: {n}" for n in gpt.notes]
    return Table("gpt", sector_size, disk_bytes, parts, notes, gpt=gpt, mbr=mbr)


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
