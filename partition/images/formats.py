"""What an image is, told by its content and never by its name (the way oslo.utils'
format_inspector tells them apart, which glance and nova adopted after CVE-2024-32498).

Only raw disks (a GPT or MBR disk, a hybrid ISO, or bytes without a known container) and
qcow2 are written. Every other container (VMDK, VHD/VPC, VHDX, VDI, QED, LUKS) would be
copied byte for byte and leave a disk holding a container instead of an OS, so it is
refused by name; a plain ISO 9660 image (no partition table) is no disk either. The user
who really wants the bytes as they are says ``--image-format raw``.

A raw disk with a valid GPT header also declares how long it is (the backup header's LBA
is its last sector): a stream that ends before that is a truncated download, not a disk.
"""

from __future__ import annotations

import struct
import zlib

from ..errors import PartitionError
from ..tables.gpt import SIGNATURE as GPT_SIGNATURE, header_sector_size

HEAD_BYTES = 64 << 10          # what detection looks at (ISO 9660's descriptor is at 32 KiB)
MIN_DISK = 512                 # a disk image has at least one sector

# (name, offset, magic): the identifying bytes of each container we do not convert.
CONTAINERS = [
    ("vmdk", 0, b"KDMV"),                       # VMware sparse extent
    ("vmdk", 0, b"# Disk DescriptorFile"),      # VMware descriptor (names its extents)
    ("vhd", 0, b"conectix"),                    # VHD/VPC dynamic disk (footer copy at 0)
    ("vhdx", 0, b"vhdxfile"),
    ("vdi", 0x40, b"\x7f\x10\xda\xbe"),          # VirtualBox, signature 0xbeda107f LE
    ("qed", 0, b"QED\x00"),
    ("luks", 0, b"LUKS\xba\xbe"),                # LUKS1 and LUKS2 share the magic
]
QCOW2_MAGIC = b"QFI\xfb"
ISO_MAGIC_AT = 0x8001                           # "CD001" of the first volume descriptor


def identify(head: bytes) -> str:
    """"qcow2", "gpt", "mbr", "iso-hybrid", "iso", "raw", or a refused container's name."""
    if head.startswith(QCOW2_MAGIC):
        return "qcow2"
    for name, offset, magic in CONTAINERS:
        if head[offset: offset + len(magic)] == magic:
            return name
    table = partition_table(head)
    if head[ISO_MAGIC_AT: ISO_MAGIC_AT + 5] == b"CD001":
        return "iso-hybrid" if table else "iso"
    return table or "raw"


def partition_table(head: bytes) -> str | None:
    """"gpt" when LBA 1 (512 or 4096-byte sectors) holds a GPT header, "mbr" when the
    boot signature is there with at least one partition entry in use."""
    if header_sector_size(head):
        return "gpt"
    if len(head) >= 512 and head[510:512] == b"\x55\xaa":
        entries = [head[446 + 16 * i: 462 + 16 * i] for i in range(4)]
        if any(e[4] != 0 and struct.unpack_from("<I", e, 12)[0] for e in entries):
            return "mbr"
    return None


def refuse_unconvertible(kind: str, name: str) -> None:
    """Raise for what we would write as a container or a non-disk."""
    if kind == "iso":
        raise PartitionError(f"{name}: an ISO 9660 image without a partition table is not a "
                             "bootable disk: refused (--image-format raw writes it as it is)")
    if kind not in ("qcow2", "gpt", "mbr", "iso-hybrid", "raw", "forced"):
        raise PartitionError(f"{name}: {kind} images are not converted: refused (convert it "
                             f"with qemu-img convert -O raw, or --image-format raw to write "
                             f"the {kind} container itself)")


def gpt_declared_size(head: bytes) -> tuple[int, int] | None:
    """(bytes, header offset): the length a raw disk's own GPT says it has (its backup
    header is in the last sector), when the primary header is intact (its CRC matches)."""
    for sector in (512, 4096):
        header = head[sector: sector + 92]
        if len(header) < 92 or header[:8] != GPT_SIGNATURE:
            continue
        (size,) = struct.unpack_from("<I", header, 12)
        if not 92 <= size <= sector or len(head) < sector + size:
            continue
        raw = bytearray(head[sector: sector + size])
        (crc,) = struct.unpack_from("<I", raw, 16)
        raw[16:20] = bytes(4)
        if zlib.crc32(raw) != crc:
            continue
        (current, backup) = struct.unpack_from("<QQ", raw, 24)
        if current != 1 or backup <= 1:
            continue
        return (backup + 1) * sector, sector
    return None
