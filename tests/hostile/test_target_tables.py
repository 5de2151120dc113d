"""Hostile partition tables on the target: crafted by sgdisk and sfdisk, then patched in
code (CRCs recomputed, so the crafted field is what the reader meets), and held to the
promise by harness.refused: exit 1, one line naming the partition and its LBAs (or the
header field and its byte), no traceback, the disk's sha256 unchanged, within the hang
and peak-RSS guards.

Each case runs three ways a user meets the disk: ``deploy --config-drive``, ``deploy``
building the drive from content options, and ``inspect``.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import mmap
import re
import os
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import configdrive, loop_device, need_tool, out, run
from harness import EXE, digest, refused, run_measured

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))
from mutations import fix_gpt_crcs  # noqa: E402

MiB = 1 << 20
SS = 512
UUID = "83679162-1378-4288-a2d4-70e13ec132aa"
COMMANDS = {
    "deploy-drive": lambda disk, drive: ["deploy", "--device", disk, "--config-drive", drive],
    "deploy-content": lambda disk, drive: ["deploy", "--device", disk, "--uuid", UUID, "--hostname", "node-7"],
    "inspect": lambda disk, drive: ["inspect", disk],
}


@pytest.fixture(scope="module")
def drive(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("drive") / "drive.iso"
    configdrive("build", "-o", path, "--uuid", UUID, "--hostname", "node-7")
    return path


def sfdisk_json(path) -> dict:
    return json.loads(out("sfdisk", "--json", path))["partitiontable"]


def refused_everywhere(disk: Path, drive: Path, names: str, **guards) -> None:
    size = disk.stat().st_size
    for name, command in COMMANDS.items():
        refused(*command(disk, drive), watch=[disk], names=names, **guards)
        assert disk.stat().st_size == size, f"{name}: the disk-image file changed size"


# -- GPT: a config-v2 entry (or any entry) where no partition may be ----------------------

@dataclass
class GptDisk:
    path: Path
    sectors: int
    first_usable: int
    last_usable: int
    parts: dict[int, tuple[int, int]]       # number: (first LBA, last LBA), as sfdisk reads them
    ss: int = SS

    @contextlib.contextmanager
    def device(self):
        """What the commands are given: the file, or for 4096-byte sectors a loop device
        (a file's sectors are 512 bytes to sgdisk). Attached only after the patching:
        a loop device caches what it read, and the patch goes to the file."""
        if self.ss == SS:
            yield self.path
        else:
            with loop_device(self.path, sector_size=self.ss) as dev:
                yield Path(dev)


def gpt_disk(tmp_path, size=32 * MiB, ss=SS) -> GptDisk:
    """root (1), data (2) and config-v2 (3), made by sgdisk; geometry as sfdisk reads it."""
    need_tool("sgdisk", "sfdisk")
    path = tmp_path / "gpt.img"
    with open(path, "wb") as fp:
        fp.truncate(size)
    disk = GptDisk(path, size // ss, 0, 0, {}, ss)
    with disk.device() as dev:
        run("sgdisk", "-o", "-n", "1:0:+12M", "-c", "1:root", "-n", "2:0:+4M", "-c", "2:data",
            "-n", "3:0:+4M", "-c", "3:config-v2", dev)
        theirs = sfdisk_json(dev)
    disk.parts = {int(re.search(r"(\d+)$", p["node"]).group(1)): (p["start"], p["start"] + p["size"] - 1)
                  for p in theirs["partitions"]}
    disk.first_usable, disk.last_usable = theirs["firstlba"], theirs["lastlba"]
    return disk


@contextlib.contextmanager
def mapped(path: Path):
    """The disk's bytes to patch in place. Mapped, not read: this test process's peak
    RSS is inherited by every child it starts (wait4 reports the larger), so reading a
    1 GiB disk here would blind the harness's RSS guard."""
    with open(path, "r+b") as fp, mmap.mmap(fp.fileno(), 0) as data:
        yield data


def gpt_headers(data, ss: int = SS) -> list[int]:
    """Byte offsets of the primary and backup GPT headers."""
    backup = struct.unpack_from("<Q", data, ss + 32)[0]
    return [ss, backup * ss]


def set_entry(disk: GptDisk, number: int, first: int, last: int, name: str | None = None) -> None:
    """Give entry ``number`` these LBAs (and name) in both arrays; CRCs fixed."""
    with mapped(disk.path) as data:
        for header in gpt_headers(data, disk.ss):
            entry = struct.unpack_from("<Q", data, header + 72)[0] * disk.ss + 128 * (number - 1)
            struct.pack_into("<QQ", data, entry + 32, first, last)
            if name is not None:
                data[entry + 56:entry + 128] = name.encode("utf-16-le").ljust(72, b"\0")
        fix_gpt_crcs(data)


GEOMETRY = {
    # name: (first, last) of the config-v2 entry, from the disk's geometry
    "covers LBA 0": lambda d: (0, d.parts[3][1]),
    "covers the primary array": lambda d: (2, d.first_usable + 100),
    "inside the root partition": lambda d: (d.parts[1][0] + 8, d.parts[1][0] + 8 + 4095),
    "over the end of the root partition": lambda d: (d.parts[1][1] - 100, d.parts[1][1] + 4000),
    "over the backup GPT": lambda d: (d.last_usable - 100, d.sectors - 1),
    "ends before it starts": lambda d: (d.parts[3][0] + 8, d.parts[3][0]),
    "past the disk's end": lambda d: (d.sectors + 2048, d.sectors + 10239),
    "at LBA 2^63": lambda d: (1 << 63, (1 << 63) + 8191),
}


@pytest.mark.parametrize("ss", [512, 4096])
@pytest.mark.parametrize("case", GEOMETRY)
def test_gpt_config_partition_where_no_partition_may_be(tmp_path, drive, case, ss):
    disk = gpt_disk(tmp_path, ss=ss)
    first, last = GEOMETRY[case](disk)
    set_entry(disk, 3, first, last)
    with disk.device() as dev:
        # sgdisk, which we did not write, calls each of these a problem too.
        assert "No problems found" not in run("sgdisk", "-v", dev, check=False).stdout.decode()
        refused_everywhere(dev, drive, names=f"GPT partition 3 (LBA {first} to {last})")


@pytest.mark.parametrize("image_format", ["raw", "qcow2"])
@pytest.mark.parametrize("case", [c for c in GEOMETRY if c != "over the backup GPT"])
def test_crafted_table_inside_the_image_is_refused_before_the_target_is_touched(tmp_path, case,
                                                                               image_format):
    """The same tables carried by ``--image``: read from the image's held-back first MiB
    before anything is written, so the target keeps its bytes. (An entry over the backup
    GPT is seen only after the copy, where the backup is: that case is the one left out.)"""
    need_tool("qemu-img")
    disk = gpt_disk(tmp_path)
    first, last = GEOMETRY[case](disk)
    set_entry(disk, 3, first, last)
    image = disk.path
    if image_format == "qcow2":
        image = tmp_path / "gpt.qcow2"
        run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", disk.path, image)
    target = tmp_path / "target.img"
    target.write_bytes(b"\xaa" * (40 * MiB))
    refused("deploy", "--device", target, "--image", image, watch=[target],
            names=f"GPT partition 3 (LBA {first} to {last})")


def test_crafted_table_in_a_stream_is_refused_after_the_copy_and_the_target_wiped(tmp_path):
    """A stream's size is known only at its end, so its table is judged once it is down:
    the deploy fails, and the target is left with an empty table as after a failed copy
    (read by sgdisk and blkid), never with the crafted disk."""
    disk = gpt_disk(tmp_path)
    first, last = GEOMETRY["inside the root partition"](disk)
    set_entry(disk, 3, first, last)
    stream = tmp_path / "gpt.img.gz"
    stream.write_bytes(gzip.compress(disk.path.read_bytes()))
    target = tmp_path / "target.img"
    target.write_bytes(b"\xaa" * (40 * MiB))
    line = refused("deploy", "--device", target, "--image", stream,
                   names=f"GPT partition 3 (LBA {first} to {last})")
    assert "now holds an empty partition table" in line
    listing = run("sgdisk", "-p", target).stdout.decode()
    assert "Number  Start" in listing and not re.search(r"^\s+\d+\s+\d+\s+\d+", listing, re.M), listing
    assert "PTTYPE" in out("blkid", "-p", target) and "config-2" not in out("blkid", "-p", target)


def test_gpt_partition_found_by_label_inside_root_is_refused(tmp_path, drive):
    """An unnamed partition holding a config-2 filesystem (the identity ironic uses),
    drawn over the root partition's data."""
    need_tool("mkfs.vfat")
    disk = gpt_disk(tmp_path)
    fat = tmp_path / "fat.img"
    run("mkfs.vfat", "-C", "-n", "config-2", fat, 2048)
    first = disk.parts[1][0] + 2048
    with open(disk.path, "r+b") as fp:
        fp.seek(first * SS)
        fp.write(fat.read_bytes())
    set_entry(disk, 3, first, first + 4095, name="")
    assert "config-2" in out("blkid", "-p", "-o", "value", "-s", "LABEL", "-O", first * SS, disk.path)
    refused_everywhere(disk.path, drive, names=f"GPT partition 3 (LBA {first} to {first + 4095})")


def test_gpt_disk_image_file_is_never_grown(tmp_path, drive):
    """The case that grew a disk-image file to hundreds of GB: config-v2 ending far past
    the file's end. The file keeps its size (refused_everywhere checks it) and no
    block of it is allocated."""
    disk = gpt_disk(tmp_path)
    set_entry(disk, 3, disk.parts[3][0], 400 << 30 >> 9)
    blocks = disk.path.stat().st_blocks
    refused_everywhere(disk.path, drive, names=f"GPT partition 3 (LBA {disk.parts[3][0]} to {400 << 30 >> 9})")
    assert disk.path.stat().st_blocks == blocks


# -- GPT headers announcing absurd entry arrays -------------------------------------------

def set_headers(path: Path, **fields) -> None:
    """Set fields of both GPT headers (first_usable, last_usable, array_lba, count,
    entry_size) and fix the header CRCs (the array CRC stays: the array is never read)."""
    layout = {"first_usable": (40, "<Q"), "last_usable": (48, "<Q"), "array_lba": (72, "<Q"),
              "count": (80, "<I"), "entry_size": (84, "<I")}
    with mapped(path) as data:
        for header in gpt_headers(data):
            for name, value in fields.items():
                at, fmt = layout[name]
                struct.pack_into(fmt, data, header + at, value)
        fix_gpt_crcs(data)


BIG = 1 << 30      # a sparse disk big enough to hold what the old reader read whole
HEADERS = {
    # name: (disk size, fields, what the one line names)
    "75 entries of 8 MiB (600 MiB, inside the disk)": (BIG, {"count": 75, "entry_size": 8 << 20},
                                                       "entry array of 75 x 8388608 bytes"),
    "2^32-1 entries of 8 MiB": (BIG, {"count": 0xFFFFFFFF, "entry_size": 8 << 20},
                                "entry array of 4294967295 x 8388608 bytes"),
    "5000 entries of 128 KiB": (32 * MiB, {"count": 5000, "entry_size": 128 << 10}, "entry array of 5000 x 131072"),
    "count x size wraps 32 bits to 0": (32 * MiB, {"count": 1 << 25, "entry_size": 128},
                                        "entry array of 33554432 x 128"),
    "count x size wraps 32 bits to 256": (32 * MiB, {"count": (1 << 24) + 1, "entry_size": 256},
                                          "entry array of 16777217 x 256"),
    "no entries": (32 * MiB, {"count": 0}, "entry array of 0 x 128"),
    "entry size 100": (32 * MiB, {"entry_size": 100}, "partition entry size 100 is not 128 x 2^n"),
    "entry size 384": (32 * MiB, {"entry_size": 384}, "partition entry size 384 is not 128 x 2^n"),
    "entry size 0": (32 * MiB, {"entry_size": 0}, "partition entry size 0 is not"),
    "entry size 2^31": (32 * MiB, {"entry_size": 1 << 31}, "entry array of 128 x 2147483648"),
    "array at LBA 2^63": (32 * MiB, {"array_lba": 1 << 63}, "entry array at LBA 9223372036854775808"),
    "array inside the usable space": (32 * MiB, {"array_lba": 40960},
                                      "entry array at LBA 40960 (32 sectors) is not between"),
    "array over the header": (32 * MiB, {"array_lba": 1}, "entry array at LBA 1 "),
    "first usable LBA 0": (32 * MiB, {"first_usable": 0}, "usable LBAs 0 to"),
    "last usable LBA past the disk": (32 * MiB, {"last_usable": (1 << 64) - 1}, f"to {(1 << 64) - 1} do not fit"),
    "last usable over the backup array": (32 * MiB, {"last_usable": 32 * MiB // SS - 2},
                                          f"to {32 * MiB // SS - 2} do not fit"),
}


# Starts the command from a small process: the child's peak RSS as wait4 reports it is
# then its own, not this test process's (see ``mapped``).
@pytest.mark.parametrize("case", HEADERS)
def test_gpt_header_announcing_an_absurd_array_is_refused_before_reading_it(tmp_path, drive, case):
    size, fields, names = HEADERS[case]
    disk = gpt_disk(tmp_path, size=size)
    set_headers(disk.path, **fields)
    # The old reader allocated what the header announced (MemoryError, or 600 MiB read
    # from a sparse file).
    for command in ("deploy-drive", "inspect"):
        line = refused(*COMMANDS[command](disk.path, drive), watch=[disk.path], names=names)
        assert "primary header at LBA 1" in line and f"backup header at LBA {disk.sectors - 1}" in line
    # A refusal costs what starting the command costs (about 40 MiB), whatever was announced.
    assert run_measured(*COMMANDS["inspect"](disk.path, drive)).peak_rss < 100 << 20


def test_a_damaged_primary_header_alone_falls_back_to_the_backup(tmp_path, drive):
    """Control for the cases above: with only the primary header absurd, the backup is a
    valid table (as for the kernel and sgdisk), the deploy goes ahead and rewrites both."""
    disk = gpt_disk(tmp_path)
    with mapped(disk.path) as data:
        struct.pack_into("<II", data, SS + 80, 0xFFFFFFFF, 8 << 20)
        fix_gpt_crcs(data)
    result = run_measured(*COMMANDS["deploy-drive"](disk.path, drive), "--json")
    assert result.returncode == 0, result.stderr
    assert "primary GPT header at LBA 1 is damaged" in result.stdout.decode()
    assert "No problems found" in out("sgdisk", "-v", disk.path)
    assert json.loads(result.stdout)["config_drive"]["partition"]["number"] == 3


# -- MBR: 0x99 partitions and EBR chains the attacker drew -------------------------------

@dataclass
class MbrDisk:
    path: Path
    sectors: int
    parts: dict[int, tuple[int, int]]       # number: (first LBA, sectors), as sfdisk reads them
    ebrs: list[int]                         # sector of each EBR, in chain order


def mbr_disk(tmp_path, size=32 * MiB) -> MbrDisk:
    """1 Linux, 2 extended holding 5 Linux and 6 of type 0x99, made by sfdisk."""
    need_tool("sfdisk")
    path = tmp_path / "mbr.img"
    with open(path, "wb") as fp:
        fp.truncate(size)
    run("sfdisk", "-q", path, input=b"label: dos\nmbr.img1 : size=8M, type=83\n"
        b"mbr.img2 : size=16M, type=5\nmbr.img5 : size=4M, type=83\nmbr.img6 : size=4M, type=99\n")
    theirs = sfdisk_json(path)
    parts = {int(p["node"].rsplit("img", 1)[1]): (p["start"], p["size"]) for p in theirs["partitions"]}
    ebrs, ebr = [], parts[2][0]
    with mapped(path) as data:
        while ebr:
            ebrs.append(ebr)
            kind, rel = data[ebr * SS + 446 + 16 + 4], struct.unpack_from("<I", data, ebr * SS + 446 + 16 + 8)[0]
            ebr = parts[2][0] + rel if kind == 5 else 0
    return MbrDisk(path, size // SS, parts, ebrs)


def set_mbr_entry(path: Path, sector: int, slot: int, ptype: int, start: int, sectors: int) -> None:
    with open(path, "r+b") as fp:
        fp.seek(sector * SS + 446 + 16 * slot)
        fp.write(struct.pack("<B3sB3sII", 0, b"\xfe\xff\xff", ptype, b"\xfe\xff\xff", start, sectors))


def long_chain(disk: MbrDisk, links: int, loop_to: int | None = None) -> None:
    """Rewrite the extended partition as ``links`` EBRs, each followed by a one-sector
    logical partition (the last of type 0x99); ``loop_to``: the last EBR points back at
    EBR number ``loop_to`` instead of ending the chain."""
    ext = disk.parts[2][0]
    set_mbr_entry(disk.path, 0, 1, 0x05, ext, 2 * links + 2)
    with open(disk.path, "r+b") as fp:
        for i in range(links):
            sector = bytearray(SS)
            struct.pack_into("<B3sB3sII", sector, 446, 0, b"\xfe\xff\xff", 0x99 if i == links - 1 else 0x83,
                             b"\xfe\xff\xff", 1, 1)
            nxt = 2 * (i + 1) if i < links - 1 else (None if loop_to is None else 2 * loop_to)
            if nxt is not None:
                struct.pack_into("<B3sB3sII", sector, 446 + 16, 0, b"\xfe\xff\xff", 0x05, b"\xfe\xff\xff", nxt, 2)
            sector[510:512] = b"\x55\xaa"
            fp.seek((ext + 2 * i) * SS)
            fp.write(sector)


MBR_CASES = {
    "logical 0x99 far past the disk's end": (
        lambda d: set_mbr_entry(d.path, d.ebrs[1], 0, 0x99, 0x7FFFFFF0, 8192),
        lambda d: f"MBR partition 6 (LBA {d.ebrs[1] + 0x7FFFFFF0} to {d.ebrs[1] + 0x7FFFFFF0 + 8191})"),
    "logical 0x99 over its own EBR": (
        lambda d: set_mbr_entry(d.path, d.ebrs[1], 0, 0x99, 0, 8192),
        lambda d: f"MBR partition 6 (LBA {d.ebrs[1]} to {d.ebrs[1] + 8191})"),
    "logical 0x99 over the next EBR and logical": (
        lambda d: set_mbr_entry(d.path, d.ebrs[0], 0, 0x99, d.parts[5][0] - d.ebrs[0], d.parts[5][1] + 4096),
        lambda d: f"MBR partition 5 (LBA {d.parts[5][0]} to {d.parts[5][0] + d.parts[5][1] + 4095})"),
    "primary 0x99 past the disk's end": (
        lambda d: set_mbr_entry(d.path, 0, 2, 0x99, d.sectors + 2048, 8192),
        lambda d: f"MBR partition 3 (LBA {d.sectors + 2048} to {d.sectors + 2048 + 8191})"),
    "primary 0x99 ending 2 TiB past the disk's end": (
        lambda d: set_mbr_entry(d.path, 0, 2, 0x99, d.sectors - 8192, 0xFFFFFFFF),
        lambda d: f"MBR partition 3 (LBA {d.sectors - 8192} to {d.sectors - 8192 + 0xFFFFFFFF - 1})"),
    "primary 0x99 inside partition 1": (
        lambda d: set_mbr_entry(d.path, 0, 2, 0x99, d.parts[1][0] + 8, 4096),
        lambda d: f"MBR partition 3 (LBA {d.parts[1][0] + 8} to {d.parts[1][0] + 8 + 4095})"),
    "primary 0x99 inside the extended partition": (
        lambda d: set_mbr_entry(d.path, 0, 2, 0x99, d.parts[6][0], d.parts[6][1]),
        lambda d: f"MBR partition 3 (LBA {d.parts[6][0]} to"),
    "EBR chain loops back to the first": (
        lambda d: set_mbr_entry(d.path, d.ebrs[1], 1, 0x05, 0, 2),
        lambda d: f"loops back to byte {d.ebrs[0] * SS}"),
    "EBR chain loops back to itself": (
        lambda d: set_mbr_entry(d.path, d.ebrs[1], 1, 0x05, d.ebrs[1] - d.ebrs[0], 2),
        lambda d: f"loops back to byte {d.ebrs[1] * SS}"),
    "EBR past the disk's end": (
        lambda d: set_mbr_entry(d.path, d.ebrs[1], 1, 0x05, 0xFFFFFF00, 2),
        lambda d: f"extended boot record at byte {(d.ebrs[0] + 0xFFFFFF00) * SS} lies outside"),
    "129 logical partitions": (lambda d: long_chain(d, 129), lambda d: "more than 128 extended boot records"),
    "5000 logical partitions": (lambda d: long_chain(d, 5000), lambda d: "more than 128 extended boot records"),
    "100 logical partitions, then a loop": (
        lambda d: long_chain(d, 100, loop_to=40), lambda d: f"loops back to byte {(d.parts[2][0] + 80) * SS}"),
    "two extended partitions": (
        lambda d: set_mbr_entry(d.path, 0, 2, 0x0F, d.sectors - 4096, 2048),
        lambda d: "2 extended partitions (2, 3)"),
}


@pytest.mark.parametrize("case", MBR_CASES)
def test_mbr_crafted_partitions_and_chains_are_refused(tmp_path, drive, case):
    craft, names = MBR_CASES[case]
    disk = mbr_disk(tmp_path)
    craft(disk)
    refused_everywhere(disk.path, drive, names=names(disk))


# -- the same tables in a guest image handed to the legacy injector -------------------------
#
# inject reads a guest image's table with the reader deploy trusts (partition/tables/__init__.py;
# it ran sfdisk --json before): a table refused above is refused there too, naming the
# same partition, and the image is left as it was. debugfs alone: it reads the file
# itself, so no kernel parses the crafted table.

INJECT_GPT = ["covers LBA 0", "inside the root partition", "past the disk's end", "at LBA 2^63"]
INJECT_MBR = ["logical 0x99 over its own EBR", "primary 0x99 past the disk's end",
              "EBR chain loops back to itself", "5000 logical partitions"]


def inject_refused(disk: Path, names: str) -> str:
    need_tool("debugfs")
    return refused("inject", disk, "--handlers", "debugfs", "--hostname", "node-7", watch=[disk], names=names)


@pytest.mark.parametrize("case", INJECT_GPT)
def test_inject_refuses_a_crafted_gpt_in_the_guest_image(tmp_path, case):
    disk = gpt_disk(tmp_path)
    first, last = GEOMETRY[case](disk)
    set_entry(disk, 3, first, last)
    inject_refused(disk.path, names=f"GPT partition 3 (LBA {first} to {last})")


@pytest.mark.parametrize("case", ["75 entries of 8 MiB (600 MiB, inside the disk)", "entry size 100"])
def test_inject_refuses_an_absurd_gpt_header_in_the_guest_image(tmp_path, case):
    size, fields, names = HEADERS[case]
    disk = gpt_disk(tmp_path, size=size)
    set_headers(disk.path, **fields)
    inject_refused(disk.path, names=names)


@pytest.mark.parametrize("case", INJECT_MBR)
def test_inject_refuses_a_crafted_mbr_in_the_guest_image(tmp_path, case):
    craft, names = MBR_CASES[case]
    disk = mbr_disk(tmp_path)
    craft(disk)
    inject_refused(disk.path, names=names(disk))


# -- --mbr-type -----------------------------------------------------------------------------

def mbr_primaries_disk(tmp_path) -> Path:
    need_tool("sfdisk")
    path = tmp_path / "dos.img"
    with open(path, "wb") as fp:
        fp.truncate(96 * MiB)
    run("sfdisk", "-q", path, input=b"label: dos\n,16M,83\n,8M,83\n")
    return path


@pytest.mark.parametrize("ptype", [0x00, 0x83])
def test_mbr_entry_of_type_0_with_a_size_is_a_partition(tmp_path, drive, ptype):
    """Linux reads every slot whose size is not zero, type 0 included (msdos.c), and so
    does sfdisk: a config partition planned over it, or its slot handed out again, would
    overwrite that partition. Type 0x83 is the control: the same answer either way."""
    disk = mbr_primaries_disk(tmp_path)
    end = disk.stat().st_size // SS
    set_mbr_entry(disk, 0, 2, ptype, end - 65536, 65536)
    assert [p["type"] for p in sfdisk_json(disk)["partitions"]] == ["83", "83", f"{ptype:x}"]
    line = refused(*COMMANDS["deploy-drive"](disk, drive), watch=[disk], names="no room")
    assert f"partition 3 at byte {(end - 65536) * SS}" in line


@pytest.mark.parametrize("value", ["0x100", "256", "-1", "-0x99", "junk", "0x", "", "0x1234",
                                   "9" * 5000, "0x99 junk", "1e3"])
def test_mbr_type_that_is_no_byte_is_a_command_line_error(tmp_path, drive, value):
    disk = mbr_primaries_disk(tmp_path)
    before = digest(disk)
    result = run_measured("deploy", "--device", disk, "--config-drive", drive, "--mbr-type", value)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "argument --mbr-type" in result.stderr.splitlines()[-1]
    assert digest(disk) == before


@pytest.mark.parametrize("value", ["0x00", "0", "0x05", "0x0f", "0x85", "0xee", "0xEE", "238", "0xef",
                                   "0x82", "0xa5", "0xbf"])
def test_mbr_type_that_changes_meaning_is_refused(tmp_path, drive, value):
    disk = mbr_primaries_disk(tmp_path)
    number = int(value, 0)
    for command in ("deploy-drive", "deploy-content"):
        line = refused(*COMMANDS[command](disk, drive), "--mbr-type", value, watch=[disk],
                       names=f"MBR type 0x{number:02x}")
        assert "choose a data type" in line


def test_mbr_type_of_plain_data_is_written_as_asked(tmp_path, drive):
    """Control: a byte that means nothing special is accepted and sfdisk reads it back."""
    disk = mbr_primaries_disk(tmp_path)
    result = run_measured(*COMMANDS["deploy-drive"](disk, drive), "--mbr-type", "0x9a")
    assert result.returncode == 0, result.stderr
    assert [p["type"] for p in sfdisk_json(disk)["partitions"]] == ["83", "83", "9a"]


@pytest.mark.parametrize("maker", ["gpt", "mbr"])
def test_unpatched_disks_deploy(tmp_path, drive, maker):
    """Control: the disks every case above starts from are deployed onto and read back
    (so each refusal is the patch's doing)."""
    path = gpt_disk(tmp_path).path if maker == "gpt" else mbr_disk(tmp_path).path
    for name, command in COMMANDS.items():
        result = run_measured(*command(path, drive))
        assert result.returncode == 0, f"{name}: {result.stderr}"
    assert "node-7" in result.stdout.decode()
