"""``deploy --verify``: the written image is read back from the disk and compared.

A device that silently drops or alters a write is simulated in-process (Target.pwrite or
Target.write_zeros wrapped); the same fault without --verify goes unnoticed by deploy, and
`cmp` against `qemu-img convert -O raw` shows it was there. Tables are judged by sgdisk
and blkid.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import configdrive, loop_device, make_gpt_disk, need_tool, out, run
from configdrive.deploy import deploy
from partition.writing.device import Target
from partition.errors import PartitionError

MiB = 1 << 20
SIZE = 24 * MiB
IMAGE_GUID = "7B7B7B7B-1111-2222-3333-444455556666"


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> tuple[Path, Path]:
    """(a qcow2 made by qemu-img from a GPT disk with random data in two partitions and
    zeros elsewhere, the raw disk `qemu-img convert -O raw` makes of it)."""
    need_tool("sgdisk", "qemu-img", "cmp", "blkid")
    d = tmp_path_factory.mktemp("verify")
    raw = make_gpt_disk(d / "source.raw", IMAGE_GUID, seed=7, size=SIZE)
    qcow2 = d / "disk.qcow2"
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow2)
    reference = d / "reference.raw"
    run("qemu-img", "convert", "-f", "qcow2", "-O", "raw", qcow2, reference)
    return qcow2, reference


@pytest.fixture
def disk(tmp_path):
    """A loop device of the image's size over a file full of 0x55: whatever the image
    does not set (zeros included) shows up as a difference."""
    backing = tmp_path / "disk"
    backing.write_bytes(b"\x55" * SIZE)
    with loop_device(backing) as dev:
        yield dev


def first_difference(a, b) -> int | None:
    """The 0-based offset of the first differing byte, as `cmp` reports it (1-based)."""
    proc = run("cmp", a, b, check=False)
    if proc.returncode == 0:
        return None
    found = re.search(rb"differ: (?:byte|char) (\d+)", proc.stdout)
    assert found, proc.stdout + proc.stderr
    return int(found.group(1)) - 1


def assert_no_image_table(dev) -> None:
    """Neither sgdisk nor blkid sees the image's table: an empty GPT after the wipe."""
    listing = out("sgdisk", "-p", dev).split("Number  Start (sector)", 1)[1]
    assert not [l for l in listing.splitlines()[1:] if l.strip()], listing
    blkid = run("blkid", "-p", "-o", "export", dev, check=False).stdout.decode()
    assert IMAGE_GUID.lower() not in blkid.lower()
    assert "PTTYPE=gpt" in blkid
    assert "No problems found" in out("sgdisk", "-v", dev)


def test_cli_verify_on_loop_device(image, disk):
    qcow2, reference = image
    proc = configdrive("deploy", "--device", disk, "--image", qcow2, "--verify", "--json")
    summary = json.loads(proc.stdout)
    assert summary["image"]["verified"] is True
    assert "read back and verified" in proc.stderr.decode()
    assert first_difference(disk, reference) is None
    assert "No problems found" in out("sgdisk", "-v", disk)


def test_verify_to_a_new_file_and_without_verify(image, tmp_path):
    qcow2, reference = image
    summary = deploy(str(tmp_path / "verified.img"), str(qcow2), verify=True, create=True)
    assert summary["image"]["verified"] is True
    assert first_difference(tmp_path / "verified.img", reference) is None
    proc = configdrive("deploy", "--create", "--device", tmp_path / "plain.img", "--image", qcow2, "--json")
    assert json.loads(proc.stdout)["image"]["verified"] is False
    assert "read back" not in proc.stderr.decode()


# in the held-back first MiB (MBR boot code), in a partition's random data, and in the
# held-back last MiB (the cluster that carries the backup GPT, before its entries)
@pytest.mark.parametrize("bad", [100, 3 * MiB + 777, SIZE - 40000], ids=["head", "middle", "tail"])
def test_altered_write_is_caught(image, disk, monkeypatch, bad):
    qcow2, reference = image
    faulty_pwrite(monkeypatch, bad)
    with pytest.raises(PartitionError) as caught:
        deploy(disk, str(qcow2), verify=True)
    message = str(caught.value)
    assert "\n" not in message and "read-back differs" in message, message
    low, high = map(int, re.search(r"bytes (\d+)\.\.(\d+)", message).groups())
    assert low <= bad <= high and high - low < MiB, message
    assert "now holds an empty partition table" in message
    assert_no_image_table(disk)


@pytest.mark.parametrize("bad", [100, 3 * MiB + 777, SIZE - 40000], ids=["head", "middle", "tail"])
def test_altered_write_goes_unnoticed_without_verify(image, disk, monkeypatch, bad):
    qcow2, reference = image
    faulty_pwrite(monkeypatch, bad)
    summary = deploy(disk, str(qcow2))
    assert summary["image"]["verified"] is False
    assert first_difference(disk, reference) == bad


def test_dropped_zeroing_is_caught_to_the_byte(image, disk, monkeypatch):
    qcow2, reference = image
    dropped = dropping_write_zeros(monkeypatch, 16 * MiB)
    deploy(disk, str(qcow2))
    assert dropped, "the fault never fired: no zeroing request covers byte 16 MiB"
    shows = first_difference(disk, reference)        # where cmp sees the old 0x55 first
    assert shows is not None
    Path(disk).write_bytes(b"\x55" * SIZE)           # the same used disk again
    with pytest.raises(PartitionError) as caught:
        deploy(disk, str(qcow2), verify=True)
    assert f"read-back differs at byte {shows} (wrote 0x00, read 0x55)" in str(caught.value)
    assert_no_image_table(disk)


def test_dropped_zeroing_goes_unnoticed_without_verify(image, disk, monkeypatch):
    qcow2, reference = image
    dropped = dropping_write_zeros(monkeypatch, 16 * MiB)
    assert deploy(disk, str(qcow2))["image"]["verified"] is False
    assert dropped
    at = first_difference(disk, reference)
    offset, length = dropped[0]
    assert at is not None and offset <= at < offset + length
    with open(disk, "rb") as fp, open(reference, "rb") as ref:
        fp.seek(at)
        ref.seek(at)
        assert (fp.read(1), ref.read(1)) == (b"\x55", b"\0")


def faulty_pwrite(monkeypatch, bad: int) -> None:
    """The device flips the byte at ``bad`` of whatever is written over it."""
    real = Target.pwrite

    def pwrite(self, data, offset):
        if offset <= bad < offset + len(data):
            data = bytearray(data)
            data[bad - offset] ^= 0xFF
        real(self, data, offset)

    monkeypatch.setattr(Target, "pwrite", pwrite)


def dropping_write_zeros(monkeypatch, bad: int) -> list:
    """The device acknowledges, but ignores, a request to zero a range holding ``bad``;
    the ranges it dropped are listed in the returned list."""
    real, dropped = Target.write_zeros, []

    def write_zeros(self, offset, length):
        if offset <= bad < offset + length:
            dropped.append((offset, length))
            return
        real(self, offset, length)

    monkeypatch.setattr(Target, "write_zeros", write_zeros)
    return dropped
