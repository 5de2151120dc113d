"""The geometry mkfs.fat (dosfstools 4.2) chooses for a FAT image of a given size and
logical sector size: FAT12, 16 or 32, sectors per cluster, and where the FATs, the root
directory and the data lie."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigDriveError

SECTOR = 512                             # the usual logical sector, and the boot record's size
SECTOR_SIZES = (512, 1024, 2048, 4096)   # the logical sector sizes disks have and FAT allows
NUM_FATS = 2
DEFAULT_SIZE = 64 * 1024 * 1024          # what nova creates for a vfat config drive
MIN_SIZE = 1024 * 1024                   # room for the structures and a nova-sized tree
MAX_SIZE = 2 * 1024 * 1024 * 1024        # the image is built in memory; FAT32 from 512 MiB
FAT32_FROM = 512 * 1024 * 1024           # mkfs.fat switches to FAT32 from this size on
MEDIA_FIXED_DISK = 0xF8
DIR_ENTRY = 32                           # bytes of one directory entry
# Directory entry attributes (Microsoft's FAT specification, "DIR_Attr").
ATTR_VOLUME_ID, ATTR_DIRECTORY, ATTR_ARCHIVE, ATTR_LONG_NAME = 0x08, 0x10, 0x20, 0x0F

# Cluster-count limits as mkfs.fat (dosfstools 4.2) applies them: it keeps FAT12 below
# 4085 and FAT16 above 4086 because Windows and Linux draw the FAT12/16 line differently.
MAX_CLUSTERS = {12: 4084, 16: 65524, 32: 268435446}
MIN_CLUSTERS = {12: 1, 16: 4087, 32: 65525}
END_OF_CHAIN = {12: 0xFFF, 16: 0xFFFF, 32: 0x0FFFFFFF}


@dataclass(frozen=True)
class Geometry:
    """Where everything lies in a FAT image of a given size (all counts in sectors)."""

    size: int
    sector_size: int
    fat_bits: int
    total_sectors: int
    sectors_per_cluster: int
    reserved_sectors: int
    fat_sectors: int
    root_entries: int
    clusters: int
    sectors_per_track: int
    heads: int

    @property
    def cluster_bytes(self) -> int:
        return self.sectors_per_cluster * self.sector_size

    @property
    def fat_offset(self) -> int:
        return self.reserved_sectors * self.sector_size

    @property
    def root_offset(self) -> int:
        return (self.reserved_sectors + NUM_FATS * self.fat_sectors) * self.sector_size

    @property
    def data_offset(self) -> int:
        return self.root_offset + self.root_entries * DIR_ENTRY

    def cluster_offset(self, cluster: int) -> int:
        return self.data_offset + (cluster - 2) * self.cluster_bytes


def geometry_for(size: int, sector_size: int = SECTOR) -> Geometry:
    """The layout ``mkfs.fat -S sector_size`` (dosfstools 4.2) makes for an image file of
    ``size`` bytes. With 512-byte sectors: FAT12 up to about 8 MiB, FAT16 with 2 KiB
    clusters at 64 MiB, FAT32 from 512 MiB. mkfs.fat counts clusters in sectors, so larger
    sectors give larger clusters (4096: FAT12 with 16 KiB clusters up to 32 MiB)."""
    if sector_size not in SECTOR_SIZES:
        raise ConfigDriveError(f"vfat sector size {sector_size!r}: must be one of "
                               f"{', '.join(map(str, SECTOR_SIZES))} bytes")
    if not isinstance(size, int) or isinstance(size, bool):
        raise ConfigDriveError(f"vfat size {size!r}: not a whole number of bytes")
    if size < MIN_SIZE or size > MAX_SIZE:
        raise ConfigDriveError(f"vfat size {size} bytes: must be between {MIN_SIZE} (1 MiB) "
                               f"and {MAX_SIZE} (2 GiB) for a config drive")
    sectors = size // sector_size
    # The CHS geometry only matters to DOS and mtools, which want whole tracks.
    if sectors <= 524288:
        heads = 2 if sectors <= 32768 else 4 if sectors <= 65536 else 8 if sectors <= 262144 else 16
        per_track = 16 if sectors <= 4096 else 32
    else:
        heads = next((h for h in (16, 32, 64, 128) if sectors <= h * 63 * 1024), 255)
        per_track = 63
    total = sectors // per_track * per_track
    fat32 = size >= FAT32_FROM
    # Structures are aligned to the cluster size except on floppy-sized images.
    aligned = total > 8192
    reserved = 32 if fat32 else 1
    root_sectors = 0 if fat32 else -(-512 * DIR_ENTRY // sector_size)
    # FAT32: Microsoft's cluster table for 512-byte sectors, which mkfs.fat applies to the
    # sector count whatever their size: 8 per cluster above 260 MiB worth of 512, else 1.
    per_cluster = (8 if sectors > 260 * 1024 * 2 else 1) if fat32 else 4

    while per_cluster <= 128:
        def align(n: int) -> int:
            return -(-n // per_cluster) * per_cluster if aligned else n
        after_reserved = total - align(reserved)
        fits = {}
        for bits in ((32,) if fat32 else (12, 16)):
            area = after_reserved - (0 if bits == 32 else align(root_sectors))
            fit = _clusters_that_fit(bits, area, per_cluster, sector_size, align)
            if fit:
                fits[bits] = fit
        if fits:
            bits = max(fits, key=lambda b: fits[b][0])
            clusters, fat_sectors = fits[bits]
            return Geometry(size, sector_size, bits, total, per_cluster, align(reserved), fat_sectors,
                            align(root_sectors) * sector_size // DIR_ENTRY, clusters, per_track, heads)
        per_cluster *= 2
    raise ConfigDriveError(f"vfat size {size} bytes: no FAT layout fits")  # unreachable in range


def _clusters_that_fit(bits: int, area: int, per_cluster: int, sector: int,
                       align) -> tuple[int, int] | None:
    """(clusters, FAT sectors) for an area of ``area`` sectors of ``sector`` bytes shared
    by the FATs and the data, or None when the count is outside what a FAT of ``bits``
    may hold."""
    nibbles = bits // 4   # twice the bytes of one FAT entry, to stay in integers for FAT12
    guess = (2 * area * sector + NUM_FATS * 2 * nibbles) // (2 * per_cluster * sector + NUM_FATS * nibbles)
    fat_sectors = align(-(-((guess + 2) * nibbles + 1) // 2 // sector))
    # The unused tail of the FATs could otherwise count as one more (absent) cluster.
    clusters = (area - NUM_FATS * fat_sectors) // per_cluster
    limit = min(fat_sectors * sector * 8 // bits, MAX_CLUSTERS[bits])
    if clusters > limit or clusters < MIN_CLUSTERS[bits]:
        return None
    return clusters, fat_sectors


