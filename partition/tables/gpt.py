"""GUID Partition Tables: read (CRCs checked, backup used when the primary is damaged),
write both copies, move the backup to the disk's end, and write a fresh empty table.

Layout (UEFI spec, chapter 5): LBA 0 holds a protective MBR, LBA 1 the primary header,
LBA 2 on the entry array; the disk's last LBA holds the backup header with its own copy
of the array just before it. Every field is little-endian. GUIDs are stored in the
mixed-endian form ``uuid.UUID.bytes_le`` describes.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

from ..errors import PartitionError
from .mbr import BOOT_SIGNATURE, PROTECTIVE_TYPE

SIGNATURE = b"EFI PART"
REVISION = 0x00010000
HEADER_SIZE = 92
HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")   # up to and including the entry array CRC
ENTRY = struct.Struct("<16s16sQQQ72s")
ENTRY_SIZE = ENTRY.size                       # 128
DEFAULT_ENTRIES = 128
NAME_CHARS = 36                               # UTF-16LE code units in an entry name
# Linux filesystem data, what sgdisk's default type 8300 means.
LINUX_FS_TYPE = uuid.UUID("0fc63daf-8483-4772-8e79-3d69d8477de4")


@dataclass
class GptEntry:
    number: int             # 1-based slot in the entry array
    type_guid: uuid.UUID
    unique_guid: uuid.UUID
    first_lba: int
    last_lba: int
    attributes: int
    name: str


@dataclass
class Gpt:
    """One GPT as read from a disk. ``array`` keeps the entry array's exact bytes, so that
    writing the table back changes only what we meant to change."""

    sector_size: int
    disk_guid: uuid.UUID
    first_usable: int
    last_usable: int
    entry_count: int
    entry_size: int
    array: bytearray
    backup_lba: int                 # where the backup header is (or should be)
    notes: list[str] = field(default_factory=list)
    primary_ok: bool = True
    backup_ok: bool = True

    @property
    def array_sectors(self) -> int:
        return -(-self.entry_count * self.entry_size // self.sector_size)

    def entries(self) -> Iterator[GptEntry]:
        """The used slots (a slot is unused when its type GUID is all zeros)."""
        for index in range(self.entry_count):
            entry = parse_entry(self.array, index, self.entry_size)
            if entry is not None:
                yield entry

    def free_slot(self) -> int:
        for index in range(self.entry_count):
            if parse_entry(self.array, index, self.entry_size) is None:
                return index + 1
        raise PartitionError(f"GPT: all {self.entry_count} partition entries are in use")

    def set_entry(self, entry: GptEntry) -> None:
        encoded = entry.name.encode("utf-16-le")
        if len(encoded) > NAME_CHARS * 2:
            raise PartitionError(f"GPT partition name {entry.name!r}: longer than {NAME_CHARS} characters")
        at = (entry.number - 1) * self.entry_size
        self.array[at:at + self.entry_size] = bytes(self.entry_size)
        ENTRY.pack_into(self.array, at, entry.type_guid.bytes_le, entry.unique_guid.bytes_le,
                        entry.first_lba, entry.last_lba, entry.attributes, encoded)


def header_sector_size(head: bytes) -> int | None:
    """The sector size a disk's GPT was made for, from its first bytes: the header sits in
    LBA 1, at byte 512 or 4096. None when neither holds one."""
    for size in (512, 4096):
        if head[size: size + 8] == SIGNATURE:
            return size
    return None


def parse_entry(array: bytes, index: int, entry_size: int = ENTRY_SIZE) -> GptEntry | None:
    type_le, unique_le, first, last, attributes, name = ENTRY.unpack_from(array, index * entry_size)
    if type_le == bytes(16):
        return None
    text = name.decode("utf-16-le", "replace").split("\0", 1)[0]
    return GptEntry(index + 1, uuid.UUID(bytes_le=type_le), uuid.UUID(bytes_le=unique_le),
                    first, last, attributes, text)


# -- reading ----------------------------------------------------------------------------

def read_gpt(fp: BinaryIO, disk_bytes: int, sector_size: int) -> Gpt | None:
    """The GPT on ``fp`` for a disk of ``disk_bytes`` with ``sector_size``-byte sectors, or
    None when there is no 'EFI PART' signature at either place. When the primary is
    damaged the backup at the disk's last LBA is used and a note says so (what the kernel
    and sgdisk do); a backup that is not at the disk's end (an image smaller than the disk
    was written) is noted too. When both headers carry the signature and neither can be
    used, the table is refused naming why, with the byte offsets."""
    last_lba = disk_bytes // sector_size - 1
    primary, why_primary = _read_header(fp, 1, sector_size, disk_bytes)
    if primary is not None:
        backup, why_backup = _read_header(fp, primary.backup_lba, sector_size, disk_bytes)
        if backup is None:
            primary.backup_ok = False
            primary.notes.append(f"backup GPT header at LBA {primary.backup_lba} is damaged ({why_backup})")
        if primary.backup_lba != last_lba:
            primary.notes.append(f"backup GPT header is at LBA {primary.backup_lba}, not at the disk's "
                                 f"last LBA {last_lba}")
        return primary
    backup, why_backup = _read_header(fp, last_lba, sector_size, disk_bytes)
    if backup is None:
        if why_primary == why_backup == NO_SIGNATURE:
            return None
        raise PartitionError(f"GPT: primary header at LBA 1: {why_primary}; backup header at LBA "
                             f"{last_lba}: {why_backup}")
    backup.primary_ok = False
    backup.backup_lba = last_lba
    backup.notes.append(f"primary GPT header at LBA 1 is damaged ({why_primary}); "
                        f"using the backup at LBA {last_lba}")
    return backup


NO_SIGNATURE = "no 'EFI PART' signature"


def _read_header(fp: BinaryIO, lba: int, sector_size: int, disk_bytes: int) -> tuple[Gpt | None, str]:
    """A GPT from the header at ``lba`` and the array it points to, or (None, why not).

    Every field is checked against the disk before anything it announces is read: the
    entry array is read only once its size is bounded and it is known to lie inside the
    disk, between the header and the usable area, so memory and work follow the bytes
    the disk really holds, never a count or size the header claims."""
    if lba <= 0 or (lba + 1) * sector_size > disk_bytes:
        return None, NO_SIGNATURE       # no header can be there
    at = lba * sector_size
    fp.seek(at)
    sector = fp.read(sector_size)
    if len(sector) < sector_size or sector[:8] != SIGNATURE:
        return None, NO_SIGNATURE
    (_, _, header_size, header_crc, _, my_lba, alternate, first_usable, last_usable,
     disk_guid, array_lba, count, entry_size, array_crc) = HEADER.unpack_from(sector)
    if not HEADER_SIZE <= header_size <= sector_size:
        return None, f"header size {header_size} at byte {at + 12}"
    check = bytearray(sector[:header_size])
    check[16:20] = bytes(4)
    if zlib.crc32(check) != header_crc:
        return None, f"header CRC mismatch at byte {at + 16}"
    if my_lba != lba:
        return None, f"header says it is at LBA {my_lba} (byte {at + 24})"
    why = _check_layout(lba, disk_bytes // sector_size - 1, sector_size, first_usable, last_usable,
                        array_lba, count, entry_size)
    if why:
        return None, f"{why} (header at byte {at})"
    fp.seek(array_lba * sector_size)
    array = bytearray(fp.read(count * entry_size))
    if len(array) != count * entry_size or zlib.crc32(array) != array_crc:
        return None, f"entry array CRC mismatch (array at LBA {array_lba})"
    return Gpt(sector_size, uuid.UUID(bytes_le=disk_guid), first_usable, last_usable, count,
               entry_size, array, alternate if lba == 1 else lba), ""


# The entry array's size. UEFI 2.10 section 5.3.2: SizeOfPartitionEntry is 128 x 2^n
# (n >= 0), and at least 16,384 bytes are reserved for the array. sgdisk and Linux
# (block/partitions/efi.c, is_gpt_valid) read 128-byte entries only, and Linux refuses an
# array over KMALLOC_MAX_SIZE (4 MiB on x86-64): a bigger one is a table the kernel would
# not show, so it is refused here before a byte of it is read (a header announcing 2^32
# entries of 8 MiB must not become an allocation).
MAX_ARRAY_BYTES = 4 << 20


def _check_layout(lba: int, disk_last_lba: int, sector_size: int, first_usable: int,
                  last_usable: int, array_lba: int, count: int, entry_size: int) -> str:
    """Why the header at ``lba`` describes a layout this disk cannot hold, or "".

    The layout (UEFI 2.10 section 5.3, and the problems ``sgdisk -v`` reports): the
    primary array lies between the primary header and FirstUsableLBA, the backup array
    between LastUsableLBA and the backup header, FirstUsableLBA <= LastUsableLBA. As the
    table is rewritten with the primary array at LBA 2 and the backup at the disk's end
    (``write_gpt``), the usable LBAs must leave room for both arrays there too: a
    partition can then never cover a table, whichever copy was read."""
    multiple = entry_size // ENTRY_SIZE
    if entry_size % ENTRY_SIZE or multiple == 0 or multiple & (multiple - 1):
        return f"partition entry size {entry_size} is not 128 x 2^n"
    if count == 0 or count * entry_size > MAX_ARRAY_BYTES:
        return f"entry array of {count} x {entry_size} bytes (at most {MAX_ARRAY_BYTES} bytes)"
    array_sectors = -(-count * entry_size // sector_size)
    if lba == 1:
        lowest, highest = 2, first_usable - 1               # the primary array
    else:
        lowest, highest = last_usable + 1, lba - 1          # the backup array
    if not lowest <= array_lba <= highest - array_sectors + 1:
        return (f"entry array at LBA {array_lba} ({array_sectors} sectors) is not between "
                f"LBA {lowest} and {highest}")
    if first_usable < 2 + array_sectors or last_usable > disk_last_lba - array_sectors - 1 \
            or first_usable > last_usable:
        return (f"usable LBAs {first_usable} to {last_usable} do not fit a disk of "
                f"{disk_last_lba + 1} sectors between its primary and backup tables")
    return ""


# -- writing ----------------------------------------------------------------------------

def write_gpt(fp: BinaryIO, gpt: Gpt, disk_bytes: int) -> None:
    """Write the primary and backup header and arrays of ``gpt`` for a disk of
    ``disk_bytes``. The backup goes to the disk's last LBA and ``last_usable`` follows it
    (what ``sgdisk -e`` does); a protective MBR's size is updated to match."""
    ss = gpt.sector_size
    last_lba = disk_bytes // ss - 1
    old_backup = gpt.backup_lba
    gpt.backup_lba = last_lba
    gpt.last_usable = last_lba - gpt.array_sectors - 1
    backup_array_lba = last_lba - gpt.array_sectors
    array = bytes(gpt.array) + bytes(gpt.array_sectors * ss - len(gpt.array))
    # Backup first: while the primary still describes the old state, a crash in between
    # leaves one consistent copy that firmware and tools will pick.
    _write(fp, backup_array_lba * ss, array)
    _write(fp, last_lba * ss, _header(gpt, last_lba, 1, backup_array_lba))
    _write(fp, 2 * ss, array)
    _write(fp, 1 * ss, _header(gpt, 1, last_lba, 2))
    if old_backup not in (last_lba, 1) and (old_backup + 1) * ss <= disk_bytes:
        # A stale backup header left mid-disk would be found by tools looking for one.
        fp.seek(old_backup * ss)
        if fp.read(8) == SIGNATURE:
            _write(fp, old_backup * ss, bytes(ss))
    _fit_protective_mbr(fp, disk_bytes, ss)


