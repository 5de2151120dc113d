"""Put a config drive into a disk's config partition: read the table, find the partition
(or plan one at the end of the disk), get the drive into the form the disk needs, and only
then write: table, wiped signatures, the drive with its first 64 KiB last, read-back,
and a refresh of the kernel's view.

Everything that can refuse (no table, two config partitions, no room, a drive too big, a
bad drive) is decided before the first byte is written, so a refusal leaves the disk as
it was. The drive is written through the whole-disk device at the partition's byte
offset: no partition node or udev is needed for that.
"""

from __future__ import annotations

from typing import Any

from partition.tables.config_partition import (CONFIG_LABELS, DEFAULT_MBR_TYPE, DEFAULT_SIZE, ConfigPartition,
                                        check_mbr_type, create_config_partition, find_config_partition,
                                        plan_config_partition)
from partition.writing.device import Target, held
from partition.errors import PartitionError
from partition.writing.rescan import reread
from partition.tables import Partition, Table, fix_backup_gpt, read_table
from partition.writing.verify import read_back

from ..drives.builder import DEFAULT_LABEL
from ..model.content import Content
from .convert import drive_for_disk

# Where every filesystem signature a config drive or an old filesystem could show lives
# (FAT/ext boot sectors, ISO 9660 descriptors at 32 KiB, btrfs at 64 KiB is covered by
# the drive's body): written last so that a half-written drive is never recognised.
HEAD = 64 * 1024
# Some signatures sit at a partition's end (md 0.90/1.0 superblocks): wiped too.
TAIL = 1 << 20


def place_config_drive(device: str | Target, drive: str | bytes | Content, *,
                       config_size: int = DEFAULT_SIZE, mbr_type: int = DEFAULT_MBR_TYPE,
                       format: str | None = None, label: str = DEFAULT_LABEL, size: int | None = None,
                       versions: str | list[str] | None = None, ec2: bool = True,
                       validate: bool = True) -> dict[str, Any]:
    """Write ``drive`` into the config partition of ``device`` (a ``Target`` the caller
    holds, or the path of a block device or disk image file, opened once here), creating
    the partition when there is none.

    ``drive``: Content to build (``format``/``label``/``size``/``versions``/``ec2``/
    ``validate`` as for ``build``), the bytes of a drive image, or a path or http(s) URL
    of a drive image or an ironic packed (gzip+base64) string.
    Returns the ``--json`` summary of what was done."""
    check_mbr_type(mbr_type)
    with held(device) as target:
        name = target.path          # for messages only: every step goes through ``target``
        fp = target.fileobj()
        table = read_table(fp, target.size, target.sector_size if target.is_block else None, source=name)
        if table is None:
            raise PartitionError(f"{name}: no partition table (write an OS image first)")
        found = find_config_partition(fp, table, mbr_type, source=name)
        if found is not None:
            start, room = found.partition.start, found.partition.size
        else:
            start, room = plan_config_partition(table, config_size, source=name)
        _inside(target, start, room)
        notes = list(table.notes)
        image, fs, conversion = drive_for_disk(drive, table.sector_size, room, format=format, label=label,
                                             size=size, versions=versions, ec2=ec2, validate=validate)
        if conversion:
            notes.append(conversion)
        if len(image) > room:
            where = "the config partition" if found else "a config partition of --config-size"
            raise PartitionError(f"{name}: the drive is {len(image)} bytes, larger than {where} "
                                 f"({room} bytes)")
        if fs.label not in CONFIG_LABELS:
            notes.append(f"drive label {fs.label!r}: cloud-init looks for config-2")

        # -- from here on the disk changes --
        gpt_fixed = False
        if found is None:
            gpt_fixed = table.needs_gpt_fix
            found = create_config_partition(fp, table, config_size, mbr_type, source=name)
        else:
            gpt_fixed = fix_backup_gpt(fp, table)
        if gpt_fixed:
            notes.append(f"{name}: GPT backup moved to the disk's last sectors")
        _write_drive(target, found.partition, image)
        rescan = reread(target, table.partitions, found.partition)
        notes.extend(rescan.notes)
        return _summary(target, table, found, fs, image, rescan.node, rescan.method, notes)


def refresh_disk(device: str | Target) -> dict[str, Any]:
    """After an image was written and no drive is to be placed: move a misplaced backup
    GPT to the disk's end (an image smaller than the disk) and refresh the kernel's view.
    ``device``: a ``Target`` the caller holds, or a path, opened once here."""
    with held(device) as target:
        fp = target.fileobj()
        table = read_table(fp, target.size, target.sector_size if target.is_block else None,
                           source=target.path)
        if table is None:
            return {"table": None, "gpt_fixed": False, "rescan": None, "notes": []}
        fixed = fix_backup_gpt(fp, table)
        rescan = reread(target, table.partitions)
    return {"table": table.kind, "gpt_fixed": fixed, "rescan": rescan.method or None,
            "notes": table.notes + rescan.notes}


def _inside(target: Target, start: int, size: int) -> None:
    """The last word before writing: the config partition lies inside the target.
    read_table already refuses any partition outside the usable space; this keeps a
    disk-image file from ever being grown by the writes below (write_zeros extends a
    file it is asked to zero past its end)."""
    if not 0 < start < start + size <= target.size:
        raise PartitionError(f"{target.path}: the config partition (bytes {start} to {start + size - 1}) "
                             f"is not inside the target's {target.size} bytes")


def _write_drive(target: Target, part: Partition, image: bytes) -> None:
    """Wipe old signatures, write the drive's body, flush, then its head, flush, and
    read it back: an interrupted write leaves zeros where a filesystem would be found."""
    start, head = part.start, min(HEAD, len(image))
    target.write_zeros(start, min(HEAD, part.size))
    tail = max(len(image), part.size - TAIL)
    target.write_zeros(start + tail, part.size - tail)
    target.sync()
    target.pwrite(memoryview(image)[head:], start + head)
    target.sync()
    target.pwrite(memoryview(image)[:head], start)
    target.sync()
    _verify(target, start, image)


def _verify(target: Target, start: int, image: bytes) -> None:
    # Our own cached pages are dropped first so that the comparison reads the device.
    target.drop_cache()
    back = read_back(target, start, len(image))
    if back != image:
        at = next((i for i, (a, b) in enumerate(zip(back, image)) if a != b), len(back))
        raise PartitionError(f"{target.path}: the drive read back differs at byte {start + at}")


def _summary(target: Target, table: Table, found: ConfigPartition, fs, image: bytes, node: str | None,
             rescan: str, notes: list[str]) -> dict[str, Any]:
    part = found.partition
    return {
        "device": target.path,
        "target": target.describe(),
        "table": table.kind,
        "sector_size": table.sector_size,
        "partition": {"number": part.number, "start": part.start, "size": part.size,
                      "identity": found.identity, "created": found.created, "uuid": part.uuid,
                      "node": node},
        "drive": {"format": fs.type, "label": fs.label, "bytes": len(image)},
        "rescan": rescan or None,
        "notes": notes,
    }
