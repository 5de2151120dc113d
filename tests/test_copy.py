"""The dd-semantics writer: what lands on the target, checksums, and what a failure leaves.

Targets are loop devices where the machine allows (sparse files otherwise); what they hold
is judged by sgdisk and blkid, not by our own table reader.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import is_root, loop_device, make_gpt_disk, need_tool, out, run
from partition.writing.copy import write_image
from partition.writing.device import Target, busy_reasons
from partition.errors import PartitionError

MiB = 1 << 20
IMAGE_GUID = "5A5A5A5A-1111-2222-3333-444455556666"


@pytest.fixture(scope="module")
def gpt_image(tmp_path_factory) -> Path:
    """A 24 MiB raw disk with a GPT (made by sgdisk, disk GUID IMAGE_GUID), two partitions
    holding random data, and zeros between them."""
    return make_gpt_disk(tmp_path_factory.mktemp("copy") / "disk.raw", IMAGE_GUID, seed=99)


def sha(path_or_dev, length: int | None = None) -> str:
    h = hashlib.sha256()
    with open(path_or_dev, "rb") as fp:
        h.update(fp.read(length) if length is not None else fp.read())
    return h.hexdigest()


def read(dev, offset: int, length: int) -> bytes:
    with open(dev, "rb") as fp:
        fp.seek(offset)
        return fp.read(length)


def table_of(dev) -> tuple[list[str], str]:
    """(partition lines sgdisk -p lists, blkid -p's PTUUID or "")."""
    text = out("sgdisk", "-p", dev)
    lines = text.split("Number  Start (sector)", 1)[1].splitlines()[1:]
    blkid = run("blkid", "-p", "-o", "export", dev, check=False).stdout.decode()
    ptuuid = next((l.split("=", 1)[1] for l in blkid.splitlines() if l.startswith("PTUUID=")), "")
    return [l for l in lines if l.strip()], ptuuid


def assert_not_the_image(dev, *, empty_table: bool) -> None:
    """No partitioning tool reads ``dev`` as a disk of the image."""
    parts, ptuuid = table_of(dev)
    assert parts == [], parts
    assert ptuuid.upper() != IMAGE_GUID
    assert IMAGE_GUID not in out("sgdisk", "-v", dev).upper()
    if empty_table:     # a fresh empty GPT: sgdisk finds no problem, blkid sees a gpt
        assert "No problems found" in out("sgdisk", "-v", dev)
        assert "PTTYPE=gpt" in run("blkid", "-p", "-o", "export", dev, check=False).stdout.decode()


@contextlib.contextmanager
def disk_target(tmp_path: Path, size: int = 40 * MiB, sector_size: int = 512, fill: int = 0xAA):
    """A used disk: every byte 0xAA, plus an old GPT of its own; a loop device if we can
    have one, else the file."""
    backing = tmp_path / "target.img"
    backing.write_bytes(bytes([fill]) * size)
    run("sgdisk", "--set-alignment=8", "-n", "1:0:0", "-c", "1:old", backing, check=False)
    if is_root():
        proc = run("losetup", "--find", "--show", f"--sector-size={sector_size}", backing, check=False)
        if proc.returncode == 0:
            dev = proc.stdout.decode().strip()
            try:
                yield dev
            finally:
                run("losetup", "-d", dev, check=False)
            return
    yield str(backing)


def test_image_lands_on_a_used_disk(gpt_image, tmp_path):
    need_tool("qemu-img")
    image = tmp_path / "disk.qcow2"
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-c", gpt_image, image)
    with disk_target(tmp_path) as dev:
        summary = write_image(str(image), dev, checksum="sha256:" + sha(image))
        size = gpt_image.stat().st_size
        assert read(dev, 0, size) == gpt_image.read_bytes()     # zeros written, not skipped
        assert read(dev, 40 * MiB - MiB, MiB) == bytes(MiB)       # the old backup GPT is gone
        assert read(dev, size, MiB) == b"\xaa" * MiB              # past the image: untouched
        parts, ptuuid = table_of(dev)
        assert [p.split()[-1] for p in parts] == ["root", "data"]
        assert ptuuid.upper() == IMAGE_GUID
        assert summary["checksum"] == {"algorithm": "sha256", "value": sha(image), "verified": True}


@pytest.mark.parametrize("kind", ["qcow2, 4 KiB clusters", "sparse raw"])
def test_the_zeros_the_image_maps_are_zeroed_ahead_over_old_data(gpt_image, tmp_path, kind):
    """The zero runs an image's own map names (a qcow2's unallocated tables and zero
    clusters; with 4 KiB clusters a table maps 2 MiB, so both kinds occur here; a sparse
    file's holes) are zeroed ahead of the stream: over a used disk, what lands is the
    image byte for byte, and past it the disk is untouched."""
    need_tool("qemu-img")
    image = tmp_path / "image"
    if kind.startswith("qcow2"):
        run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=4096",
            gpt_image, image)
    else:
        run("cp", "--sparse=always", gpt_image, image)
        assert image.stat().st_blocks * 512 < gpt_image.stat().st_size // 2   # holes there
    size = gpt_image.stat().st_size
    with disk_target(tmp_path) as dev:
        write_image(str(image), dev)
        assert read(dev, 0, size) == gpt_image.read_bytes()
        assert read(dev, size, MiB) == b"\xaa" * MiB


