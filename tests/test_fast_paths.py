"""The fast paths of the deploy writer land exactly what the slow ones did: a sparse raw
file read by its data extents (SEEK_DATA/SEEK_HOLE), and a qcow2 read over HTTP by Range
requests with no spool. Judged by `cmp` and `qemu-img compare` against the source or
against `qemu-img convert`'s output, on used loop devices (every byte 0xAA before).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import configdrive, loop_device, need_tool, run
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from common import RangeServer  # noqa: E402 (the benchmark's server: one for both)
from partition.writing.copy import write_image
from test_qcow2 import CONVERT_VARIANTS, base_raw, qemu_raw  # noqa: F401 (a fixture)

MiB = 1 << 20


def used_disk(path: Path, size: int) -> Path:
    path.write_bytes(b"\xaa" * size)
    return path


# (offset, length) of data written into an otherwise sparse file: odd offsets, a piece
# crossing a 4 MiB read boundary, runs of zeros inside data, data ending the file.
SPARSE_LAYOUTS = {
    "odd-offsets": (13 * MiB, [(1 * MiB + 7, 5000), (2 * MiB - 3, 70001), (4 * MiB - 12345, 3 * MiB),
                               (9 * MiB + 511, 1), (13 * MiB - 4097, 4097)]),
    "data-with-zero-runs": (9 * MiB, [(1 * MiB, 6 * MiB + 1)]),
    "all-holes-but-the-ends": (33 * MiB, [(0, 4096), (33 * MiB - 100, 100)]),
    "not-sparse": (6 * MiB, [(0, 6 * MiB)]),
}


def make_sparse(path: Path, size: int, pieces, seed: int) -> Path:
    rnd = random.Random(seed)
    with open(path, "wb") as fp:
        fp.truncate(size)
        for offset, length in pieces:
            data = bytearray(rnd.randbytes(length))
            if length > 2 * MiB:              # zeros inside the data extent too
                data[length // 3: length // 3 + MiB + 3] = bytes(MiB + 3)
            fp.seek(offset)
            fp.write(data)
    return path


@pytest.mark.parametrize("layout", SPARSE_LAYOUTS)
def test_sparse_raw_file_lands_byte_for_byte(tmp_path, layout):
    need_tool("cmp", "qemu-img")
    size, pieces = SPARSE_LAYOUTS[layout]
    source = make_sparse(tmp_path / "sparse.raw", size, pieces, seed=len(layout))
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    backing = used_disk(tmp_path / "disk", size + 2 * MiB)
    with loop_device(backing) as dev:
        summary = write_image(str(source), dev, checksum="sha256:" + digest)
        run("cmp", "-n", str(size), dev, source)
        with open(dev, "rb") as fp:
            fp.seek(size)
            assert fp.read(MiB) == b"\xaa" * MiB          # past the image: untouched
    assert summary["checksum"]["verified"] and summary["virtual_size"] == size
    created = tmp_path / "new.img"
    write_image(str(source), str(created))
    run("qemu-img", "compare", "-f", "raw", "-F", "raw", source, created)


def test_sparse_raw_file_with_a_wrong_checksum_fails_before_the_head(tmp_path):
    size, pieces = SPARSE_LAYOUTS["odd-offsets"]
    source = make_sparse(tmp_path / "sparse.raw", size, pieces, seed=3)
    target = used_disk(tmp_path / "disk", size)
    with pytest.raises(Exception, match="checksum mismatch"):
        write_image(str(source), str(target), checksum="sha256:" + "0" * 64)
    assert target.read_bytes()[:MiB] != source.read_bytes()[:MiB]


# -- qcow2 over HTTP by Range requests ------------------------------------------------------

class LyingServer(RangeServer):
    """With ``lie``, every bounded Range answer (never the download) flips its last byte."""
    lie = False

    def body(self, piece, start, end, bounded):
        if self.lie and bounded and start + len(piece) == end:
            return piece[:-1] + bytes([piece[-1] ^ 1])
        return piece


@pytest.fixture
def range_server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    server = LyingServer(root)
    with server as url:
        yield server, url


@pytest.fixture
def small_tmpdir(tmp_path):
    """TMPDIR on a 64 MiB tmpfs: a spool of a larger image would not fit, and any file
    left in it shows."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if run("mount", "-t", "tmpfs", "-o", "size=64M", "tmpfs", mnt, check=False).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mnt
    finally:
        run("umount", "-l", mnt, check=False)


def peak_rss_of(cmd: list, env: dict) -> tuple[int, bytes, int]:
    """(exit status, stderr, peak RSS in bytes) of one process, as GNU time reports it
    (measured from a small parent: a child forked from this test process would count
    the test's own pages until its exec)."""
    need_tool("/usr/bin/time")
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, env=env, timeout=600)
    *err, rss = proc.stderr.rstrip(b"\n").split(b"\n")
    err = [line for line in err if not line.startswith(b"Command exited with non-zero status")]
    return proc.returncode, b"\n".join(err), int(rss) * 1024


def http_deploy(url: str, target: Path, tmpdir: Path, *extra) -> tuple[str, int]:
    exe = str(Path(sys.executable).with_name("configdrive"))
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    code, err, rss = peak_rss_of([exe, "deploy", "--create", "--device", str(target),
                                  "--image", url, *map(str, extra)], env)
    assert code == 0, err.decode()
    assert list(tmpdir.iterdir()) == []          # no temporary file, not even a left-over
    return err.decode(), rss


