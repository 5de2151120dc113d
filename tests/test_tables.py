"""Partition tables: what we write and fix is read back by sgdisk, sfdisk and blkid; what
we read is what sgdisk and sfdisk wrote."""

from __future__ import annotations

import contextlib
import json

import pytest

from conftest import loop_device, need_tool, out, run
from partition.gpt import write_empty_gpt

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
