"""Data written around the page cache (O_DIRECT) onto a block device: what lands is the
image (judged by cmp and sgdisk), also when the device refuses O_DIRECT part-way, and a
failed direct write fails the deploy as any write does (the disk is wiped)."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

import pytest

from conftest import loop_device, make_gpt_disk, need_tool, out, run
from partition.writing.copy import write_image
from partition.writing.device import Target
from partition.errors import PartitionError

MiB = 1 << 20
GUID = "7A7A7A7A-1111-2222-3333-444455556666"


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    return make_gpt_disk(tmp_path_factory.mktemp("direct") / "disk.raw", GUID, seed=5)


def is_direct(target: Target) -> bool:
    return bool(fcntl.fcntl(target.fd, fcntl.F_GETFL) & os.O_DIRECT)


def used_disk(tmp_path: Path, size: int = 40 * MiB) -> Path:
    disk = tmp_path / "used.img"
    disk.write_bytes(b"\xaa" * size)
    return disk


def test_data_goes_around_the_page_cache(image, tmp_path, monkeypatch):
    """The image's data reaches a block device by O_DIRECT writes, and lands whole."""
    need_tool("cmp", "sgdisk")
    written = {True: 0, False: 0}
    real = Target.pwrite

    def counting(self, data, offset):
        written[is_direct(self)] += len(memoryview(data))
        return real(self, data, offset)
    monkeypatch.setattr(Target, "pwrite", counting)
    with loop_device(used_disk(tmp_path)) as dev:
        write_image(str(image), dev)
        run("cmp", "-n", str(image.stat().st_size), dev, image)
        assert GUID in out("sgdisk", "-p", dev).upper()
    # About 5 MiB of data: all of it direct but the head (the first MiB, written last)
    # and the backup GPT (a piece under 64 KiB), which go through the page cache.
    assert written[True] >= 4 * MiB and written[False] <= MiB + 128 * 1024, written


def test_o_direct_refused_part_way_falls_back_to_the_page_cache(image, tmp_path, monkeypatch):
    """A device that refuses an O_DIRECT write (EINVAL: nothing written) gets that piece
    and every later one through the page cache; the disk still holds exactly the image."""
    need_tool("cmp")
    refusals, later = [], []
    real = Target.pwrite

    def refusing(self, data, offset):
        if is_direct(self):
            if refusals:
                later.append(offset)
            else:
                refusals.append(offset)
                raise PartitionError("write refused") from OSError(errno.EINVAL, "Invalid argument")
        return real(self, data, offset)
    monkeypatch.setattr(Target, "pwrite", refusing)
    with loop_device(used_disk(tmp_path)) as dev:
        write_image(str(image), dev)
        run("cmp", "-n", str(image.stat().st_size), dev, image)
    assert refusals and not later


def test_a_failed_direct_write_wipes_the_disk(image, tmp_path, monkeypatch):
    """EIO from an O_DIRECT write is a failed deploy: one error line naming the byte,
    and the disk left with an empty table (sgdisk), not the image's."""
    need_tool("sgdisk")
    real = Target.pwrite

    def failing(self, data, offset):
        if is_direct(self) and offset >= 8 * MiB:
            raise PartitionError(f"{self.path}: write of {len(data)} bytes at byte {offset} "
                                 "failed: Input/output error") from OSError(errno.EIO, "EIO")
        return real(self, data, offset)
    monkeypatch.setattr(Target, "pwrite", failing)
    with loop_device(used_disk(tmp_path)) as dev:
        with pytest.raises(PartitionError) as caught:
            write_image(str(image), dev)
        assert "\n" not in str(caught.value) and "at byte" in str(caught.value)
        assert "now holds an empty partition table" in str(caught.value)
        assert GUID not in out("sgdisk", "-p", dev).upper()
        assert "No problems found" in out("sgdisk", "-v", dev)
