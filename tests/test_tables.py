"""Partition tables: what we write and fix is read back by sgdisk, sfdisk and blkid; what
we read is what sgdisk and sfdisk wrote."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from conftest import loop_device, need_tool, out, run
from partition.tables.gpt import write_empty_gpt

MiB = 1 << 20


def sfdisk_json(path) -> dict:
    return json.loads(out("sfdisk", "--json", path))["partitiontable"]


def sgdisk_verify(path) -> str:
    text = out("sgdisk", "-v", path)
    assert "No problems found" in text, text
    return text


@contextlib.contextmanager
def as_disk(path, sector_size):
    """The path tools should read: the file itself for 512-byte sectors, a loop device
    with 4096-byte logical sectors otherwise (sgdisk cannot be told a file's sector size)."""
    if sector_size == 512:
        yield path
    else:
        with loop_device(path, sector_size=sector_size) as dev:
            yield dev


@pytest.mark.parametrize("sector_size", [512, 4096])
def test_write_empty_gpt_is_a_clean_empty_table(tmp_path, sector_size):
    need_tool("sgdisk", "sfdisk", "blkid")
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as fp:
        fp.write(b"\xa5" * (4 * MiB))       # old contents where the tables go
        fp.truncate(64 * MiB)
    with as_disk(disk, sector_size) as dev:
        run("sgdisk", "-n", "1:0:+8M", "-c", "1:old", dev)
        assert len(sfdisk_json(dev)["partitions"]) == 1
    with open(disk, "r+b") as fp:
        write_empty_gpt(fp, 64 * MiB, sector_size)
    with as_disk(disk, sector_size) as dev:
        sgdisk_verify(dev)
        table = sfdisk_json(dev)
        assert 'PTTYPE="gpt"' in out("blkid", "-p", dev, check=False)
    assert table["label"] == "gpt"
    assert table["sectorsize"] == sector_size
    assert table.get("partitions", []) == []
    # The backup array (16 KiB) and header sit at the very end: last usable LBA just before.
    assert table["lastlba"] == 64 * MiB // sector_size - 1 - 16384 // sector_size - 1


# -- reading what sgdisk and sfdisk wrote -----------------------------------------------

from partition.errors import PartitionError  # noqa: E402
from partition.tables import fix_backup_gpt, read_table  # noqa: E402


def read(path, disk_bytes=None, sector_size=None):
    disk_bytes = disk_bytes or path.stat().st_size
    with open(path, "r+b") as fp:
        return read_table(fp, disk_bytes, sector_size, source=str(path))


def sgdisk_gpt(path, size, *specs, sector_size=512):
    """A sparse disk image partitioned by sgdisk with ``specs`` (sgdisk arguments)."""
    with open(path, "wb") as fp:
        fp.truncate(size)
    with as_disk(path, sector_size) as dev:
        run("sgdisk", "-o", *specs, dev)
        return sfdisk_json(dev)


def same_partitions(table, theirs):
    """Our partitions as sfdisk sees them: number, start and size (in sectors), name, uuid."""
    ss = theirs["sectorsize"]
    ours = [(p.start // ss, p.size // ss, p.name, p.uuid.upper()) for p in table.partitions]
    want = [(p["start"], p["size"], p.get("name", ""), p.get("uuid", "").upper())
            for p in theirs.get("partitions", [])]
    assert ours == want


@pytest.mark.parametrize("sector_size", [512, 4096])
def test_gpt_made_by_sgdisk_reads_as_sfdisk_sees_it(tmp_path, sector_size):
    need_tool("sgdisk", "sfdisk")
    disk = tmp_path / "gpt.img"
    theirs = sgdisk_gpt(disk, 96 * MiB, "-n", "1:0:+16M", "-c", "1:root", "-n", "2:0:+8M",
                        "-t", "2:ef00", "-c", "2:EFI system", "-n", "5:0:+4M", sector_size=sector_size)
    table = read(disk)          # a file: the sector size is found from the table
    assert (table.kind, table.sector_size) == ("gpt", sector_size)
    assert [p.number for p in table.partitions] == [1, 2, 5]
    same_partitions(table, theirs)
    assert not table.notes and not table.needs_gpt_fix


def test_gpt_for_4096_byte_sectors_on_a_512_byte_device_is_refused(tmp_path):
    need_tool("sgdisk")
    disk = tmp_path / "gpt4k.img"
    sgdisk_gpt(disk, 32 * MiB, "-n", "1:0:+4M", sector_size=4096)
    with pytest.raises(PartitionError, match="4096-byte sectors but the device has 512"):
        read(disk, sector_size=512)


def test_damaged_primary_gpt_uses_backup_and_fix_restores_it(tmp_path):
    need_tool("sgdisk", "sfdisk")
    disk = tmp_path / "gpt.img"
    theirs = sgdisk_gpt(disk, 64 * MiB, "-n", "1:0:+16M", "-c", "1:root", "-n", "2:0:+8M")
    with open(disk, "r+b") as fp:
        fp.seek(512 + 40)           # first usable LBA in the primary header: CRC now wrong
        fp.write(b"\x07")
    table = read(disk)
    assert any("primary GPT header at LBA 1 is damaged" in n and "header CRC" in n for n in table.notes)
    same_partitions(table, theirs)
    with open(disk, "r+b") as fp:
        assert fix_backup_gpt(fp, table)
    sgdisk_verify(disk)
    same_partitions(read(disk), sfdisk_json(disk))
    assert not read(disk).notes


def test_damaged_entry_array_is_detected_by_its_crc(tmp_path):
    need_tool("sgdisk")
    disk = tmp_path / "gpt.img"
    theirs = sgdisk_gpt(disk, 64 * MiB, "-n", "1:0:+16M", "-c", "1:root")
    with open(disk, "r+b") as fp:
        fp.seek(2 * 512 + 56)        # inside entry 1's name in the primary array
        fp.write(b"X")
    table = read(disk)
    assert any("entry array CRC mismatch" in n for n in table.notes)
    same_partitions(table, theirs)   # the backup's copy of the name


def test_image_smaller_than_disk_gets_its_backup_gpt_moved_to_the_end(tmp_path):
    need_tool("sgdisk", "sfdisk")
    disk = tmp_path / "disk.img"
    theirs = sgdisk_gpt(disk, 40 * MiB, "-n", "1:0:+16M", "-c", "1:root", "-n", "2:0:0")
    with open(disk, "r+b") as fp:
        fp.truncate(300 * MiB)       # the image was dd'ed onto a larger disk
    assert "doesn't reside" in out("sgdisk", "-v", disk)
    table = read(disk)
    assert table.needs_gpt_fix and any("not at the disk's last LBA" in n for n in table.notes)
    with open(disk, "r+b") as fp:
        assert fix_backup_gpt(fp, table)
    sgdisk_verify(disk)
    after = sfdisk_json(disk)
    assert after["lastlba"] == 300 * MiB // 512 - 34
    same_partitions(read(disk), theirs)


def sfdisk_dos(path, size, script):
    with open(path, "wb") as fp:
        fp.truncate(size)
    run("sfdisk", "-q", path, input=script.encode())
    return sfdisk_json(path)


@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_mbr_primaries_made_by_sfdisk(tmp_path, count):
    need_tool("sfdisk")
    disk = tmp_path / "mbr.img"
    script = "label: dos\n" + ",8M,83\n" * count
    theirs = sfdisk_dos(disk, 64 * MiB, script)
    table = read(disk)
    assert table.kind == "dos"
    assert [(p.number, p.start // 512, p.size // 512, p.type) for p in table.partitions] == \
        [(int(p["node"].rsplit("img", 1)[1]), p["start"], p["size"], "0x" + p["type"].rjust(2, "0"))
         for p in theirs["partitions"]]


def test_mbr_logical_partitions_are_numbered_from_5(tmp_path):
    need_tool("sfdisk")
    disk = tmp_path / "mbr.img"
    theirs = sfdisk_dos(disk, 64 * MiB, "label: dos\nmbr.img1 : size=8M, type=83\n"
                        "mbr.img2 : size=40M, type=5\nmbr.img5 : size=8M, type=83\n"
                        "mbr.img6 : size=8M, type=82\n")
    table = read(disk)
    ours = [(p.number, p.start // 512, p.size // 512) for p in table.partitions]
    want = [(int(p["node"].rsplit("img", 1)[1]), p["start"], p["size"])
            for p in theirs["partitions"] if p["type"] != "5"]
    assert ours == want and [n for n, *_ in ours] == [1, 5, 6]


def test_disk_without_a_table_reads_as_none(tmp_path):
    disk = tmp_path / "blank.img"
    with open(disk, "wb") as fp:
        fp.truncate(8 * MiB)
    assert read(disk) is None


@pytest.mark.parametrize("size", [0, 511, 512, 1024, 4096, 4608, 8191])
def test_a_file_too_small_for_a_gpt_reads_as_no_table(size):
    """Neither sector size finds room for a header: no table, not a damaged one."""
    assert read_table(io.BytesIO(bytes(size)), size, source="tiny.img") is None
