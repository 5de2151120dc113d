"""Compressed streams decompressed on all cores (partition/xzblocks.py, ordered.py).

What lands on the target must be what the system's own decompressor writes (compared with
cmp against ``xz -dc``); a fault in one block fails the deploy like any other (the disk
ends with an empty table, one line, exit 1); an index that claims more than its file holds
costs no more memory than an honest one.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from conftest import configdrive, make_gpt_disk, need_tool, run
from partition import xzblocks
from partition.copy import write_image
from test_copy import IMAGE_GUID, assert_not_the_image, disk_target

MiB = 1 << 20


@pytest.fixture(scope="module")
def disk(tmp_path_factory) -> Path:
    """A 24 MiB GPT disk with random partitions, plus text that compresses."""
    path = make_gpt_disk(tmp_path_factory.mktemp("par") / "disk.raw", IMAGE_GUID, seed=7)
    with open(path, "r+b") as fp:
        fp.seek(12 * MiB)
        fp.write(b"".join(b"line %08d of a text file\n" % i for i in range(100000)))
    return path


def xz(raw: Path, *args: str) -> Path:
    need_tool("xz")
    out = raw.with_name(raw.name + "".join(args).replace("=", "").replace("-", "") + ".xz")
    with open(out, "wb") as fp:
        subprocess.run(["xz", "-c", *args, raw], stdout=fp, check=True)
    return out


def system_xz(image: Path, tmp_path: Path) -> Path:
    ref = tmp_path / "ref.raw"
    with open(ref, "wb") as fp:
        subprocess.run(["xz", "-dc", image], stdout=fp, check=True)
    return ref


def same(a: Path, b: Path) -> bool:
    return run("cmp", a, b, check=False).returncode == 0


def blocks_of(image: Path) -> list[tuple[int, int, int]]:
    """(offset, unpadded size, plain size) of each block, as ``xz --list`` tells them."""
    text = subprocess.run(["xz", "--robot", "--list", "-vv", image], capture_output=True,
                          check=True).stdout.decode()
    rows = []
    for line in text.splitlines():
        f = line.split("\t")
        if f[0] == "block":        # block stream# block# c_off u_off c_size u_size ratio check ...
            rows.append((int(f[4]), int(f[6]), int(f[7])))
    return rows


@pytest.mark.parametrize("args", [
    ["-T2", "--block-size=1MiB"],                  # many blocks: on the pool
    ["-T2", "--block-size=200KiB", "-e", "-9"],    # a larger dictionary, odd block size
    ["-T1"],                                       # one block: the serial reader
    ["-T2", "--block-size=1MiB", "--check=crc32"],
    ["-T2", "--block-size=1MiB", "--check=sha256"],
    ["-T2", "--block-size=1MiB", "--check=none"],
])
def test_xz_blocks_equal_xz(args, disk, tmp_path):
    image = xz(disk, *args)
    pooled = xzblocks.parallel_reader(open(image, "rb"), _pread(image), image.stat().st_size, "x")
    assert (pooled is not None) == ("-T1" not in args)
    if pooled is not None:
        pooled.close()
    target = tmp_path / "out.raw"
    write_image(str(image), str(target))
    assert same(target, system_xz(image, tmp_path))


def test_xz_streams_and_padding_equal_xz(disk, tmp_path):
    """Two multi-block streams, stream padding between them and after them."""
    a, b = xz(disk, "-T2", "--block-size=1MiB"), xz(disk, "-T2", "--block-size=3MiB")
    image = tmp_path / "two.xz"
    image.write_bytes(a.read_bytes() + bytes(8) + b.read_bytes() + bytes(4))
    target = tmp_path / "out.raw"
    write_image(str(image), str(target))
    assert same(target, system_xz(image, tmp_path))
    assert target.stat().st_size == 2 * disk.stat().st_size


def test_blocks_larger_than_a_thread_takes_are_read_inline(disk, tmp_path, monkeypatch):
    """A block whose claim passes BLOCK_LIMIT is decompressed on the reading thread,
    piece by piece, between blocks that go to the pool."""
    monkeypatch.setattr(xzblocks, "BLOCK_LIMIT", 3 * MiB)
    monkeypatch.setattr(xzblocks, "BUDGET", 4 * MiB)
    image = tmp_path / "mixed.xz"
    image.write_bytes(xz(disk, "-T2", "--block-size=1MiB").read_bytes()
                      + xz(disk, "-T2", "--block-size=5MiB").read_bytes())
    target = tmp_path / "out.raw"
    write_image(str(image), str(target))
    assert same(target, system_xz(image, tmp_path))


def _pread(path: Path):
    fd = os.open(path, os.O_RDONLY)
    return lambda offset, n: os.pread(fd, n, offset)


def deploy_fails_and_wipes(image: Path, tmp_path: Path, *words: str) -> str:
    with disk_target(tmp_path) as dev:
        proc = configdrive("deploy", "--device", dev, "--image", image, check=False)
        assert proc.returncode == 1, proc.stderr
        lines = proc.stderr.decode().strip().splitlines()
        assert len(lines) == 1, lines
        for word in words:
            assert word in lines[0], lines[0]
        assert "empty partition table" in lines[0]
        assert_not_the_image(dev, empty_table=True)
        return lines[0]


def test_a_corrupt_block_fails_in_its_worker_and_wipes(disk, tmp_path):
    image = xz(disk, "-T2", "--block-size=1MiB")
    offset, unpadded, _ = blocks_of(image)[14]
    data = bytearray(image.read_bytes())
    data[offset + unpadded // 2] ^= 0x55              # inside the block's compressed data
    bad = tmp_path / "bad.xz"
    bad.write_bytes(bytes(data))
    assert subprocess.run(["xz", "-t", bad], capture_output=True).returncode != 0
    line = deploy_fails_and_wipes(bad, tmp_path, str(bad), f"byte {offset}")
    assert "corrupt xz block" in line


def _with_claims(image: Path, claim) -> bytes:
    """The file with its index rewritten: each record's plain size becomes ``claim(i,
    size)``; the CRCs and the footer's backward size are made right again."""
    data = image.read_bytes()
    backward = (struct.unpack_from("<I", data, len(data) - 8)[0] + 1) * 4
    index_at = len(data) - 12 - backward
    records = xzblocks._parse_index(data[index_at: len(data) - 12])
    index = b"\0" + xzblocks._encode_vli(len(records))
    for i, (unpadded, plain) in enumerate(records):
        index += xzblocks._encode_vli(unpadded) + xzblocks._encode_vli(claim(i, plain))
    index += bytes(-len(index) % 4)
    index += struct.pack("<I", zlib.crc32(index))
    tail = struct.pack("<I", len(index) // 4 - 1) + data[-4:-2]
    return data[:index_at] + index + struct.pack("<I", zlib.crc32(tail)) + tail + b"YZ"


PEAK_RSS = """
import resource, sys
from partition.copy import write_image
try:
    write_image(sys.argv[1], sys.argv[2])
except Exception as exc:
    print(str(exc).splitlines()[0])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


@pytest.mark.parametrize("claim", [1 << 40, (1 << 63) - 1])
def test_an_index_claiming_huge_blocks_costs_no_memory(claim, disk, tmp_path):
    """Every record claims ``claim`` plain bytes (the CRCs made right): the blocks are
    read inline, a piece at a time, and refused where liblzma finds the lie; memory
    stays that of an honest deploy."""
    image = xz(disk, "-T2", "--block-size=1MiB")
    hostile = tmp_path / "hostile.xz"
    hostile.write_bytes(_with_claims(image, lambda i, plain: claim))
    assert subprocess.run(["xz", "-t", hostile], capture_output=True).returncode != 0
    proc = subprocess.run([sys.executable, "-c", PEAK_RSS, hostile, tmp_path / "out.raw"],
                          capture_output=True, check=True, cwd=Path(__file__).parent.parent)
    message, peak_mib = proc.stdout.decode().splitlines()
    assert "xz block at compressed byte" in message and "hostile.xz" in message
    assert int(peak_mib) < 200, peak_mib


def test_an_index_claiming_more_than_the_file_is_left_to_the_serial_reader(disk, tmp_path):
    image = xz(disk, "-T2", "--block-size=1MiB")
    hostile = tmp_path / "hostile.xz"
    data = _with_claims(image, lambda i, plain: plain)
    # a record's unpadded size grown past the file: the sizes no longer add up
    hostile.write_bytes(data)
    assert xzblocks.read_streams(_pread(hostile), len(data)) is not None
    broken = bytearray(data)
    broken[-20] ^= 0xFF           # inside the index: its CRC no longer matches
    hostile.write_bytes(bytes(broken))
    assert xzblocks.read_streams(_pread(hostile), len(broken)) is None
    with pytest.raises(Exception, match="corrupt xz data"):
        write_image(str(hostile), str(tmp_path / "out.raw"))
