"""The pure-Python qcow2 reader against qemu itself.

Every fixture is made by qemu-img / qemu-io in the test; our raw output must equal
``qemu-img convert -O raw`` byte for byte (compared with cmp). Hostile images are refused
before a byte reaches the target (its hash is the same before and after).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
from pathlib import Path

import pytest

from conftest import loop_device, need_tool, out, run
from partition.writing.copy import write_image
from partition.errors import PartitionError

MiB = 1 << 20


@pytest.fixture(scope="module")
def base_raw(tmp_path_factory) -> Path:
    """A 12 MiB disk shaped like a small cloud image: random data, text-like data that
    compresses, runs of zeros, and an unaligned tail (virtual size not a cluster multiple
    is made by the individual tests)."""
    need_tool("qemu-img", "qemu-io")
    path = tmp_path_factory.mktemp("qcow2") / "base.raw"
    rnd = __import__("random").Random(1234)
    with open(path, "wb") as fp:
        fp.truncate(12 * MiB)
        fp.seek(0)
        fp.write(rnd.randbytes(300 * 1024))                    # boot area, partly random
        fp.seek(1 * MiB + 4096)
        fp.write(b"".join(
            b"line %08d of a text file\n" % i for i in range(60000)))   # compressible
        fp.seek(5 * MiB + 512)
        fp.write(rnd.randbytes(2 * MiB - 1024))                # unaligned random run
        fp.seek(9 * MiB)
        fp.write(b"\xff" * 700 * 1024)
        fp.seek(12 * MiB - 1000)
        fp.write(rnd.randbytes(1000))                          # the very last bytes
    return path


def qemu_raw(image: Path, fmt: str = "qcow2") -> Path:
    ref = image.with_suffix(".ref")
    run("qemu-img", "convert", "-f", fmt, "-O", "raw", image, ref)
    return ref


def ours(image, tmp_path: Path, name: str = "ours.raw", **kw) -> tuple[Path, dict]:
    target = tmp_path / name
    summary = write_image(str(image), str(target), **kw)
    return target, summary


def same(a: Path, b: Path) -> bool:
    return run("cmp", a, b, check=False).returncode == 0


CONVERT_VARIANTS = {
    "compat-0.10": ["-o", "compat=0.10"],
    "compat-1.1": ["-o", "compat=1.1"],
    "cluster-512": ["-o", "cluster_size=512"],
    "cluster-4k": ["-o", "cluster_size=4096"],
    "cluster-2M": ["-o", "cluster_size=2097152"],
    "zlib": ["-c"],
    "zlib-v2-4k": ["-c", "-o", "compat=0.10,cluster_size=4096"],
    "zstd": ["-c", "-o", "compression_type=zstd"],
    "zstd-cluster-2M": ["-c", "-o", "compression_type=zstd,cluster_size=2097152"],
    "extended-l2": ["-o", "extended_l2=on"],
    "extended-l2-zstd": ["-c", "-o", "extended_l2=on,compression_type=zstd,cluster_size=131072"],
}


@pytest.mark.parametrize("variant", sorted(CONVERT_VARIANTS))
def test_converted_images_equal_qemu(variant, base_raw, tmp_path):
    image = tmp_path / "img.qcow2"
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", *CONVERT_VARIANTS[variant], base_raw, image)
    target, summary = ours(image, tmp_path)
    assert same(target, qemu_raw(image))
    assert same(target, base_raw)
    assert summary["format"] == "qcow2" and summary["virtual_size"] == base_raw.stat().st_size


def test_zlib_clusters_without_libdeflate_equal_qemu(base_raw, tmp_path, monkeypatch):
    """libdeflate is only faster: without it zlib inflates every cluster, as qemu does."""
    import partition.images.qcow2
    monkeypatch.setattr(partition.images.qcow2, "_libdeflate", None)
    image = tmp_path / "img.qcow2"
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-c", base_raw, image)
    target, _ = ours(image, tmp_path)
    assert same(target, qemu_raw(image))


def test_deflate_stream_that_fills_its_cluster_without_ending():
    """qemu takes a cluster whose deflate stream fills it before the sectors its entry
    counts run out (the stream's end is never reached); libdeflate refuses such a
    stream, so zlib decides, as in qemu."""
    import zlib
    from partition.images.qcow2 import _inflate_deflate
    data = os.urandom(8192) * 4
    packer = zlib.compressobj(6, zlib.DEFLATED, -15)
    stream = packer.compress(data) + packer.flush(zlib.Z_FULL_FLUSH)   # no final block
    assert bytes(_inflate_deflate(stream, 16384)) == data[:16384]
    assert bytes(_inflate_deflate(zlib.compress(data[:4096], wbits=-15), 4096)) == data[:4096]


def qemu_io(image: Path, *commands: str) -> None:
    args = []
    for c in commands:
        args += ["-c", c]
    run("qemu-io", "-f", "qcow2", *args, image)


@pytest.mark.parametrize("options", [
    "compat=1.1",
    "compat=0.10",
    "extended_l2=on",
    "extended_l2=on,cluster_size=2097152",
    "cluster_size=512",
    "preallocation=metadata",
    "preallocation=metadata,extended_l2=on",
])
def test_written_in_place_equal_qemu(options, tmp_path):
    """Partial-cluster writes (subclusters), zero clusters (write -z, v3), discarded
    clusters, unaligned virtual size, overwrites and preallocated metadata."""
    need_tool("qemu-img", "qemu-io")
    image = tmp_path / "img.qcow2"
    run("qemu-img", "create", "-f", "qcow2", "-o", options, image, str(10 * MiB + 3 * 512))
    qemu_io(image,
            "write -P 0x5a 0 7k",                   # part of a cluster: subclusters
            "write -P 0x11 65536 4k",
            "write -P 0x22 1M 3M",
            "write -P 0x33 2M 64k",                 # overwrite inside
            "write -z 2560k 512k",                  # zero clusters over data
            "write -P 0x44 6M 1M",
            "discard 6M 256k",
            f"write -P 0x66 {10 * MiB} 1536")        # the unaligned tail
    target, _ = ours(image, tmp_path)
    assert same(target, qemu_raw(image))


@pytest.mark.parametrize("on", ["used-file", "used-loop-device", "used-4kn-loop-device"])
@pytest.mark.parametrize("options", ["cluster_size=512", "extended_l2=on", "compat=1.1"])
def test_written_in_place_onto_a_used_disk_equals_qemu(options, on, tmp_path):
    """Onto a disk full of old bytes every zero run must be zeroed, not skipped: runs of
    512 bytes (small clusters) and 2 KiB (subclusters), which share pages with data and
    are zeroed in line, beside the whole-page runs zeroed on the writer's zeroing thread;
    and data whose part-sector ends go through the page cache while its middle is written
    with O_DIRECT (on 4 KiB sectors a 512-byte cluster is a part-sector piece). What
    lands must equal qemu-img's own conversion byte for byte, past the first and before
    the last MiB as much as within them."""
    need_tool("qemu-img", "qemu-io", "cmp")
    image = tmp_path / "img.qcow2"
    size = 6 * MiB + 3 * 512
    run("qemu-img", "create", "-f", "qcow2", "-o", options, image, str(size))
    qemu_io(image,
            "write -P 0x5a 0 7k",
            "write -P 0x5b 1040k 7k",                 # past the held-back first MiB:
            "write -P 0x77 1050k 2k",                 # zeros between, inside two pages
            "write -P 0x11 1536k 1k",                 # a lone 1 KiB in a zero cluster
            "write -P 0x22 1600k 3k",
            "write -P 0x33 2049k 1M",                 # 1 KiB past a page: its ends share
                                                      # pages with the O_DIRECT middle
            "write -z 2304k 4k",                      # a zero page inside the data
            "write -P 0x44 4M 2560",
            f"write -P 0x66 {6 * MiB} 1536")          # the unaligned tail
    disk = tmp_path / "used.img"
    disk.write_bytes(b"\xaa" * (size + 4096 - size % 4096))    # whole 4 KiB sectors
    with contextlib.ExitStack() as stack:
        target = disk if on == "used-file" else stack.enter_context(
            loop_device(disk, sector_size=4096 if "4kn" in on else 512))
        write_image(str(image), str(target))
    run("cmp", "-n", str(size), disk, qemu_raw(image))


def test_data_beyond_4_gib_sparse(tmp_path):
    """Data past 4 GiB of virtual offset (64-bit offsets everywhere); the raw target file
    stays sparse (holes where the image has none)."""
    need_tool("qemu-img", "qemu-io")
    image = tmp_path / "big.qcow2"
    size = (4 << 30) + 8 * MiB
    run("qemu-img", "create", "-f", "qcow2", image, str(size))
    qemu_io(image, "write -P 0x77 0 64k", f"write -P 0x88 {(4 << 30) + 3 * MiB} 1M",
            f"write -P 0x99 {size - 4096} 4k")
    target, summary = ours(image, tmp_path)
    assert summary["virtual_size"] == size
    assert target.stat().st_size == size
    assert target.stat().st_blocks * 512 < 16 * MiB          # holes, not 4 GiB of zeros
    # Compare with qemu-io's own reading at the interesting places (a full cmp of two
    # 4 GiB files would be slow): the pattern checks are qemu's, the bytes ours.
    with open(target, "rb") as fp:
        for offset, length, byte in [(0, 65536, 0x77), ((4 << 30) + 3 * MiB, MiB, 0x88),
                                     (size - 4096, 4096, 0x99), ((4 << 30) + 2 * MiB, MiB, 0)]:
            fp.seek(offset)
            assert fp.read(length) == bytes([byte]) * length, offset
    check = out("qemu-io", "-f", "raw", "-c", f"read -P 0x88 {(4 << 30) + 3 * MiB} 1M",
                "-c", f"read -P 0x99 {size - 4096} 4k", "-c", "read -P 0 4M 128M", target)
    assert "Pattern verification failed" not in check and check.count("read ") >= 3


# -- hostile images ------------------------------------------------------------------

@pytest.fixture
def victim(tmp_path) -> Path:
    """A target disk file that must not change: random bytes, so any write shows."""
    path = tmp_path / "victim.img"
    path.write_bytes(os.urandom(16 * MiB))
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def refused(image: Path, victim: Path, *words: str) -> str:
    before = digest(victim)
    with pytest.raises(PartitionError) as info:
        write_image(str(image), str(victim))
    assert digest(victim) == before, "a refused image changed the target"
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    return message


def small_qcow2(tmp_path: Path, *create_options: str, name="img.qcow2") -> Path:
    need_tool("qemu-img", "qemu-io")
    image = tmp_path / name
    run("qemu-img", "create", "-f", "qcow2", *create_options, image, "4M")
    qemu_io(image, "write -P 0x5a 0 1M", "write -P 0x6b 2M 64k")
    return image


def patch(image: Path, offset: int, fmt: str, value: int) -> None:
    with open(image, "r+b") as fp:
        fp.seek(offset)
        fp.write(struct.pack(fmt, value))


def header_field(image: Path, offset: int, fmt: str) -> int:
    with open(image, "rb") as fp:
        fp.seek(offset)
        return struct.unpack(fmt, fp.read(struct.calcsize(fmt)))[0]


def test_backing_file_refused(tmp_path, victim):
    (tmp_path / "secret").write_bytes(b"host secret\n" * 100)
    image = tmp_path / "evil.qcow2"
    run("qemu-img", "create", "-f", "qcow2", "-b", tmp_path / "secret", "-F", "raw", image, "4M")
    refused(image, victim, "backing file", "secret", "CVE-2024-44082")


def test_external_data_file_refused(tmp_path, victim):
    image = tmp_path / "evil.qcow2"
    run("qemu-img", "create", "-f", "qcow2", "-o", f"data_file={tmp_path / 'data.raw'}", image, "4M")
    refused(image, victim, "external data file")


def test_luks_encrypted_refused(tmp_path, victim):
    image = tmp_path / "luks.qcow2"
    # qemu-img times PBKDF2 to choose an iteration count and, on a fast or busy machine,
    # sometimes measures zero CPU time and gives up ("Unable to get accurate CPU usage").
    for _ in range(10):
        made = run("qemu-img", "create", "-f", "qcow2", "--object", "secret,id=sec0,data=hunter2",
                   "-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10", image, "4M",
                   check=False)
        if made.returncode == 0:
            break
    assert made.returncode == 0, made.stderr.decode()
    refused(image, victim, "encrypted", "LUKS")


def test_truncated_refused(tmp_path, victim):
    image = small_qcow2(tmp_path)
    os.truncate(image, image.stat().st_size // 2)
    refused(image, victim, "beyond the end of the file")


def test_l1_past_eof_refused(tmp_path, victim):
    image = small_qcow2(tmp_path)
    patch(image, 40, ">Q", image.stat().st_size + 65536)
    refused(image, victim, "L1 table", "beyond the end", "byte 40")


def test_huge_l1_size_refused(tmp_path, victim):
    image = small_qcow2(tmp_path)
    patch(image, 36, ">I", 0x10000000)
    refused(image, victim, "L1 table", "qemu's limit")


def test_l2_table_in_header_refused(tmp_path, victim):
    image = small_qcow2(tmp_path)
    l1 = header_field(image, 40, ">Q")
    patch(image, l1, ">Q", (1 << 63) | 512)
    refused(image, victim, "L2 table", "points into the header", f"byte {l1}")


def test_data_cluster_in_header_refused(tmp_path, victim):
    image = small_qcow2(tmp_path)
    l2 = header_field(image, header_field(image, 40, ">Q"), ">Q") & 0x00FFFFFFFFFFFE00
    patch(image, l2, ">Q", (1 << 63) | 0x200)
    refused(image, victim, "data cluster", "points into the header")


def test_corrupt_bit_refused(tmp_path, victim):
    image = small_qcow2(tmp_path)
    patch(image, 72, ">Q", header_field(image, 72, ">Q") | 2)
    refused(image, victim, "corrupt")


def test_unknown_incompatible_feature_refused(tmp_path, victim):
    image = small_qcow2(tmp_path)
    patch(image, 72, ">Q", header_field(image, 72, ">Q") | (1 << 9))
    refused(image, victim, "unknown incompatible feature bit(s) 9")


def test_image_larger_than_target_refused(tmp_path, victim):
    image = tmp_path / "big.qcow2"
    run("qemu-img", "create", "-f", "qcow2", image, "32M")
    refused(image, victim, "exceeds", str(victim))
