"""A drive in the form a target disk can mount: built from content, or a given image as it
is, or converted (ISO 9660 to vfat, a FAT's sectors rewritten) for a disk whose sectors are
larger than 512 bytes."""

from __future__ import annotations

import io

from partition.tables.probe import probe_filesystem

from ..drives.builder import build, write_image
from ..model.content import Content
from ..files.drivefiles import MAX_DRIVE_BYTES
from ..errors import ConfigDriveError
from .fetch import load_drive
from ..drives.reader import read_image


def drive_for_disk(drive: str | bytes | Content, sector_size: int, room: int, *, format: str | None,
                 label: str, size: int | None, versions, ec2: bool, validate: bool):
    """(image bytes, its Filesystem, a note when it was converted) in the form the target
    can mount. On disks with sectors over 512 bytes that is vfat, since ISO 9660 cannot be
    mounted there, with FAT sectors of the disk's size: Linux refuses a FAT whose logical
    sectors are smaller than the device's."""
    needs_vfat = sector_size > 512
    # A vfat drive fills the partition it goes into unless a size was asked for.
    vfat_options = dict(format="vfat", size=size or min(room, MAX_DRIVE_BYTES), sector_size=sector_size)
    if isinstance(drive, Content):
        fmt = "vfat" if needs_vfat else (format or "iso")
        options = vfat_options if fmt == "vfat" else {"format": fmt}
        image = build(drive, None, label=label, versions=versions, ec2=ec2, validate=validate, **options)
        note = (f"{sector_size}-byte sectors: ISO 9660 cannot be mounted there, drive built as vfat"
                if needs_vfat and format != "vfat" else "")
        return image, probe_drive(image, "the built drive"), note
    source = "drive" if isinstance(drive, bytes) else str(drive)
    image = drive if isinstance(drive, bytes) else load_drive(str(drive))
    fs = probe_drive(image, source)
    if not needs_vfat:
        return image, fs, ""
    if fs.type == "iso9660":
        why = f"ISO 9660 cannot be mounted there, {source} converted to vfat"
    else:
        fat_sector = int.from_bytes(image[11:13], "little")   # the boot sector's BPB_BytsPerSec
        if fat_sector >= sector_size:
            return image, fs, ""
        why = (f"Linux cannot mount a FAT with {fat_sector}-byte sectors there, "
               f"{source} rewritten with {sector_size}-byte sectors")
    tree = read_image(io.BytesIO(image), fs.type, source)
    out = io.BytesIO()
    write_image(tree, out, label=fs.label, **vfat_options)
    image = out.getvalue()
    return image, probe_drive(image, f"{source} (converted)"), f"{sector_size}-byte sectors: {why}"


def probe_drive(image: bytes, source: str):
    """The filesystem of a drive image in memory; refused unless ISO 9660 or vfat."""
    fs = probe_filesystem(io.BytesIO(image))
    if fs is None:
        raise ConfigDriveError(f"{source}: not an ISO 9660 or vfat config drive")
    return fs
