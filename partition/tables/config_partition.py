"""The partition a config drive lives in: find it by any of its three identities, or
make one at the end of the disk.

Identities (any one suffices, see shared/spec/bare-metal.md): the GPT partition name
``config-v2`` (the 2013 proposal), an MBR type id (0x99 by default), and the filesystem
label ``config-2``/``CONFIG-2`` read from the partition's bytes (what ironic-python-agent
and cloud-init look for; ironic's partitions carry no name).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

from ..errors import PartitionError
from .probe import Filesystem, probe_filesystem
from . import Partition, Table, add_partition

CONFIG_NAME = "config-v2"
# The labels cloud-init's blkid search accepts (DataSourceConfigDrive.py); glean and
# ironic look for the same.
CONFIG_LABELS = ("config-2", "CONFIG-2")
DEFAULT_MBR_TYPE = 0x99
DEFAULT_SIZE = 64 << 20
ALIGN = 1 << 20


# MBR types that would give the config partition another meaning than "data", so
# --mbr-type may not name them (the entry's type byte is all an MBR says about it):
MEANINGFUL_MBR_TYPES = {
    0x00: "marks an unused slot: the entry would not exist",
    **dict.fromkeys((0x05, 0x0F, 0x85), "is an extended partition: its first sector would be read as "
                                        "a chain of logical partitions"),
    0xEE: "is the GPT protective type: tools would look for a GPT and hide every partition of "
          "this table",
    0xEF: "is the EFI system partition type: firmware would look for boot loaders in it",
    # block/partitions/msdos.c (subtypes[]): Linux reads a nested partition table inside
    # these, so bytes of the drive would become partitions.
    **dict.fromkeys((0x63, 0x81, 0x82, 0xA5, 0xA6, 0xA9, 0xBF),
                    "makes Linux read a nested (BSD, Solaris, Minix or UnixWare) partition label "
                    "inside the drive"),
}


def check_mbr_type(mbr_type: int) -> None:
    """Refuse an MBR type id that is no byte or that changes the partition's meaning."""
    if not isinstance(mbr_type, int) or not 0 <= mbr_type <= 0xFF:
        raise PartitionError(f"MBR type {mbr_type!r}: not a byte (0x01 to 0xff)")
    if mbr_type in MEANINGFUL_MBR_TYPES:
        raise PartitionError(f"MBR type 0x{mbr_type:02x} {MEANINGFUL_MBR_TYPES[mbr_type]}; "
                             f"choose a data type such as 0x{DEFAULT_MBR_TYPE:02x}")


@dataclass
class ConfigPartition:
    partition: Partition
    identity: str                       # which identities matched, e.g. "gpt-name:config-v2"
    filesystem: Filesystem | None       # what the partition holds now
    created: bool = False


def identities(fp: BinaryIO, table: Table, part: Partition,
               mbr_type: int = DEFAULT_MBR_TYPE) -> tuple[list[str], Filesystem | None]:
    """The config-partition identities ``part`` carries, and the filesystem found in it."""
    found = []
    if table.kind == "gpt" and part.name == CONFIG_NAME:
        found.append(f"gpt-name:{CONFIG_NAME}")
    if table.kind == "dos" and part.type == f"0x{mbr_type:02x}":
        found.append(f"mbr-type:{part.type}")
    fs = probe_filesystem(fp, part.start, part.size)
    if fs is not None and fs.label in CONFIG_LABELS:
        found.append(f"label:{fs.label}")
    return found, fs


def find_config_partition(fp: BinaryIO, table: Table, mbr_type: int = DEFAULT_MBR_TYPE,
                          source: str = "disk") -> ConfigPartition | None:
    """The one config partition of ``table``; None when there is none; two or more is
    an error naming them (writing to the wrong one would lose a partition's data)."""
    matches = []
    for part in table.partitions:
        found, fs = identities(fp, table, part, mbr_type)
        if found:
            matches.append(ConfigPartition(part, ",".join(found), fs))
    if len(matches) > 1:
        names = "; ".join(f"{m.partition.describe()} by {m.identity}" for m in matches)
        raise PartitionError(f"{source}: {len(matches)} config partitions: {names}")
    return matches[0] if matches else None


def plan_config_partition(table: Table, size: int = DEFAULT_SIZE, source: str = "disk") -> tuple[int, int]:
    """Where a new config partition goes: (start, size) in bytes, 1 MiB aligned, ending at
    the end of the usable space, after every existing partition. Raises when there is no
    room or (MBR) no free primary slot or the 2 TiB limit is in the way."""
    ss = table.sector_size
    size = -(-size // ss) * ss
    if size <= 0:
        raise PartitionError(f"config partition size {size}: must be positive")
    if table.kind == "gpt":
        g = table.gpt
        # The usable end once the backup GPT sits at the disk's end (it is moved there
        # when the table is written).
        usable_end = (table.disk_bytes // ss - 1 - g.array_sectors) * ss
        floor = g.first_usable * ss
        limit = "the disk's last usable sector"
    else:
        primaries = table.mbr.primaries
        if len(primaries) >= 4:
            taken = ", ".join(f"{e.number} (type 0x{e.type:02x})" for e in primaries)
            raise PartitionError(f"{source}: all 4 MBR primary slots are in use ({taken}); "
                                 f"no room for a config partition (use a GPT image)")
        usable_end = min(table.disk_bytes // ss, 1 << 32) * ss
        floor = ALIGN
        limit = "the disk's end" if usable_end == table.disk_bytes // ss * ss else "the MBR 2 TiB limit"
        # The extended container counts as used space even where no logical lies.
        for e in primaries:
            floor = max(floor, e.end * ss)
    for part in table.partitions:
        floor = max(floor, part.end)
    start = (usable_end - size) // ALIGN * ALIGN
    if start < floor:
        last = max(table.partitions, key=lambda p: p.end, default=None)
        after = f"after {last.describe()}" if last else "on the disk"
        raise PartitionError(f"{source}: no room for a {size}-byte config partition {after}: "
                             f"{max(usable_end - floor, 0)} bytes free before {limit}")
    return start, size


def create_config_partition(fp: BinaryIO, table: Table, size: int = DEFAULT_SIZE,
                            mbr_type: int = DEFAULT_MBR_TYPE, source: str = "disk") -> ConfigPartition:
    """Make the config partition at the end of the disk and write the table. GPT: named
    ``config-v2``, type Linux filesystem data. MBR: a primary of ``mbr_type``. The bytes
    of existing partitions are not touched; only table sectors are written."""
    check_mbr_type(mbr_type)
    start, size = plan_config_partition(table, size, source)
    part = add_partition(fp, table, start, size, name=CONFIG_NAME if table.kind == "gpt" else "",
                         mbr_type=mbr_type)
    identity = f"gpt-name:{CONFIG_NAME}" if table.kind == "gpt" else f"mbr-type:0x{mbr_type:02x}"
    return ConfigPartition(part, identity, None, created=True)