def _header(gpt: Gpt, my_lba: int, alternate_lba: int, array_lba: int) -> bytes:
    fields = [SIGNATURE, REVISION, HEADER_SIZE, 0, 0, my_lba, alternate_lba, gpt.first_usable,
              gpt.last_usable, gpt.disk_guid.bytes_le, array_lba, gpt.entry_count,
              gpt.entry_size, zlib.crc32(gpt.array)]
    fields[3] = zlib.crc32(HEADER.pack(*fields))
    return HEADER.pack(*fields) + bytes(gpt.sector_size - HEADER_SIZE)


def protective_mbr(disk_bytes: int, sector_size: int) -> bytes:
    """Sector 0 of a GPT disk: one partition of type 0xEE covering the disk (capped at
    the 32-bit sector count), so MBR-only tools see the disk as in use."""
    sectors = min(disk_bytes // sector_size - 1, 0xFFFFFFFF)
    mbr = bytearray(512)
    # status 0, CHS start 0/0/2, type 0xEE, CHS end "beyond CHS", LBA 1, size
    struct.pack_into("<B3sB3sII", mbr, 446, 0, b"\x00\x02\x00", PROTECTIVE_TYPE, b"\xff\xff\xff", 1, sectors)
    mbr[510:512] = BOOT_SIGNATURE
    return bytes(mbr)


def _fit_protective_mbr(fp: BinaryIO, disk_bytes: int, sector_size: int) -> None:
    """Resize a pure protective MBR to the disk; a hybrid MBR is left as it is."""
    fp.seek(0)
    mbr = fp.read(512)
    types = [mbr[446 + 16 * i + 4] for i in range(4)]
    if mbr[510:512] != BOOT_SIGNATURE or types[0] != PROTECTIVE_TYPE or any(types[1:]):
        return
    sectors = min(disk_bytes // sector_size - 1, 0xFFFFFFFF)
    fixed = bytearray(mbr)
    struct.pack_into("<I", fixed, 446 + 12, sectors)
    _write(fp, 0, bytes(fixed))


def new_gpt(disk_bytes: int, sector_size: int, entry_count: int = DEFAULT_ENTRIES) -> Gpt:
    """An empty GPT for a disk of ``disk_bytes`` (what ``sgdisk -o`` makes)."""
    array_sectors = -(-entry_count * ENTRY_SIZE // sector_size)
    last_lba = disk_bytes // sector_size - 1
    if last_lba < 2 * (array_sectors + 1) + 1:
        raise PartitionError(f"disk of {disk_bytes} bytes is too small for a GPT")
    return Gpt(sector_size, uuid.uuid4(), 2 + array_sectors, last_lba - array_sectors - 1,
               entry_count, ENTRY_SIZE, bytearray(entry_count * ENTRY_SIZE), last_lba)


def write_empty_gpt(fp: BinaryIO, disk_bytes: int, sector_size: int = 512) -> None:
    """Leave ``fp`` holding a fresh, empty partition table: protective MBR, primary and
    backup GPT headers with valid CRCs and zeroed entry arrays. Used to make a failed
    deploy harmless: nothing on the disk looks bootable or half-written any more."""
    if sector_size < 512 or sector_size & (sector_size - 1):
        raise PartitionError(f"sector size {sector_size}: not a power of two >= 512")
    gpt = new_gpt(disk_bytes, sector_size)
    # Zero sector 0 up to the end of the primary array (any old boot code or header goes).
    _write(fp, 0, bytes((2 + gpt.array_sectors) * sector_size))
    _write(fp, 0, protective_mbr(disk_bytes, sector_size))
    write_gpt(fp, gpt, disk_bytes)
    fp.flush()


def _write(fp: BinaryIO, offset: int, data: bytes) -> None:
    fp.seek(offset)
    view = memoryview(data)
    while view:
        written = fp.write(view)
        if written is None:   # a non-blocking raw stream; not expected on files/devices
            written = 0
        view = view[written:]