def test_a_hole_that_becomes_data_during_the_copy_fails_and_wipes(gpt_image, tmp_path, monkeypatch):
    """A sparse source written into after its holes were mapped (and zeroed ahead on the
    target): the data where its map said zeros fails the copy in one line, and the disk
    holds an empty table, never a mix of the two files."""
    import partition.images.image as image_module
    image = tmp_path / "sparse.raw"
    run("cp", "--sparse=always", gpt_image, image)
    real_holes = image_module.file_holes

    def mapped_then_written(fd, size, name):
        holes = real_holes(fd, size, name)
        offset = next(o for o, n in holes if o >= 2 * MiB and n >= 1 << 20)
        with open(image, "r+b") as fp:
            fp.seek(offset + (64 << 10))
            fp.write(b"\x55" * (64 << 10))
        return holes
    monkeypatch.setattr(image_module, "file_holes", mapped_then_written)
    with disk_target(tmp_path) as dev:
        with pytest.raises(PartitionError, match=r"changed while it was read: data at byte "
                                                 r"\d+ .* where its map said zeros .*empty partition table"):
            write_image(str(image), dev)
        assert_not_the_image(dev, empty_table=True)


class _ZeroingDisk:
    """A 4 TiB disk as the writer sees it, whose zeroing calls take their time (as
    BLKZEROOUT does where the kernel writes every zero) or fail; data writes vanish."""
    is_block, sector_size, size, created, path = False, 512, 4 << 40, False, "disk"

    def __init__(self, fail: bool = False):
        self.calls, self.fail, self.failed = [], fail, threading.Event()

    def write_zeros(self, offset: int, length: int) -> None:
        self.calls.append((offset, length))
        if self.fail and length > MiB:
            self.failed.set()
            raise OSError(5, "Input/output error")
        time.sleep(0.01)

    def pwrite(self, data, offset: int) -> None:
        pass


def test_a_failed_deploy_stops_the_zeroing_ahead_at_once():
    """An image whose map ends in terabytes of zeros: that run is queued at the start, and
    a deploy failing meanwhile stops it within one chunk (ZERO_CHUNK), not after all of
    it (hours on a disk that writes its zeros)."""
    from partition.progress import Progress
    from partition.writing import copy as copy_module
    disk = _ZeroingDisk()
    writer = copy_module._Writer(disk, disk.size, Progress.quiet(), None, copy_module.HOLD)
    writer.zero_ahead([(2 * MiB, disk.size - 2 * MiB)])
    writer.stop(discard=True)
    assert sum(length for _, length in disk.calls) <= 2 * copy_module.ZERO_CHUNK
    assert all(offset + length <= disk.size - copy_module.HOLD for offset, length in disk.calls)


def test_a_zeroing_failure_stops_the_data_writes():
    """The zeroing thread's error is raised at the next data write, not after the whole
    image was written."""
    from partition.progress import Progress
    from partition.writing import copy as copy_module
    disk = _ZeroingDisk(fail=True)
    writer = copy_module._Writer(disk, disk.size, Progress.quiet(), None, copy_module.HOLD)
    writer.zero_ahead([(2 * MiB, 64 * MiB)])
    assert disk.failed.wait(30)
    deadline = time.monotonic() + 30     # the thread hands its error over after the call
    while writer._zeroing._error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(OSError, match="Input/output error"):
        writer.write(128 * MiB, 4096, b"x" * 4096)
    writer.stop(discard=True)


