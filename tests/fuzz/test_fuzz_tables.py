"""Properties of the partition-table readers (gpt, mbr, tables and probe targets) under
fuzzing, beyond "no crash" (test_fuzz_parsers.py hunts crashes):

- every seed a real tool made (sgdisk, sfdisk, mkfs.vfat, xorriso) parses as "ok", and
  reads as sfdisk --json and sgdisk -p (blkid, for a filesystem) read it;
- a mutated table we accept reads as sfdisk reads it; the config partition we add to it
  reads back, beside the old partitions, in our reader and in sfdisk's, and the disk
  keeps its size;
- a table we refuse leaves the disk's bytes as they were;
- the bytes the readers ask for, and the reads they make, stay proportional to the
  disk's size whatever sizes, counts and offsets it declares (a work counter on the file).

Budget: TABLE_EXAMPLES cases per property (CONFIGDRIVE_FUZZ_EXAMPLES raises it).
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import fuzz_tally
import mutations as m
from conftest import loop_device, need_tool

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fuzz"))
import seeds as seedmod  # noqa: E402
from targets import run_case  # noqa: E402

from partition.tables.config_partition import create_config_partition, find_config_partition  # noqa: E402
from partition.errors import PartitionError  # noqa: E402
from partition.tables.gpt import read_gpt  # noqa: E402
from partition.tables.mbr import read_mbr  # noqa: E402
from partition.tables.probe import probe_filesystem  # noqa: E402
from partition.tables import read_table  # noqa: E402

TABLE_EXAMPLES = int(os.environ.get("CONFIGDRIVE_FUZZ_EXAMPLES", "600"))
KiB, MiB = 1 << 10, 1 << 20
GROWN = 3 * MiB        # the disk an image is written to is larger: room for a config partition

fuzz_settings = settings(max_examples=TABLE_EXAMPLES, derandomize=True, database=None, deadline=None,
                         phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
                         print_blob=True)

def seeds_without_a_config_partition(work: Path) -> list[bytes]:
    """Disks an OS image leaves (sgdisk, sfdisk): the config partition is still to be made."""
    made = []
    if seedmod._have("sgdisk"):
        disk = work / "os-gpt.img"
        disk.write_bytes(bytes(256 * KiB))
        seedmod._run("sgdisk", "--set-alignment=1", "-n", "1:40:+64", "-c", "1:root",
                     *seedmod._FIXED_GUIDS[:4], disk)
        made.append(disk.read_bytes())
    if seedmod._have("sfdisk"):
        for index, script in enumerate(("start=1, size=63, type=83\n",
                                        "start=1, size=31, type=83\nstart=32, size=200, type=5\n"
                                        "start=34, size=30, type=83\n")):
            disk = work / f"os-dos{index}.img"
            disk.write_bytes(bytes(128 * KiB))
            seedmod._run("sfdisk", "-q", disk, input=f"label: dos\nlabel-id: 0x5eed100{index}\n{script}".encode())
            made.append(disk.read_bytes())
    return made


with tempfile.TemporaryDirectory() as _work:
    _work = Path(_work)
    SEEDS = {"gpt": seedmod.gpt_seeds(_work), "mbr": seedmod.mbr_seeds(_work),
             "disk": seedmod.disk_with_drive_seeds(_work),
             "probe": seedmod.iso_seeds(_work) + seedmod.vfat_seeds(_work),
             "os": seeds_without_a_config_partition(_work)}
TABLE_SEEDS = SEEDS["gpt"] + SEEDS["mbr"] + SEEDS["disk"]      # each holds a config partition
ALL_TABLES = TABLE_SEEDS + SEEDS["os"]


class CountingFile(io.BytesIO):
    """A disk in memory that counts the reads made of it and the bytes they ask for
    (what an unbuffered read of a device allocates before it reads)."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.reads = self.requested = 0

    def read(self, size: int | None = -1) -> bytes:
        self.reads += 1
        self.requested += len(self.getbuffer()) - self.tell() if size is None or size < 0 else size
        return super().read(size)


