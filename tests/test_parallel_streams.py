"""Compressed streams decompressed on all cores (partition/xzblocks.py, ordered.py).

What lands on the target must be what the system's own decompressor writes (compared with
cmp against ``xz -dc``); a fault in one block fails the deploy like any other (the disk
ends with an empty table, one line, exit 1); an index that claims more than its file holds
costs no more memory than an honest one.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from conftest import ROOT, configdrive, make_gpt_disk, need_tool, run
from partition.images import xzblocks
from partition.images.image import Buffers
from partition.writing.copy import write_image
from test_copy import IMAGE_GUID, assert_not_the_image, disk_target

sys.path.insert(0, str(ROOT / "benchmarks"))
from common import RangeServer  # noqa: E402 (the benchmarks' server: one for both)

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
    pooled = xzblocks.parallel_reader(open(image, "rb"), _pread(image), image.stat().st_size, "x",
                                      256 * MiB)
    assert (pooled is not None) == ("-T1" not in args)
    if pooled is not None:
        pooled.close()
    target = tmp_path / "out.raw"
    write_image(str(image), str(target), checksum="sha256:" + sha256(image))   # hashed as read
    assert same(target, system_xz(image, tmp_path))


def sha256(path: Path) -> str:
    import hashlib
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_xz_streams_and_padding_equal_xz(disk, tmp_path):
    """Two multi-block streams, stream padding between them and after them."""
    a, b = xz(disk, "-T2", "--block-size=1MiB"), xz(disk, "-T2", "--block-size=3MiB")
    image = tmp_path / "two.xz"
    image.write_bytes(a.read_bytes() + bytes(8) + b.read_bytes() + bytes(4))
    target = tmp_path / "out.raw"
    write_image(str(image), str(target))
    assert same(target, system_xz(image, tmp_path))
    assert target.stat().st_size == 2 * disk.stat().st_size


def test_blocks_larger_than_a_thread_takes_are_read_inline(disk, tmp_path):
    """A block claiming over half the budget is decompressed on the reading thread,
    piece by piece, between blocks that go to the pool."""
    image = tmp_path / "mixed.xz"
    image.write_bytes(xz(disk, "-T2", "--block-size=1MiB").read_bytes()
                      + xz(disk, "-T2", "--block-size=5MiB").read_bytes())
    target = tmp_path / "out.raw"
    write_image(str(image), str(target), buffers=Buffers(decompress_budget=6 * MiB))
    assert same(target, system_xz(image, tmp_path))


def _pread(path: Path):
    fd = os.open(path, os.O_RDONLY)
    return lambda offset, n: os.pread(fd, n, offset)


def deploy_fails_and_wipes(image: Path, tmp_path: Path, *words: str) -> str:
    """A deploy of ``image`` fails in one line. As a command: exit 1, and the disk is not
    the image (a fault found while the first MiB is still being read leaves the disk
    untouched: refused before the target is touched). With little read ahead (one MiB
    at a time, a pool budget of two 3 MiB frames), the fault comes after the disk is
    touched: it ends with an empty table."""
    with disk_target(tmp_path) as dev:
        proc = configdrive("deploy", "--device", dev, "--image", image, check=False)
        assert proc.returncode == 1, proc.stderr
        lines = proc.stderr.decode().strip().splitlines()
        assert len(lines) == 1, lines
        assert all(word in lines[0] for word in words), lines[0]
        assert_not_the_image(dev, empty_table="empty partition table" in lines[0])
    from partition.errors import PartitionError
    with disk_target(tmp_path) as dev:
        with pytest.raises(PartitionError) as info:
            write_image(str(image), dev, buffers=Buffers(queue_depth=1, read_size=MiB,
                                                         decompress_budget=8 * MiB))
        line = str(info.value)
        assert "\n" not in line and all(word in line for word in words), line
        assert "empty partition table" in line
        assert_not_the_image(dev, empty_table=True)
    return line


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


# VmHWM, not ru_maxrss: across a fork and exec ru_maxrss keeps the parent's (pytest's).
PEAK_RSS = """
import sys
from partition.writing.copy import write_image
try:
    write_image(sys.argv[1], sys.argv[2])