class _NoWriteZeroes:
    """libc as a device without "write zeroes" sees it: fallocate fails (EOPNOTSUPP), so
    each zero run goes to BLKZEROOUT (the kernel writes the zeros) or to zero buffers."""

    def __init__(self, libc):
        self._libc = libc

    def fallocate(self, *args):
        return -1

    def __getattr__(self, name):
        return getattr(self._libc, name)


@pytest.mark.parametrize("device_zeroes", [True, False],
                         ids=["device-zeroes", "kernel-writes-zeros"])
def test_zeros_read_back_on_a_used_disk_either_way(gpt_image, tmp_path, monkeypatch,
                                                   device_zeroes):
    """Each zero run zeroed on the zeroing thread beside the data, by the device's own
    "write zeroes" or (a device without it) by BLKZEROOUT: both leave exactly the image,
    never the old disk's bytes; nothing past the image's end is touched; and no zeroing
    call past the first MiB covers a byte the image holds data in (the reason the runs
    and the data may be written in any order)."""
    need_tool("qemu-img", "cmp")
    import partition.writing.device
    image = tmp_path / "disk.qcow2"
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", gpt_image, image)
    calls = []
    real = Target.write_zeros
    monkeypatch.setattr(Target, "write_zeros", lambda self, o, n: (
        calls.append((o, n, threading.current_thread().name)), real(self, o, n)))
    if not device_zeroes:
        libc = partition.writing.device._libc()
        monkeypatch.setattr(partition.writing.device, "_libc", lambda: _NoWriteZeroes(libc))
    size = gpt_image.stat().st_size
    with disk_target(tmp_path) as dev:
        write_image(str(image), dev)
        run("cmp", "-n", str(size), dev, gpt_image)
        assert read(dev, size, MiB) == b"\xaa" * MiB
    content = gpt_image.read_bytes()
    body = [(o, n, thread) for o, n, thread in calls if MiB <= o < size and n]
    assert body and all(content[o: o + n] == bytes(n) for o, n, _ in body), body
    assert "zeroing" in {thread for _, _, thread in body}


def test_regular_file_target_gets_holes(gpt_image, tmp_path):
    target = tmp_path / "new.img"
    write_image(str(gpt_image), str(target))
    assert target.read_bytes() == gpt_image.read_bytes()
    assert target.stat().st_blocks * 512 < 8 * MiB          # 5 MiB of data, the rest holes
    # An existing file with old data: zeros must still read back as zeros.
    target.write_bytes(b"\xaa" * 30 * MiB)
    write_image(str(gpt_image), str(target))
    assert read(target, 0, 24 * MiB) == gpt_image.read_bytes()
    assert target.stat().st_size == 30 * MiB


def test_checksum_mismatch_leaves_an_empty_table(gpt_image, tmp_path):
    with disk_target(tmp_path) as dev:
        with pytest.raises(PartitionError) as info:
            write_image(str(gpt_image), dev, checksum="sha256:" + "0" * 64)
        assert "checksum mismatch" in str(info.value) and "empty partition table" in str(info.value)
        assert_not_the_image(dev, empty_table=True)


def test_preserve_on_error_keeps_the_wreck(gpt_image, tmp_path):
    with disk_target(tmp_path) as dev:
        with pytest.raises(PartitionError, match="checksum mismatch"):
            write_image(str(gpt_image), dev, checksum="md5:" + "0" * 32, preserve_on_error=True)
        image = gpt_image.read_bytes()
        # Everything but the held-back first and last MiB is there, for debugging.
        assert read(dev, MiB, len(image) - 2 * MiB) == image[MiB:-MiB]
        assert read(dev, 0, MiB) == bytes(MiB)
        assert_not_the_image(dev, empty_table=False)


