"""A property, not only the absence of crashes: the qcow2 reader's work (bytes it reads
from the file, ``Qcow2.work``) stays proportional to the file's size, whatever its tables
declare. Seeds are made by qemu-img; mutations re-point L1 and L2 entries at other tables,
at the header, at each other and at random clusters (sharing and cycles: the class that
once made a 786 KB image keep a deploy busy for minutes). Every mutant is either refused
with our own error, or converted completely within the bound.
"""

from __future__ import annotations

import os
import random
import struct
from pathlib import Path

import pytest

import fuzz_tally
from conftest import need_tool, run
from partition.errors import PartitionError
from partition.images.qcow2 import COMPRESSED, OFFSET_MASK, Qcow2

MiB = 1 << 20
MUTANTS_PER_SEED = int(os.environ.get("QCOW2_WORK_MUTANTS", "80"))
# header + L1 + every L2 twice + every data byte once + compressed reads (at most 8x the
# file: partition/images/qcow2.py): a constant factor of the file, never of the virtual size.
WORK_FACTOR = 13

GiB = 1 << 30
# (qemu-img options, virtual size): large virtual disks over a few MiB of data, so that a
# table shared or repeated is multiplied by the virtual size, not by the file's.
SEEDS = {
    "64k": (["-o", "cluster_size=65536"], 64 * GiB),
    "4k-compressed": (["-c", "-o", "cluster_size=4096"], 16 * GiB),
    "512": (["-o", "cluster_size=512"], 1 * GiB),
    "extended-l2": (["-o", "extended_l2=on,cluster_size=65536"], 64 * GiB),
}


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, bytes]:
    need_tool("qemu-img")
    d = tmp_path_factory.mktemp("qcow2-work")
    made = {}
    for name, (options, size) in SEEDS.items():
        raw = d / f"{name}.raw"
        rnd = random.Random(21)
        with open(raw, "wb") as fp:          # sparse: data in the first 8 MiB and at the end
            fp.truncate(size)
            for start in range(0, 8 * MiB, 1 * MiB):
                fp.seek(start + rnd.randrange(0, 512 << 10) // 512 * 512)
                fp.write(rnd.randbytes(64 << 10) if start % (2 * MiB) else bytes(range(256)) * 256)
            fp.seek(size - MiB)
            fp.write(rnd.randbytes(MiB))
        out = d / f"{name}.qcow2"
        run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", *options, raw, out)
        raw.unlink()
        made[name] = out.read_bytes()
    return made


def tables(image: bytes) -> tuple[int, list[int], list[int], int]:
    """(cluster size, byte offsets of L1 entries, byte offsets of L2 entries, L1 offset)."""
    cluster_bits, = struct.unpack_from(">I", image, 20)
    l1_size, l1_offset = struct.unpack_from(">IQ", image, 36)
    cluster = 1 << cluster_bits
    l1_slots = [l1_offset + 8 * i for i in range(l1_size)]
    l2_slots = []
    for slot in l1_slots:
        table = struct.unpack_from(">Q", image, slot)[0] & OFFSET_MASK
        if table:
            l2_slots += [table + 8 * i for i in range(cluster // 8)]
    return cluster, l1_slots, l2_slots, l1_offset


def mutate(image: bytes, rnd: random.Random) -> bytes:
    cluster, l1_slots, l2_slots, l1_offset = tables(image)
    out = bytearray(image)
    l2_tables = [struct.unpack_from(">Q", image, s)[0] & OFFSET_MASK for s in l1_slots]
    l2_tables = [t for t in l2_tables if t] or [cluster]
    for _ in range(rnd.randint(1, 4)):
        slot = rnd.choice(l1_slots if rnd.random() < 0.4 or not l2_slots else l2_slots)
        choice = rnd.randrange(6)
        if choice == 0:                     # share an L2 table (or point data at one)
            value = rnd.choice(l2_tables) | 1 << 63
        elif choice == 1:                   # the L1 table, the header
            value = rnd.choice([l1_offset, 0, cluster]) | 1 << 63
        elif choice == 2:                   # copy another entry (shared data cluster)
            value = struct.unpack_from(">Q", image, rnd.choice(l2_slots or l1_slots))[0]
        elif choice == 3:                   # a random cluster of the file
            value = rnd.randrange(0, len(image), cluster) | 1 << 63
        elif choice == 4:                   # a compressed entry anywhere, any length
            size_bits = cluster.bit_length() - 1 - 8        # the sector count's width
            value = (COMPRESSED | rnd.randrange(cluster, len(image)) % (1 << (62 - size_bits))
                     | rnd.randrange(1 << size_bits) << (62 - size_bits))
        else:                               # every L1 entry at one table
            for s in l1_slots:
                struct.pack_into(">Q", out, s, l2_tables[0] | 1 << 63)
            continue
        struct.pack_into(">Q", out, slot, value)
    return bytes(out)


def convert(path: Path) -> tuple[str, int, int]:
    """("ok" | "refused", work, cluster size) after opening and reading every extent."""
    fd = os.open(path, os.O_RDONLY)
    qcow = None
    try:
        qcow = Qcow2(fd, os.fstat(fd).st_size, path.name)
        for _ in qcow.extents():
            pass
        return "ok", qcow.work, qcow.cluster
    except PartitionError:
        return "refused", (qcow.work if qcow else 0), 0
    finally:
        if qcow:
            qcow.close()
        os.close(fd)


@pytest.mark.parametrize("seed_name", list(SEEDS))
def test_work_is_proportional_to_file_size(seeds, tmp_path, seed_name):
    seed = seeds[seed_name]
    path = tmp_path / "m.qcow2"
    path.write_bytes(seed)
    outcome, work, cluster = convert(path)
    fuzz_tally.count_case("qcow2-work", outcome)
    assert outcome == "ok", "the qemu-img seed must convert"
    assert work <= WORK_FACTOR * len(seed) + 4 * cluster
    rnd = random.Random(seed_name)
    outcomes = []
    for _ in range(MUTANTS_PER_SEED):
        mutant = mutate(seed, rnd)
        path.write_bytes(mutant)
        outcome, work, cluster = convert(path)
        fuzz_tally.count_case("qcow2-work", outcome)
        outcomes.append(outcome)
        assert work <= WORK_FACTOR * len(mutant) + 4 * max(cluster, 1 << 16), \
            f"work {work} for a {len(mutant)}-byte file ({outcome})"
    assert "refused" in outcomes          # the mutations reach the checks


def test_all_l1_entries_sharing_one_l2_table_cost_one_read(tmp_path):
    """The issue's case, in process: refused after reading the header and the L1 table,
    never the L2 table 96,000 times (6 GB of reads before)."""
    cluster = 1 << 16
    l1_count = 96_000
    l1_offset, l2_offset = 2 * cluster, 2 * cluster + -(-l1_count * 8 // cluster) * cluster
    image = bytearray(l2_offset + 2 * cluster)
    struct.pack_into(">4sIQIIQIIQQIIQ", image, 0, b"QFI\xfb", 2, 0, 0, 16,
                     l1_count * (cluster // 8) * cluster, 0, l1_count, l1_offset, cluster, 1, 0, 0)
    for i in range(l1_count):
        struct.pack_into(">Q", image, l1_offset + 8 * i, l2_offset | 1 << 63)
    path = tmp_path / "shared.qcow2"
    path.write_bytes(image)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(PartitionError, match="overlaps qcow2 metadata") as caught:
            Qcow2(fd, len(image), path.name)
    finally:
        os.close(fd)
    assert f"at byte {l1_offset + 8}" in str(caught.value)      # found at L1 entry 1


class InMemory:
    """What partition/images/ranged.py offers the qcow2 reader, over bytes: pread, read_spans
    (every span in the file's order), follow."""

    def __init__(self, data: bytes):
        self.data = data

    def pread(self, offset: int, length: int) -> bytes:
        return self.data[offset: offset + length]

    def read_spans(self, spans, last: bool = False):
        for offset, length in sorted(set(spans)):
            yield offset, length, self.data[offset: offset + length]

    def follow(self) -> None:
        pass


def disk_pages(extents, page: int = 4096) -> dict[int, bytes]:
    """The non-zero pages of the disk that ``extents`` describe, whatever their order."""
    pages: dict[int, bytearray] = {}
    for offset, _length, data in extents:
        if data is None:
            continue
        view = memoryview(bytes(data))
        while view:
            index, at = divmod(offset, page)
            part = view[: page - at]
            pages.setdefault(index, bytearray(page))[at: at + len(part)] = part
            view, offset = view[len(part):], offset + len(part)
    return {i: bytes(p) for i, p in pages.items() if any(p)}


def convert_both(image: bytes, name: str):
    """(outcome, pages) in virtual order and in the file's order (head_first)."""
    results = []
    for head_first in (None, MiB):
        qcow = None
        try:
            reader = InMemory(image)
            qcow = Qcow2(reader, len(image), name, head_first=head_first)
            extents = list(qcow.extents() if head_first is None else qcow.extents_by_host())
            assert sum(length for _, length, _ in extents) == qcow.virtual_size
            if head_first:
                assert work_ok(qcow.work, image, qcow.cluster)
                covered = [o + n for o, n, _ in extents if o < head_first]
                assert extents[0][0] == 0 and (not covered or max(covered) >= min(head_first, qcow.virtual_size))
            results.append(("ok", disk_pages(extents)))
        except PartitionError as exc:
            results.append(("refused", str(exc)))
        finally:
            if qcow:
                qcow.close()
    return results


def work_ok(work: int, image: bytes, cluster: int) -> bool:
    return work <= WORK_FACTOR * len(image) + 4 * max(cluster, 1 << 16)


@pytest.mark.parametrize("seed_name", list(SEEDS))
def test_file_order_converts_as_virtual_order(seeds, seed_name):
    """Converted in the file's order (as over HTTP), every mutant is refused or accepted
    as in virtual order, and when accepted gives the same disk, in bounded work."""
    seed = seeds[seed_name]
    rnd = random.Random("order-" + seed_name)
    for n in range(MUTANTS_PER_SEED // 4 + 1):
        image = seed if n == 0 else mutate(seed, rnd)
        (a, pages_a), (b, pages_b) = convert_both(image, "m.qcow2")
        fuzz_tally.count_case("qcow2-file-order", a)
        assert a == b, (pages_a, pages_b)
        if a == "ok":
            assert pages_a == pages_b