class RangeFile(CountingFile):
    """Records where each read starts and how much it asks for."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.ranges: list[tuple[int, int]] = []

    def read(self, size: int | None = -1) -> bytes:
        self.ranges.append((self.tell(), size))
        return super().read(size)


def assert_work_bounded(fp: CountingFile, disk_bytes: int) -> None:
    """Each byte of the disk is asked for a few times at most: two sector sizes tried,
    both GPT copies, one probe per partition bounded by the partition."""
    assert fp.requested <= 8 * disk_bytes + 64 * KiB, (fp.requested, disk_bytes)
    assert fp.reads <= disk_bytes // 128 + 1000, (fp.reads, disk_bytes)


# -- what tools we did not write read --------------------------------------------------------

def sfdisk_reads(path: Path, names: bool = True) -> tuple[str, list[tuple]] | None:
    """(label, [(number, start, size, type, name)]) as sfdisk reads ``path``, or None.

    One difference is by design: an EBR whose logical partition is empty still takes a
    number in sfdisk ("omitting empty partition (5)"), not in the kernel
    (block/partitions/msdos.c counts data partitions only), whose numbers we follow;
    then logical partitions are compared without their numbers."""
    done = subprocess.run(["sfdisk", "--json", str(path)], capture_output=True)
    text = done.stdout.decode()
    if done.returncode != 0 or "{" not in text:
        return None
    theirs = json.loads(text[text.index("{"):])["partitiontable"]
    renumbered = "omitting empty partition" in text + done.stderr.decode()
    parts = []
    for p in theirs.get("partitions", []):
        if theirs["label"] == "dos" and (p["type"] in ("5", "f", "85") or p["size"] == 0):
            continue    # the extended container, or an entry of size 0: no partition to Linux
        if theirs["label"] == "gpt" and p["type"] == str(uuid.UUID(int=0)).upper():
            continue    # UEFI 2.10 5.3.3: a zero type GUID marks an unused entry (Linux agrees)
        number = int(re.search(r"(\d+)$", p["node"]).group(1))
        parts.append((0 if renumbered and number > 4 else number, p["start"], p["size"],
                      p["type"].upper().rjust(2, "0"), p.get("name", "") if names else ""))
    return theirs["label"], parts, renumbered


def we_read(table, names: bool = True, renumbered: bool = False) -> tuple[str, list[tuple], bool]:
    ss = table.sector_size
    parts = [(0 if renumbered and p.number > 4 else p.number, p.start // ss, p.size // ss,
              p.type.upper().removeprefix("0X"), p.name if names else "")
             for p in table.partitions]
    return table.kind, parts, renumbered


def same_as_sfdisk(path: Path, table, names: bool = True, exact: bool = True) -> None:
    """sfdisk reads what we read. Not ``exact``, two differences are by design, where we
    read as Linux does: sfdisk takes a GPT without a protective MBR (Linux, efi.c
    is_pmbr_valid, does not: sector 0 is then an MBR, maybe empty); sfdisk follows an
    EBR chain on through a sector without the 55 AA signature, where Linux stops
    (msdos.c parse_extended), so our logical partitions need only be sfdisk's first."""
    theirs = sfdisk_reads(path, names)
    assert theirs is not None, "sfdisk cannot read a table we accept"
    ours = we_read(table, names, renumbered=theirs[2])
    if not exact and theirs[0] == "gpt" and table.kind == "dos":
        assert not table.mbr.is_protective
        return
    if exact or table.kind != "dos":
        assert theirs == ours
    else:
        primaries = [p for p in ours[1] if 0 < p[0] <= 4]
        assert [p for p in theirs[1] if 0 < p[0] <= 4] == primaries
        logicals = [p for p in ours[1] if not 0 < p[0] <= 4]
        assert [p for p in theirs[1] if not 0 < p[0] <= 4][:len(logicals)] == logicals


SGDISK_LINE = re.compile(r"^\s+(\d+)\s+(\d+)\s+(\d+)\s+\S+ \S+\s+\S+\s\s(.*)$", re.M)