except Exception as exc:
    print(str(exc).splitlines()[0])
status = open("/proc/self/status").read()
print(int(status.split("VmHWM:")[1].split()[0]) // 1024)
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



def test_many_streams_cost_reads_bounded_by_a_constant_not_by_their_count(disk, tmp_path):
    """Each stream costs a read at its end (its padding, its footer, its index): a file of
    many tiny streams is left to the serial reader after STREAM_LIMIT of them, having read
    a bounded number of bytes (200,000 empty streams once read 13 GB for a 6.4 MB file)."""
    import lzma
    empty = lzma.compress(b"", format=lzma.FORMAT_XZ)          # one 32-byte stream
    image = tmp_path / "streams.xz"
    image.write_bytes(xz(disk, "-T2", "--block-size=1MiB").read_bytes() + empty * 200_000)
    fd = os.open(image, os.O_RDONLY)
    read = []
    try:
        streams = xzblocks.read_streams(lambda at, n: read.append(n) or os.pread(fd, n, at),
                                        image.stat().st_size)
    finally:
        os.close(fd)
    assert streams is None
    assert sum(read) <= xzblocks.STREAM_LIMIT * (xzblocks.PADDING_LIMIT + 64) + xzblocks.INDEX_LIMIT
    target = tmp_path / "out.raw"
    write_image(str(image), str(target))                  # the serial reader takes it whole
    assert same(target, system_xz(image, tmp_path))


# -- xz over http(s): the index read by Range requests ----------------------------------

class IgnoresRanges(RangeServer):
    """A server that says it serves ranges (Accept-Ranges), then answers every Range
    request with the whole file, as some misconfigured caches do."""

    def serve(self, handler) -> None:
        if handler.headers.get("Range"):
            del handler.headers["Range"]
        super().serve(handler)


class RefusesRanges(RangeServer):
    """A server that says it serves ranges, then answers every Range request with
    ``status`` (416 and 403 from caches and proxies, 503 from one overloaded), or, with
    ``stall``, with nothing for that many seconds."""
    status, stall = 416, 0.0

    def serve(self, handler) -> None:
        if handler.headers.get("Range"):
            self.requests.append(handler.headers["Range"])
            if self.stall:
                time.sleep(self.stall)
            try:
                handler.send_error(self.status)
            except BrokenPipeError:
                pass            # the client gave up waiting
            return
        super().serve(handler)


def served(image: Path, tmp_path: Path, kind=RangeServer) -> RangeServer:
    """A ``kind`` of server on 127.0.0.1 with a copy of ``image`` in its root."""
    root = tmp_path / "www"
    root.mkdir()
    (root / image.name).write_bytes(image.read_bytes())
    return kind(root)


def deploy_url(server: RangeServer, image: Path, target: Path, client: str):
    """``configdrive deploy`` of ``image`` from ``server``, counted under ``client``."""
    with server as base:
        return configdrive("deploy", "--create", "--device", target, "--image",
                           f"{base}/{image.name}?{client}", "--json")


def test_xz_blocks_over_http_are_found_by_two_range_requests(disk, tmp_path):
    """An xz file of many blocks from a server that serves ranges: its index is read
    from the file's end by Range requests (the last 64 KiB, then the stream header), the
    blocks are decoded apart, and what lands is what `xz -dc` writes; the server sends
    the file once, plus that window."""
    image = xz(disk, "-T2", "--block-size=1MiB")
    size = image.stat().st_size
    server = served(image, tmp_path)
    target = tmp_path / "out.raw"
    deploy_url(server, image, target, "node")
    assert same(target, system_xz(image, tmp_path))
    assert server.requests == [None, f"bytes={size - (64 << 10)}-{size - 1}", "bytes=0-11"]
    assert server.clients["node"] == {"requests": 3, "bytes": size + (64 << 10) + 12}


def test_a_server_ignoring_ranges_is_not_read_twice(disk, tmp_path):
    """A server that claims ranges but answers the index's Range request with the whole
    file: that answer is closed unread and the file is decompressed serially from the
    first answer (skipping to the index's offset would download the file twice)."""
    image = tmp_path / "four.xz"              # four streams: large beside socket buffers
    image.write_bytes(xz(disk, "-T2", "--block-size=1MiB").read_bytes() * 4)
    size = image.stat().st_size
    server = served(image, tmp_path, IgnoresRanges)
    target = tmp_path / "out.raw"
    with server as base:       # the library: four disks in a row are no disk to refresh
        write_image(f"{base}/{image.name}?node", str(target))
    assert same(target, system_xz(image, tmp_path))
    assert server.clients["node"]["requests"] == 2
    # The file once, and what the closed answer had pushed into the sockets' buffers
    # (a few MiB on loopback), not the file again.
    assert server.clients["node"]["bytes"] < size + size // 2


@pytest.mark.parametrize("status", [416, 403, 503])
def test_a_server_refusing_ranges_is_read_serially(status, disk, tmp_path):
    """The index's Range answered with an error: the deploy goes on from the download it
    has, serially, in one Range request (none retried: a 503 there once cost the
    download's retries and 31 s of backoff, then failed the deploy)."""
    image = xz(disk, "-T2", "--block-size=1MiB")
    server = served(image, tmp_path, type("Refuses", (RefusesRanges,), {"status": status}))
    target = tmp_path / "out.raw"
    deploy_url(server, image, target, "node")
    assert same(target, system_xz(image, tmp_path))
    assert len(server.requests) == 2 and server.requests[0] is None


def test_a_stalled_range_costs_the_index_reads_deadline_not_the_downloads(disk, tmp_path,
                                                                             monkeypatch):
    """A Range answer that never comes: abandoned at RangePreads.DEADLINE (shortened here
    to 1 s; 30 s in use), the file read serially. It once waited the timeout of every
    retry, minutes, then failed the deploy."""
    from partition.images import source
    monkeypatch.setattr(source.RangePreads, "DEADLINE", 1.0)
    image = xz(disk, "-T2", "--block-size=1MiB")
    server = served(image, tmp_path, type("Stalls", (RefusesRanges,), {"stall": 5.0}))
    target = tmp_path / "out.raw"
    with server as base:        # in this process, where the deadline is shortened
        write_image(f"{base}/{image.name}?node", str(target))
    assert same(target, system_xz(image, tmp_path))
    assert len(server.requests) == 2


def test_many_streams_over_http_cost_range_reads_within_a_budget(disk, tmp_path):
    """Each stream costs a 64 KiB window at its end: a file of many small streams is
    left to the serial reader once INDEX_READS bytes have been asked for, not after a
    request and a window for each of its streams."""
    import lzma
    from partition.images.image import INDEX_READS
    empty = lzma.compress(b"", format=lzma.FORMAT_XZ)          # one 32-byte stream
    image = tmp_path / "streams.xz"
    image.write_bytes(xz(disk, "-T2", "--block-size=1MiB").read_bytes() + empty * 5_000)
    size = image.stat().st_size
    server = served(image, tmp_path)
    target = tmp_path / "out.raw"
    deploy_url(server, image, target, "node")
    assert same(target, system_xz(image, tmp_path))
    seen = server.clients["node"]
    assert seen["bytes"] <= size + INDEX_READS
    assert seen["requests"] <= 1 + INDEX_READS // (64 << 10)


def zstd_of(raw: Path, tmp_path: Path, how: str) -> Path:
    """``how``: "pzstd" (frames of its own, each after a skippable frame), "joined"
    (``zstd`` run on pieces, concatenated: frames with their content size), "T0" (one
    frame), "stdin" (one frame without its content size)."""
    need_tool("zstd", "pzstd")
    out = tmp_path / f"{how}.zst"
    data = raw.read_bytes()
    if how == "pzstd":
        run("pzstd", "-q", "-f", "-p", "2", raw, "-o", out)
    elif how == "joined":
        parts = []
        for i in range(0, len(data), 3 * MiB):
            piece = tmp_path / f"piece{i}"
            piece.write_bytes(data[i: i + 3 * MiB])
            parts.append(run("zstd", "-q", "-c", "--content-size", piece).stdout)
        out.write_bytes(b"".join(parts))
    elif how == "T0":
        out.write_bytes(run("zstd", "-q", "-T0", "-c", raw).stdout)
    else:
        out.write_bytes(run("zstd", "-q", "-c", input=data).stdout)
    return out


def system_zstd(image: Path, tmp_path: Path) -> Path:
    ref = tmp_path / "ref.raw"
    ref.write_bytes(run("zstd", "-dc", image).stdout)
    return ref


@pytest.mark.parametrize("how", ["pzstd", "joined", "T0", "stdin"])
def test_zstd_frames_equal_zstd(how, disk, tmp_path):
    from partition.images import zstdframes
    from partition.images.image import _Peek
    image = zstd_of(disk, tmp_path, how)
    pooled = zstdframes.parallel_reader(_Peek(open(image, "rb")), "x", 256 * MiB)
    assert (pooled is not None) == (how != "stdin")   # T0: one frame of 24 MiB, a job
    target = tmp_path / "out.raw"
    write_image(str(image), str(target), checksum="sha256:" + sha256(image))
    assert same(target, system_zstd(image, tmp_path))


def test_zstd_frames_over_a_thread_limit_are_read_inline(disk, tmp_path):
    image = tmp_path / "mixed.zst"
    image.write_bytes(zstd_of(disk, tmp_path, "joined").read_bytes()
                      + zstd_of(disk, tmp_path, "stdin").read_bytes()
                      + zstd_of(disk, tmp_path, "pzstd").read_bytes())
    target = tmp_path / "out.raw"
    write_image(str(image), str(target), buffers=Buffers(decompress_budget=10 * MiB))
    assert same(target, system_zstd(image, tmp_path))
    with open(image, "rb") as fp:       # and from a pipe: no index needed
        subprocess.run([sys.executable, "-c", "import sys; from partition.writing.copy import "
                        "write_image; write_image('-', sys.argv[1])", tmp_path / "piped.raw"],
                       stdin=fp, check=True, cwd=Path(__file__).parent.parent)
    assert same(tmp_path / "piped.raw", target)


def test_a_corrupt_zstd_frame_fails_in_its_worker_and_wipes(disk, tmp_path):
    image = zstd_of(disk, tmp_path, "joined")
    data = bytearray(image.read_bytes())
    from partition.images.zstdframes import content_size
    second = data.index(b"\x28\xb5\x2f\xfd", 8)
    for _ in range(2):
        second = data.index(b"\x28\xb5\x2f\xfd", second + 8)
    for _ in range(20):        # from the fifth frame (at 12 MiB): one with a block of data
        second = data.index(b"\x28\xb5\x2f\xfd", second + 8)
        first_block = second + content_size(bytes(data[second: second + 18]))[0]
        if int.from_bytes(data[first_block: first_block + 3], "little") >> 3 > 100:
            break
    data[first_block + 3 + 50] ^= 0x55                 # inside its first block's payload
    bad = tmp_path / "bad.zst"
    bad.write_bytes(bytes(data))
    assert run("zstd", "-t", bad, check=False).returncode != 0
    line = deploy_fails_and_wipes(bad, tmp_path, str(bad), f"byte {second}")
    assert "corrupt zstd frame" in line


@pytest.mark.parametrize("first", [True, False])
def test_a_zstd_frame_claiming_a_huge_size_costs_no_memory(first, disk, tmp_path):
    """Frame headers claiming 4 GiB - 1 (the 4-byte content size field's most): every
    frame's (the first too large: the serial reader), or all but the first's (those read
    inline a piece at a time); refused where the library finds the lie."""
    import struct as st
    image = zstd_of(disk, tmp_path, "joined")
    data = bytearray(image.read_bytes())
    fd = data[4]
    assert fd >> 6 == 2                      # 4-byte content size, as zstd writes for 3 MiB
    hostile = tmp_path / "hostile.zst"
    # the same frames, each header's content size claiming 4 GiB - 1 (the 4-byte field's most)
    at = 0
    while True:
        at = data.find(b"\x28\xb5\x2f\xfd", at)
        if at < 0:
            break
        if data[at + 4] == fd and (at or first):
            single = (fd >> 5) & 1
            field = at + 5 + (0 if single else 1)
            data[field: field + 4] = st.pack("<I", 0xFFFFFFFF)
        at += 4
    hostile.write_bytes(bytes(data))
    assert run("zstd", "-t", hostile, check=False).returncode != 0
    proc = subprocess.run([sys.executable, "-c", PEAK_RSS, hostile, tmp_path / "out.raw"],
                          capture_output=True, check=True, cwd=Path(__file__).parent.parent)
    message, peak_mib = proc.stdout.decode().splitlines()
    assert "hostile.zst" in message and "compressed byte" in message, message
    assert "corrupt zstd" in message or "holds" in message, message
    assert int(peak_mib) < 200, peak_mib


def test_a_frame_of_empty_blocks_is_charged_what_its_chunks_cost(tmp_path):
    """A frame without a content size (as pzstd writes, after a skippable frame) made of
    200,000 empty raw blocks: 600 KB of file, but each 3-byte block header collected is a
    Python object. Charged at what it costs, the frame goes inline once that passes the
    budget, and memory stays under it (charged only its 3 bytes, 200,000 of them were
    held at once: 9 MB against a 2 MiB budget)."""
    import io
    import tracemalloc
    from partition.images import zstdframes
    frame = struct.pack("<I", 0xFD2FB528) + b"\x00\x00" + bytes(3) * 200_000 + b"\x01\x00\x00"
    image = tmp_path / "blocks.zst"
    image.write_bytes(struct.pack("<II", 0x184D2A50, 0) + frame + frame)
    assert run("zstd", "-t", image, check=False).returncode == 0          # a valid stream
    budget = 2 * MiB
    with open(image, "rb") as fp:
        tracemalloc.start()
        try:
            reader = zstdframes.parallel_reader(fp, "blocks.zst", budget)
            assert reader is not None
            assert reader.read() == b""                     # both frames hold nothing
            reader.close()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 2 * budget, peak


def test_a_frame_of_empty_blocks_costs_reads_by_its_bytes_not_by_its_blocks(tmp_path):
    """The walker reads headers from a buffer of REFILL bytes: a frame of 200,000 empty
    3-byte blocks is a few hundred reads of the stream, not one per block (one by one, 40
    million of them took about 90 s), and decompresses to what `zstd -dc` writes."""
    from partition.images import zstdframes
    frame = struct.pack("<I", 0xFD2FB528) + b"\x00\x00" + bytes(3) * 200_000 + b"\x01\x00\x00"
    data = struct.pack("<II", 0x184D2A50, 0) + frame + frame
    image = tmp_path / "blocks.zst"
    image.write_bytes(data)
    reads = []

    class Counted(io.BufferedReader):
        def read(self, n=-1):
            reads.append(n)
            return super().read(n)
    with Counted(io.FileIO(image)) as fp:
        reader = zstdframes.parallel_reader(fp, "blocks.zst", 256 * MiB)
        assert reader is not None
        assert reader.read() == run("zstd", "-dc", image).stdout == b""
        reader.close()
    assert len(reads) <= len(data) // zstdframes.REFILL + 16, len(reads)


def test_jobs_in_flight_are_charged_what_a_job_costs_not_only_their_bytes():
    """Units claiming no bytes (an xz block of one plain byte claims a few): each job in
    flight still costs a future, a work item and its closure. Charged JOB_COST each, so a
    1 MiB budget starts at most 256 of 10,000 at once (charged their bytes alone, every
    one of them was queued: a 9 MB xz file of 300,000 one-byte blocks took 682 MiB)."""
    from partition.images.ordered import JOB_COST, Job, OrderedPieces
    drawn = 0

    def units():
        nonlocal drawn
        for _ in range(10_000):
            drawn += 1
            yield Job(lambda: [b"x"], 0)

    budget = 1 * MiB
    reader = OrderedPieces(units(), budget)
    try:
        assert reader.read(1) == b"x"
        assert drawn <= budget // JOB_COST + 2, drawn
        assert len(reader.read()) == 1 and drawn <= budget // JOB_COST + 3
    finally:
        reader.close()