@pytest.mark.parametrize("kind", ["raw", "qcow2"])
def test_the_file_opened_is_the_file_hashed_and_written(gpt_image, tmp_path, monkeypatch, kind):
    """A local image's name is resolved once. Another file renamed over the name right
    after the open (what anyone who may write the directory can do) changes nothing: the
    checksum is the opened file's and so is the disk written; the other file's checksum
    fails. Before, the digest and a qcow2's conversion read the name again."""
    import partition.images.image as image_module
    need_tool("qemu-img")
    other_raw = make_gpt_disk(tmp_path / "other-disk.bin", "7B7B7B7B-1111-2222-3333-444455556666", seed=7)
    made = {"raw": lambda src, dst: dst.write_bytes(src.read_bytes()),
            "qcow2": lambda src, dst: run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", src, dst)}
    opened, other = tmp_path / f"image.{kind}", tmp_path / f"other.{kind}"
    real_open = image_module.open_source

    def swapped_after_open(spec, **kw):
        source = real_open(spec, **kw)
        os.replace(other, opened)          # the name now names the other file
        return source
    monkeypatch.setattr(image_module, "open_source", swapped_after_open)

    def staged() -> tuple[str, str]:
        made[kind](gpt_image, opened)
        made[kind](other_raw, other)
        return sha(opened), sha(other)
    mine, theirs = staged()
    with pytest.raises(PartitionError, match="checksum mismatch"):
        write_image(str(opened), str(tmp_path / "a.img"), checksum="sha256:" + theirs)
    mine, theirs = staged()
    summary = write_image(str(opened), str(tmp_path / "b.img"), checksum="sha256:" + mine)
    assert summary["checksum"]["value"] == mine
    assert (tmp_path / "b.img").read_bytes() == gpt_image.read_bytes()
    assert "PTUUID=" + IMAGE_GUID.lower() in out("blkid", "-p", "-o", "export", tmp_path / "b.img")


@pytest.mark.parametrize("kind", ["fifo", "directory", "missing"])
def test_a_checksum_argument_that_is_no_file_fails_at_once(gpt_image, tmp_path, kind):
    """A FIFO, a directory or nothing at the checksum's path: one line, before the image is
    read or the target touched, and never a wait for a FIFO's writer (the file is opened
    once, non-blocking, and judged by what was opened)."""
    spec = tmp_path / "sums"
    {"fifo": lambda: os.mkfifo(spec), "directory": spec.mkdir, "missing": lambda: None}[kind]()
    target = tmp_path / "t.img"
    with pytest.raises(PartitionError, match=r"neither ALGO:HEX .* nor a checksum file or URL"):
        write_image(str(gpt_image), str(target), checksum=str(spec))
    assert not target.exists()


def test_checksum_file_forms(gpt_image, tmp_path):
    digest = hashlib.sha512(gpt_image.read_bytes()).hexdigest()
    sums = tmp_path / "SHA512SUMS"
    sums.write_text(f"{'1' * 128}  other.raw\n{digest} *{gpt_image.name}\n")
    summary = write_image(str(gpt_image), str(tmp_path / "a.img"), checksum=str(sums))
    assert summary["checksum"]["algorithm"] == "sha512"
    bsd = tmp_path / "bsd"
    bsd.write_text(f"SHA512 ({gpt_image.name}) = {digest}\n")
    write_image(str(gpt_image), str(tmp_path / "b.img"), checksum=str(bsd))
    with pytest.raises(PartitionError, match="no line names"):
        write_image(str(gpt_image), str(tmp_path / "c.img"), checksum=_other_name_file(tmp_path))


@pytest.mark.parametrize("algorithm", ["md5", "sha256", "sha512"])
def test_checksum_file_with_the_digest_alone(gpt_image, tmp_path, algorithm):
    """What IPA accepts from an image_checksum URL: the digest alone, typed by its length;
    a wrong one is still a mismatch that leaves an empty table."""
    digest = hashlib.new(algorithm, gpt_image.read_bytes()).hexdigest()
    bare = tmp_path / "CHECKSUM"
    bare.write_text(digest + "\n")
    summary = write_image(str(gpt_image), str(tmp_path / "a.img"), checksum=str(bare))
    assert summary["checksum"]["algorithm"] == algorithm
    assert (tmp_path / "a.img").read_bytes()[:MiB] == gpt_image.read_bytes()[:MiB]
    bare.write_text("0" * len(digest))
    with disk_target(tmp_path) as dev:
        with pytest.raises(PartitionError, match="checksum mismatch"):
            write_image(str(gpt_image), dev, checksum=str(bare))
        assert_not_the_image(dev, empty_table=True)


def _other_name_file(tmp_path: Path) -> str:
    path = tmp_path / "OTHER"
    path.write_text(f"{'2' * 64}  a.raw\n{'3' * 64}  b.raw\n")
    return str(path)


def test_injected_io_error_leaves_an_empty_table(gpt_image, tmp_path, monkeypatch):
    calls = []
    real = Target.pwrite

    def failing(self, data, offset):
        calls.append(offset)
        if offset >= 8 * MiB:
            raise PartitionError(f"{self.path}: write at byte {offset} failed: Input/output error")
        return real(self, data, offset)

    monkeypatch.setattr(Target, "pwrite", failing)
    with disk_target(tmp_path) as dev:
        with pytest.raises(PartitionError, match="Input/output error.*empty partition table"):
            write_image(str(gpt_image), dev)
        monkeypatch.setattr(Target, "pwrite", real)
        assert_not_the_image(dev, empty_table=True)


def test_stream_larger_than_the_target(gpt_image, tmp_path):
    """A compressed raw image has no size up front: it fails when it reaches the end."""
    need_tool("gzip")
    packed = tmp_path / "disk.raw.gz"
    packed.write_bytes(run("gzip", "-c", gpt_image).stdout)
    with disk_target(tmp_path, size=16 * MiB) as dev:
        with pytest.raises(PartitionError, match="larger than"):
            write_image(str(packed), dev)
        assert_not_the_image(dev, empty_table=True)


def test_sigkill_mid_write(gpt_image, tmp_path):
    """Killed while writing: the first MiB is still zeros, the backup GPT not written."""
    image = gpt_image.read_bytes()
    with disk_target(tmp_path) as dev:
        proc = subprocess.Popen([sys.executable, "-m", "configdrive.cli", "deploy", "--quiet",
                                 "--device", dev, "--image", "-"], stdin=subprocess.PIPE)
        proc.stdin.write(image[: len(image) - 3 * MiB])
        proc.stdin.flush()
        deadline = time.monotonic() + 20
        # Wait until the writer has put image data on the target.
        while read(dev, 9 * MiB, 4096) != image[9 * MiB: 9 * MiB + 4096]:
            assert time.monotonic() < deadline, "the writer never wrote"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdin.close()
        assert read(dev, 0, MiB) == bytes(MiB)
        assert run("blkid", "-p", dev, check=False).returncode == 2      # nothing at all
        assert_not_the_image(dev, empty_table=False)


def test_busy_device_refused_with_names(gpt_image, tmp_path):
    need_tool("mkswap", "swapon")
    with disk_target(tmp_path) as dev:
        if not dev.startswith("/dev/"):
            pytest.skip("no loop device")
        run("mkswap", dev)
        if run("swapon", dev, check=False).returncode != 0:
            pytest.skip("swapon is not permitted here")
        try:
            assert any("swap" in r for r in busy_reasons(dev))
            before = sha(dev)
            with pytest.raises(PartitionError, match=f"{dev} is busy: {dev} is in use as swap"):
                write_image(str(gpt_image), dev)
            assert sha(dev) == before
        finally:
            run("swapoff", dev, check=False)


def test_sector_size_mismatch_refused(gpt_image, tmp_path):
    with disk_target(tmp_path, sector_size=4096) as dev:
        if not dev.startswith("/dev/"):
            pytest.skip("no loop device with 4096-byte sectors")
        before = sha(dev)
        with pytest.raises(PartitionError, match="512-byte sectors.*4096-byte logical sectors"):
            write_image(str(gpt_image), dev)
        assert sha(dev) == before


def test_4k_sector_image_on_a_4k_disk(tmp_path):
    """An image made for 4096-byte sectors (its GPT at byte 4096) goes onto a 4Kn disk."""
    need_tool("sgdisk")
    image = tmp_path / "4k.raw"
    image.write_bytes(bytes(16 * MiB))
    with loop_device(image, sector_size=4096) as dev:
        run("sgdisk", "-U", IMAGE_GUID, "-n", "1:0:+4M", "-c", "1:root4k", dev)
    assert read(image, 4096, 8) == b"EFI PART"
    with disk_target(tmp_path, sector_size=4096) as dev:
        if not dev.startswith("/dev/"):
            pytest.skip("no loop device with 4096-byte sectors")
        write_image(str(image), dev)
        parts, ptuuid = table_of(dev)
        assert [p.split()[-1] for p in parts] == ["root4k"] and ptuuid.upper() == IMAGE_GUID