def sgdisk_reads(path) -> list[tuple]:
    done = subprocess.run(["sgdisk", "-p", str(path)], capture_output=True, check=True)
    return [(int(n), int(a), int(b) - int(a) + 1, name)
            for n, a, b, name in SGDISK_LINE.findall(done.stdout.decode())]


def read(data: bytes, sector_size: int | None = None):
    fp = CountingFile(data)
    table = read_table(fp, len(data), sector_size, source="fuzz.img")
    assert_work_bounded(fp, len(data))
    return table


# -- seeds: made by real tools, read as they read them ---------------------------------------

def test_every_table_and_probe_seed_parses_as_ok():
    """Not "ok or refused": a table sgdisk or sfdisk made that we refuse is a bug. Each
    seed is read as a file (sector size found from the table) and as a device of the
    sector size it was made for; read as the other size it is rightly refused (the
    kernel would not see a GPT made for other sectors; a DOS chain then points past the
    disk). Every seed holds a config partition, found by its identity."""
    assert SEEDS["gpt"] and SEEDS["mbr"] and SEEDS["disk"] and SEEDS["probe"]
    for kind, reader, seeds in (("gpt", read_gpt, SEEDS["gpt"]), ("dos", read_mbr, SEEDS["mbr"]),
                                ("gpt", read_gpt, SEEDS["disk"])):
        for index, data in enumerate(seeds):
            table = read(data)
            assert table.kind == kind and not table.notes, f"{kind} seed {index}"
            assert we_read(read(data, table.sector_size)) == we_read(table)
            assert reader(io.BytesIO(data), len(data), table.sector_size) is not None, f"{kind} seed {index}"
            assert find_config_partition(io.BytesIO(data), table, source="seed") is not None
    for index, data in enumerate(SEEDS["os"]):
        table = read(data)
        assert table is not None and find_config_partition(io.BytesIO(data), table, source="seed") is None
    for index, data in enumerate(SEEDS["probe"]):
        assert run_case("probe", data) == "ok", f"probe seed {index}"
        assert probe_filesystem(io.BytesIO(data)) is not None, f"probe seed {index}"


def test_table_seeds_read_as_sfdisk_and_sgdisk_read_them(tmp_path):
    need_tool("sfdisk", "sgdisk")
    for index, data in enumerate(ALL_TABLES):
        table = read(data)
        assert table is not None and table.partitions, f"seed {index}"
        path = tmp_path / f"seed{index}.img"
        path.write_bytes(data)
        if table.sector_size == 512:
            same_as_sfdisk(path, table)
            if table.kind == "gpt":
                assert sgdisk_reads(path) == [(n, a, s, name) for n, a, s, _, name in we_read(table)[1]]
        else:       # sfdisk and sgdisk take a file's sectors as 512 bytes: a 4096-byte loop device
            with loop_device(path, sector_size=table.sector_size) as dev:
                same_as_sfdisk(Path(dev), table)
                assert sgdisk_reads(dev) == [(n, a, s, name) for n, a, s, _, name in we_read(table)[1]]


def test_probe_seeds_read_as_blkid_reads_them(tmp_path):
    need_tool("blkid")
    for index, data in enumerate(SEEDS["probe"]):
        path = tmp_path / f"fs{index}.img"
        path.write_bytes(data)
        text = subprocess.run(["blkid", "-p", "-o", "export", str(path)], capture_output=True).stdout.decode()
        theirs = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        fs = probe_filesystem(io.BytesIO(data))
        assert fs is not None and (fs.type, fs.label) == (theirs["TYPE"], theirs.get("LABEL", "")), index


# -- mutated tables ---------------------------------------------------------------------------

TABLES = (m.mutated(ALL_TABLES, [(440, 2048), (4096, 8192)], fix=m.fix_gpt_crcs)
          | m.field_mutated(SEEDS["gpt"] + SEEDS["disk"] + SEEDS["os"][:1], m.gpt_fields, fix=m.fix_gpt_crcs)
          | m.field_mutated(SEEDS["mbr"] + SEEDS["os"][1:], m.mbr_fields))