@pytest.mark.parametrize("variant", sorted(CONVERT_VARIANTS))
def test_qcow2_over_http_without_a_spool(variant, base_raw, range_server, small_tmpdir, tmp_path):
    need_tool("qemu-img", "cmp")
    handler, url = range_server
    image = handler.root / "img.qcow2"
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", *CONVERT_VARIANTS[variant], base_raw, image)
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    target = tmp_path / "out.raw"
    err, rss = http_deploy(f"{url}/img.qcow2", target, small_tmpdir, "--checksum", f"sha256:{digest}")
    assert "spooling" not in err
    run("cmp", target, qemu_raw(image))
    assert rss < 100 << 20, rss


def test_qcow2_over_http_larger_than_tmpdir(range_server, small_tmpdir, tmp_path):
    """96 MiB of data in a qcow2 over HTTP with TMPDIR on a 64 MiB tmpfs: a spool could
    not hold it; memory stays under 100 MiB; the disk equals qemu-img's conversion."""
    need_tool("qemu-img", "cmp")
    handler, url = range_server
    raw = make_sparse(tmp_path / "big.raw", 160 * MiB,
                      [(i * 10 * MiB + 12345, 6 * MiB) for i in range(16)], seed=5)
    image = handler.root / "big.qcow2"
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, image)
    assert image.stat().st_size > 64 * MiB
    target = tmp_path / "out.raw"
    _, rss = http_deploy(f"{url}/big.qcow2", target, small_tmpdir)
    run("cmp", target, raw)
    assert rss < 100 << 20, rss


def test_qcow2_with_data_out_of_file_order_over_http(range_server, small_tmpdir, tmp_path):
    """Clusters written by qemu-io back to front: the file's order is the reverse of the
    disk's, so the reader needs Range requests behind its stream; with a checksum too."""
    need_tool("qemu-img", "qemu-io", "cmp")
    handler, url = range_server
    image = handler.root / "rev.qcow2"
    run("qemu-img", "create", "-f", "qcow2", image, str(24 * MiB))
    writes = []
    for i in reversed(range(12)):
        writes += ["-c", f"write -P {0x10 + i} {i * 2 * MiB + 4096} {MiB + 512}"]
    run("qemu-io", "-f", "qcow2", *writes, image)
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    for checksum in ([], ["--checksum", f"sha256:{digest}"]):
        target = tmp_path / "out.raw"
        target.unlink(missing_ok=True)
        http_deploy(f"{url}/rev.qcow2", target, small_tmpdir, *checksum)
        run("cmp", target, qemu_raw(image))


def test_server_answering_ranges_differently_is_caught_by_the_checksum(range_server, small_tmpdir, tmp_path):
    """A server whose Range answers differ from its download: the checksum over the
    download matches, but the bytes converted would not be the bytes checked."""
    need_tool("qemu-img")
    handler, url = range_server
    image = handler.root / "img.qcow2"
    run("qemu-img", "create", "-f", "qcow2", image, str(8 * MiB))
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 1M 2M", image)
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    handler.lie = True
    target = tmp_path / "out.raw"
    exe = str(Path(sys.executable).with_name("configdrive"))
    code, err, _ = peak_rss_of([exe, "deploy", "--create", "--device", str(target), "--image",
                                f"{url}/img.qcow2", "--checksum", f"sha256:{digest}"],
                               {**os.environ, "TMPDIR": str(small_tmpdir)})
    lines = err.decode().strip().splitlines()
    assert code == 1 and len(lines) == 1, err
    assert "different bytes" in lines[0] and "Range" in lines[0]
    assert "now holds an empty partition table" in lines[0]


def test_compressed_qcow2_over_http_converts_as_it_arrives(range_server, base_raw, tmp_path):
    """qemu-img's layout (the tables, then the data they map) inside gzip: converted as
    it arrives, no spool (a layout that needs one: tests/hostile/test_layout_bytes.py)."""
    need_tool("qemu-img", "cmp")
    handler, url = range_server
    image = tmp_path / "img.qcow2"
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", base_raw, image)
    (handler.root / "img.qcow2.gz").write_bytes(gzip.compress(image.read_bytes(), 1))
    target = tmp_path / "out.raw"
    proc = configdrive("deploy", "--create", "--device", target, "--image", f"{url}/img.qcow2.gz")
    err = proc.stderr.decode()
    assert "spooling" not in err, err
    run("cmp", target, base_raw)


# -- start-up: only what the path needs -------------------------------------------------

HEAVY = ("jsonschema", "pycdlib", "pyfatfs", "ctypes", "zstandard", "threading",
         "concurrent.futures", "tempfile", "urllib.request", "http.client")


def modules_after(code: str) -> set[str]:
    """The heavy modules a fresh interpreter holds after running ``code``."""
    probe = code + "\nimport sys\nprint(*(m for m in %r if m in sys.modules), file=sys.stderr)" % (HEAVY,)
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
    return set(proc.stderr.split())


def test_help_imports_nothing_heavy():
    code = "from configdrive.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    assert modules_after(code) == set()


def test_the_deploy_writer_imports_only_what_a_raw_file_needs():
    # threading is the writer's own (read-ahead and writeback threads); the rest waits
    # for an image that needs it (zstd, a spool, http, inflating threads, libc calls).
    assert modules_after("import partition.writing.copy") == {"threading"}