def trusted_whole(table) -> bool:
    """Both GPT copies passed every check. When one did not, we read the other, while
    sfdisk (and the kernel) read a primary header whose CRC is right even where its
    array lies inside the usable space or its entries past the disk: their view and
    ours then differ by design, and ours is what the deploy rewrites both copies to."""
    return table.kind == "dos" or (table.gpt.primary_ok and table.gpt.backup_ok)


@fuzz_settings
@given(TABLES)
def test_an_accepted_table_reads_as_sfdisk_reads_it(data):
    with tempfile.TemporaryDirectory() as work:
        try:
            table = read(data)
        except PartitionError:
            fuzz_tally.count_case("tables-vs-sfdisk", "refused")
            return
        fuzz_tally.count_case("tables-vs-sfdisk", "ok")
        if table is None or table.sector_size != 512 or not trusted_whole(table):
            return
        fuzz_tally.count_case("tables-vs-sfdisk-compared", "ok")
        path = Path(work) / "t.img"
        path.write_bytes(data)
        # Names are compared on the seeds: a mutated name's invalid UTF-16 is shown
        # differently by each tool.
        same_as_sfdisk(path, table, names=False, exact=False)


def place(disk: bytes, exact: bool = False) -> str:
    """What deploy does with the disk's table once the image is on it: find the config
    partition or add one; then hold the result to the properties in the docstring."""
    fp = CountingFile(disk)
    try:
        table = read_table(fp, len(disk), None, source="fuzz.img")
        if table is None:
            return "no table"
        before = we_read(table)[1]
        if find_config_partition(fp, table, source="fuzz.img") is not None:
            return "found"
        made = create_config_partition(fp, table, size=64 * KiB, source="fuzz.img")
    except PartitionError:
        assert fp.getvalue() == disk, "refused, yet the disk changed"
        assert_work_bounded(fp, len(disk))
        return "refused"
    assert_work_bounded(fp, len(disk))
    after = fp.getvalue()
    assert len(after) == len(disk), "the disk grew"
    again = read(after, table.sector_size)
    part, ss = made.partition, table.sector_size
    added = (part.number, part.start // ss, part.size // ss, part.type.upper().removeprefix("0X"), part.name)
    assert we_read(again)[1] == sorted(before + [added])
    if ss == 512:
        with tempfile.TemporaryDirectory() as work:
            path = Path(work) / "placed.img"
            path.write_bytes(after)
            same_as_sfdisk(path, again, names=exact, exact=exact)
    return "created"


def test_a_config_partition_added_to_each_os_seed_reads_back_in_sfdisk():
    for index, data in enumerate(SEEDS["os"]):
        assert place(data + bytes(GROWN), exact=True) == "created", f"os seed {index}"


@fuzz_settings
@given(TABLES, st.booleans())
def test_placing_a_config_partition_refuses_untouched_or_round_trips(data, grown):
    """On the image as it is, or on a disk larger than the image (``grown``)."""
    outcome = place(bytes(data) + bytes(GROWN if grown else 0))
    fuzz_tally.count_case(f"tables-placed-{outcome.replace(' ', '-')}", "refused" if outcome == "refused" else "ok")


@fuzz_settings
@given(m.mutated(SEEDS["probe"], [(32768, 38912), (0, 65536)]), st.integers(0, 64))
def test_a_probe_reads_only_inside_its_partition(data, sectors_before):
    """A filesystem's offsets (root directory, descriptors) come from its bytes: probed
    as a partition, it is read inside the partition only, and reads as it would alone."""
    start = sectors_before * 512
    fp = RangeFile(bytes(start) + bytes(data) + b"\xa5" * (64 * KiB))
    found = probe_filesystem(fp, start, len(data))
    outside = [(at, size) for at, size in fp.ranges if not (start <= at and at + size <= start + len(data))]
    assert not outside, f"reads outside the partition [{start}, {start + len(data)}): {outside[:3]}"
    assert found == probe_filesystem(io.BytesIO(bytes(data)))
    fuzz_tally.count_case("probe-in-partition", "ok")
