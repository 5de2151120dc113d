"""The deploy hot path under attack: zero runs zeroed on a thread beside the data writes,
data written around the page cache (O_DIRECT), a failing device.

What a user would check: on a USED target (every byte 0xff first) the bytes the image
covers read back as `qemu-img convert`'s output (`cmp`), whatever the granularity of its
zero runs and on 512- and 4096-byte sector loop devices and a file; a deploy that fails
on the zeroing thread, on a device that loses writes, or at the checksum exits 1 with one
error line and leaves no table that sgdisk or blkid reads as the image's; a SIGKILL while
the zeroing thread works leaves no table either; an image of many tiny zero runs stays
inside the harness's memory and hang guards.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import is_root, loop_device, need_tool, out, run
from harness import EXE, assert_refused, run_measured

MiB = 1 << 20
GUID = "4A77ACC0-1111-2222-3333-444455556666"

pytestmark = pytest.mark.root


@pytest.fixture(autouse=True)
def _tools():
    need_tool("qemu-img", "cmp", "sgdisk", "blkid")


def pattern_raw(path: Path, size: int, period: int, zeros: int, phase: int, seed: int = 1,
                gpt: bool = False) -> Path:
    """A raw disk of ``size`` bytes: from byte ``phase`` on, every ``period`` bytes hold
    ``period - zeros`` random bytes then ``zeros`` zero bytes; only the data is written
    (the file's holes are its whole zero blocks). With ``gpt`` sgdisk puts a table (disk
    GUID GUID) over the first and last 34 sectors first."""
    rnd = random.Random(seed)
    with open(path, "wb") as fp:
        fp.truncate(size)
    if gpt:
        run("sgdisk", "-U", GUID, "-n", "1:2048:0", "-c", "1:root", path)
    start = max(phase, MiB) if gpt else phase
    stop = size - MiB if gpt else size
    with open(path, "r+b") as fp:
        pos = start
        while pos < stop:
            n = min(period - zeros, stop - pos)
            fp.seek(pos)
            fp.write(rnd.randbytes(n) if n > 0 else b"")
            pos += period
    return path


def qcow2_of(raw: Path, cluster: int) -> Path:
    """qemu-img's qcow2 of ``raw``: every all-zero cluster left unallocated (-S)."""
    image = raw.with_suffix(f".c{cluster}.qcow2")
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-o", f"cluster_size={cluster}",
        "-S", str(max(cluster, 512)), raw, image)
    return image


def reference(image: Path, fmt: str) -> Path:
    ref = image.with_suffix(".ref")
    run("qemu-img", "convert", "-f", fmt, "-O", "raw", image, ref)
    return ref


def used(path: Path, size: int) -> Path:
    path.write_bytes(b"\xff" * size)
    return path


# (period, zero bytes, phase): zero runs and data sharing pages and sectors at both ends.
LAYOUTS = {
    "512-data-512-zeros": (1024, 512, 0),
    "page-less-a-sector-zeros": (8192, 4096 - 512, 512),
    "page-zeros-a-sector-off": (12288, 4096, 512),
    "64k-less-a-sector-zeros": (192 << 10, (64 << 10) - 512, 1536),
    "64k-plus-a-sector-zeros": (192 << 10, (64 << 10) + 512, 3584),
    "64k-plus-a-sector-data": ((128 << 10), (64 << 10) - 512, 0),
}
IMAGE_SIZE = 6 * MiB + 3 * 4096       # not a multiple of 64 KiB
TARGET_SIZE = 8 * MiB


# A loop device as found: 512- or 4096-byte sectors; "read": every byte read (and cached)
# before the deploy, as blkid and sgdisk do on a used disk, so the data and the zeroing
# meet pages (perhaps large folios) the cache holds already; "dio": the loop driver
# writes its backing file with O_DIRECT.
TARGETS = {"file": None, "loop512": (512, False, False), "loop4096": (4096, False, False),
           "loop512-read": (512, True, False), "loop4096-read": (4096, True, False),
           "loop4096-dio": (4096, False, True)}


@contextlib.contextmanager
def loop_as_found(disk: Path, sector: int, read_first: bool, dio: bool):
    with loop_device(disk, sector_size=sector) as dev:
        if dio and run("losetup", "--direct-io=on", dev, check=False).returncode:
            pytest.skip(f"{dev}: the loop driver cannot use O_DIRECT on {disk}")
        if read_first:
            with open(dev, "rb") as fp:
                while fp.read(MiB):
                    pass
        yield dev


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("fmt", ["qcow2-512", "qcow2-4k", "raw"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_zero_runs_at_every_granularity_read_back_as_the_image(tmp_path, layout, fmt, target):
    from partition.writing.copy import write_image
    period, zeros, phase = LAYOUTS[layout]
    raw = pattern_raw(tmp_path / "image.raw", IMAGE_SIZE, period, zeros, phase, seed=period)
    if fmt == "raw":
        image, ref = raw, raw
    else:
        image = qcow2_of(raw, 512 if fmt == "qcow2-512" else 4096)
        ref = reference(image, "qcow2")
    disk = used(tmp_path / "target.img", TARGET_SIZE)
    if target == "file":
        write_image(str(image), str(disk))
    else:
        with loop_as_found(disk, *TARGETS[target]) as dev:
            write_image(str(image), dev)
            run("cmp", "-n", str(IMAGE_SIZE), dev, ref)
    # Past the page cache: the loop device's backing file holds the same bytes; past the
    # image's end (dd semantics) the old bytes are left, up to the last MiB (zeroed).
    run("cmp", "-n", str(IMAGE_SIZE), disk, ref)
    assert_old_bytes_past(disk, IMAGE_SIZE, TARGET_SIZE - MiB)


def assert_old_bytes_past(disk: Path, start: int, end: int) -> None:
    with open(disk, "rb") as fp:
        fp.seek(start)
        assert fp.read(end - start) == b"\xff" * (end - start), f"{disk}: changed past byte {start}"


# A stream (stdin, gzip) is cut into zero runs by content, at 64 KiB grains; its length
# need not be a multiple of any sector.
@pytest.mark.parametrize("sector", [512, 4096])
@pytest.mark.parametrize("compression", ["none", "gzip"])
@pytest.mark.parametrize("size", [IMAGE_SIZE, IMAGE_SIZE + 100, IMAGE_SIZE - 4095])
@pytest.mark.parametrize("layout", ["page-zeros-a-sector-off", "64k-less-a-sector-zeros",
                                    "64k-plus-a-sector-zeros", "64k-plus-a-sector-data"])
def test_streams_onto_a_used_loop_device(tmp_path, layout, size, compression, sector):
    import gzip
    period, zeros, phase = LAYOUTS[layout]
    raw = pattern_raw(tmp_path / "image.raw", size, period, zeros, phase, seed=size)
    data = raw.read_bytes()
    disk = used(tmp_path / "target.img", TARGET_SIZE)
    with loop_device(disk, sector_size=sector) as dev:
        outcome = run_measured("deploy", "--quiet", "--device", dev, "--image", "-",
                               input=gzip.compress(data, 1) if compression == "gzip" else data)
        assert outcome.returncode == 0, outcome.stderr
        run("cmp", "-n", str(size), dev, raw)
    run("cmp", "-n", str(size), disk, raw)
    assert_old_bytes_past(disk, size, TARGET_SIZE - MiB)


@pytest.mark.parametrize("sector", [512, 4096])
@pytest.mark.parametrize("layout", ["512-data-512-zeros", "page-zeros-a-sector-off",
                                    "64k-plus-a-sector-zeros"])
def test_a_reader_during_the_deploy_sees_the_image_after_it(tmp_path, layout, sector):
    """Another process reads the whole device over and over while the deploy writes it
    (as udev's blkid does on a real machine): pages it caches meanwhile, between the
    zeroing thread, the O_DIRECT writes and the page-cache writes, must not outlive the
    deploy. With --verify our own read-back (its cache dropped) agrees, and so do `cmp`
    through the cache and the backing file."""
    from partition.writing.copy import write_image
    period, zeros, phase = LAYOUTS[layout]
    raw = pattern_raw(tmp_path / "image.raw", IMAGE_SIZE, period, zeros, phase, seed=period)
    image = qcow2_of(raw, 512)
    ref = reference(image, "qcow2")
    disk = used(tmp_path / "target.img", TARGET_SIZE)
    with loop_device(disk, sector_size=sector) as dev:
        reader = subprocess.Popen(["sh", "-c", f"while :; do cat {dev} > /dev/null; done"])
        try:
            summary = write_image(str(image), dev, verify=True)
        finally:
            reader.kill()
            reader.wait()
        assert summary["verified"]
        run("cmp", "-n", str(IMAGE_SIZE), dev, ref)
    run("cmp", "-n", str(IMAGE_SIZE), disk, ref)


def test_many_tiny_zero_runs_stay_bounded(tmp_path):
    """65536 zero runs of 512 bytes between 512-byte data clusters (qcow2, 512-byte
    clusters) onto a used loop device: within the harness's hang and RSS guards, and the
    disk equals qemu-img's conversion."""
    size = 64 * MiB
    raw = pattern_raw(tmp_path / "tiny.raw", size, 1024, 512, 0, seed=9)
    image = qcow2_of(raw, 512)
    raw.unlink()
    ref = reference(image, "qcow2")
    disk = used(tmp_path / "target.img", size + MiB)
    with loop_device(disk) as dev:
        outcome = run_measured("deploy", "--quiet", "--device", dev, "--image", image,
                               hang_guard=300)
        assert outcome.returncode == 0, outcome.stderr
        assert outcome.peak_rss < 200 << 20, outcome.peak_rss
        run("cmp", "-n", str(size), dev, ref)


# -- failures: a driver that injects them into a real ``configdrive deploy`` process ------------

DRIVER = textwrap.dedent("""
    import errno, os, signal, sys, threading
    from partition.writing.device import Target
    action, nth = sys.argv[1], int(sys.argv[2])   # nth < 0: the first call past byte -nth
    calls, fired = [0], []
    real = Target.write_zeros
    def chosen(offset, length):
        calls[0] += 1
        hit = calls[0] == nth if nth > 0 else offset + length > -nth
        if hit and not fired:
            fired.append(offset)
            return True
        return False
    def write_zeros(self, offset, length):
        if threading.current_thread().name == "zeroing":
            if chosen(offset, length):
                if action.startswith("sig"):
                    os.kill(os.getpid(), getattr(signal, action.upper()))
                    return real(self, offset, length)
                from partition.errors import PartitionError
                code = getattr(errno, action.upper())
                raise PartitionError(f"{self.path}: zeroing {length} bytes at byte {offset} "
                                     f"failed: {os.strerror(code)}") from OSError(code, "")
        return real(self, offset, length)
    Target.write_zeros = write_zeros
    from configdrive.cli import main
    sys.exit(main(["deploy", "--quiet", "--device", sys.argv[3], "--image", sys.argv[4]]))
""")


@pytest.fixture(scope="module")
def gpt_image(tmp_path_factory) -> Path:
    """An 8 MiB GPT disk (sgdisk) whose data alternates with 16 KiB zero runs (whole
    pages: they go to the zeroing thread), as a qcow2 with 4 KiB clusters."""
    d = tmp_path_factory.mktemp("hot")
    raw = pattern_raw(d / "gpt.raw", 8 * MiB, 64 << 10, 16 << 10, 0, seed=3, gpt=True)
    return qcow2_of(raw, 4096)


def image_table_seen(dev) -> bool:
    probed = run("blkid", "-p", "-o", "export", dev, check=False).stdout.decode().upper()
    printed = run("sgdisk", "-p", dev, check=False).stdout.decode().upper()
    return GUID in probed or GUID in printed or " ROOT" in printed


# The 1st, 7th, 40th run; -7 MiB: the image's last run, in its held-back last MiB, zeroed
# only after the checksum is proven.
@pytest.mark.parametrize("nth", [1, 7, 40, -7 * MiB])
@pytest.mark.parametrize("error", ["eio", "enospc"])
@pytest.mark.parametrize("target", ["loop", "file"])
def test_zeroing_thread_failure_wipes_and_exits_1(gpt_image, tmp_path, error, nth, target):
    disk = used(tmp_path / "target.img", 12 * MiB)
    with (loop_device(disk) if target == "loop" else contextlib.nullcontext(str(disk))) as dev:
        proc = subprocess.run([sys.executable, "-c", DRIVER, error, str(nth), dev, str(gpt_image)],
                              capture_output=True, timeout=120)
        stderr = proc.stderr.decode()
        assert proc.returncode == 1, stderr
        assert "Traceback" not in stderr and len(stderr.splitlines()) == 1, stderr
        assert stderr.startswith("configdrive: error:") and "now holds an empty partition table" in stderr
        assert not image_table_seen(dev)
        assert "No problems found" in out("sgdisk", "-v", dev)


@pytest.mark.parametrize("nth", [1, 5, 30, -7 * MiB])
def test_sigkill_while_the_zeroing_thread_works_leaves_no_table(gpt_image, tmp_path, nth):
    disk = used(tmp_path / "target.img", 12 * MiB)
    with loop_device(disk) as dev:
        proc = subprocess.run([sys.executable, "-c", DRIVER, "sigkill", str(nth), dev, str(gpt_image)],
                              capture_output=True, timeout=120)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
        assert not image_table_seen(dev)


@pytest.mark.parametrize("nth", [1, 5, 30])
@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_signal_while_the_zeroing_thread_works(gpt_image, tmp_path, signame, nth):
    """A signal lands on the main thread while the zeroing thread is in a call. Ctrl-C
    (SIGINT) or SIGTERM (systemd stopping the agent; the command treats it as Ctrl-C): the
    deploy stops, waits for that thread, wipes, and says so in one line."""
    disk = used(tmp_path / "target.img", 12 * MiB)
    with loop_device(disk) as dev:
        proc = subprocess.run([sys.executable, "-c", DRIVER, signame.lower(), str(nth), dev,
                               str(gpt_image)], capture_output=True, timeout=120)
        stderr = proc.stderr.decode()
        assert not image_table_seen(dev)
        assert proc.returncode == 130, stderr
        assert stderr == "configdrive: error: interrupted\n", stderr
        assert "No problems found" in out("sgdisk", "-v", dev)


PLACEMENT_DRIVER = textwrap.dedent("""
    import os, signal, sys, time
    import configdrive.deploy.placement as placement
    def place_config_drive(*args, **kwargs):      # the image is down; the drive goes in
        os.kill(os.getpid(), getattr(signal, sys.argv[1]))
        time.sleep(30)                             # never reached: the signal interrupts
    placement.place_config_drive = place_config_drive
    from configdrive.cli import main
    sys.exit(main(["deploy", "--quiet", "--device", sys.argv[2], "--image", sys.argv[3],
                   "--hostname", "node-7"]))
""")


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_signal_while_the_drive_goes_in_wipes(gpt_image, tmp_path, signame):
    """The image is complete on the disk, the config drive is not there yet: a deploy
    stopped now would leave an OS that boots without its metadata. It is wiped like any
    failed deploy, and the command says it was interrupted."""
    disk = used(tmp_path / "target.img", 12 * MiB)
    with loop_device(disk) as dev:
        proc = subprocess.run([sys.executable, "-c", PLACEMENT_DRIVER, signame, dev,
                               str(gpt_image)], capture_output=True, timeout=120)
        stderr = proc.stderr.decode()
        assert proc.returncode == 130, stderr
        assert stderr == "configdrive: error: interrupted\n", stderr
        assert not image_table_seen(dev)
        assert "No problems found" in out("sgdisk", "-v", dev)
        assert "Number  Start" in out("sgdisk", "-p", dev)         # a GPT, and empty
        assert out("sgdisk", "-p", dev).rstrip().endswith("Name")


def test_a_failed_deploy_drops_the_zeroing_still_queued(gpt_image, tmp_path, monkeypatch):
    """A data write fails while zero runs wait for the zeroing thread (made slow here, as
    a disk whose zeros the kernel writes itself is): none of the waiting runs is zeroed
    after the failure (on such a disk each could be gigabytes written for nothing before
    the error line); the disk is wiped."""
    import threading
    import time
    import partition.writing.copy as copy
    from partition.writing.device import Target
    from partition.errors import PartitionError
    failed = threading.Event()
    after_failure = []
    real_zeros, real_pwrite = Target.write_zeros, Target.pwrite

    def slow_zeros(self, offset, length):
        if threading.current_thread().name == "zeroing":
            if failed.is_set():
                after_failure.append(offset)
            time.sleep(0.05)
        return real_zeros(self, offset, length)

    def failing_pwrite(self, data, offset):
        if offset >= 6 * MiB and not failed.is_set():
            failed.set()
            raise PartitionError(f"{self.path}: write at byte {offset} failed: Input/output error")
        return real_pwrite(self, data, offset)
    monkeypatch.setattr(Target, "write_zeros", slow_zeros)
    monkeypatch.setattr(Target, "pwrite", failing_pwrite)
    disk = used(tmp_path / "target.img", 12 * MiB)
    with loop_device(disk) as dev:
        with pytest.raises(PartitionError, match="Input/output error"):
            copy.write_image(str(gpt_image), dev)
        monkeypatch.undo()
        assert failed.is_set()
        assert after_failure == [], f"zeroed after the failure at {after_failure}"
        assert not image_table_seen(dev)


@pytest.mark.parametrize("target", ["loop512", "file"])
def test_checksum_mismatch_at_the_end_never_writes_the_head(gpt_image, tmp_path, target):
    disk = used(tmp_path / "target.img", 12 * MiB)
    if target == "file":
        outcome = run_measured("deploy", "--quiet", "--device", disk, "--image", gpt_image,
                               "--checksum", "sha256:" + "0" * 64)
        assert_refused(outcome, names="checksum")
        assert not image_table_seen(disk)
        return
    with loop_device(disk) as dev:
        outcome = run_measured("deploy", "--quiet", "--device", dev, "--image", gpt_image,
                               "--checksum", "sha256:" + "0" * 64)
        assert_refused(outcome, names="checksum")
        assert not image_table_seen(dev)
        assert "No problems found" in out("sgdisk", "-v", dev)


# -- a device that loses writes behind the page cache ------------------------------------------

def test_lost_writeback_fails_the_deploy(gpt_image, tmp_path, monkeypatch):
    """The kernel reports a failed write-out once to a descriptor; sync_file_range's wait
    is where the writer meets it (as strace showed on a loop device over a full tmpfs:
    EIO). The deploy must fail there and wipe, not fsync (which then returns 0) and go on
    to write the head."""
    import partition.writing.copy as copy
    import partition.writing.device as device
    from partition.errors import PartitionError
    real = device._libc()

    class Failing:
        fallocate = real.fallocate

        @staticmethod
        def sync_file_range(fd, offset, length, flags):
            if flags & device.SYNC_FILE_RANGE_WAIT_AFTER:
                ctypes.set_errno(errno.EIO)
                return -1
            return real.sync_file_range(fd, offset, length, flags)
    monkeypatch.setattr(device, "_libc", lambda: Failing)
    monkeypatch.setattr(copy, "SYNC_EVERY", 256 << 10)     # windows within an 8 MiB image
    disk = used(tmp_path / "target.img", 12 * MiB)
    with pytest.raises(PartitionError) as caught:
        copy.write_image(str(gpt_image), str(disk))
    monkeypatch.undo()
    assert "Input/output error" in str(caught.value) and "\n" not in str(caught.value)
    assert "now holds an empty partition table" in str(caught.value)
    assert not image_table_seen(disk)


@pytest.fixture
def full_tmpfs(tmp_path):
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if not is_root() or run("mount", "-t", "tmpfs", "-o", "size=72M", "tmpfs", mnt,
                            check=False).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mnt
    finally:
        run("umount", "-l", mnt, check=False)


def test_device_that_loses_a_region_fails_the_deploy(full_tmpfs, tmp_path):
    """A real failing device: a loop device over an 80 MiB file on a 72 MiB tmpfs, 0xff
    everywhere but a hole at [8 MiB, 16 MiB), the tmpfs full: writes there are taken into
    the page cache and lost at write-out (ENOSPC in the loop driver, EIO to us). The image
    (a GPT disk, data in pieces under 64 KiB: all through the page cache) must not be
    reported deployed: exit 1, one line, and no table any tool reads as the image's."""
    backing = full_tmpfs / "disk"
    with open(backing, "wb") as fp:
        fp.truncate(80 * MiB)
        for mib in [*range(0, 8), *range(16, 80)]:
            fp.seek(mib * MiB)
            fp.write(b"\xff" * MiB)
    assert "100%" in out("df", full_tmpfs)
    raw = pattern_raw(tmp_path / "big.raw", 80 * MiB, 64 << 10, 512, 0, seed=4, gpt=True)
    image = qcow2_of(raw, 512)
    raw.unlink()
    with loop_device(backing) as dev:
        outcome = run_measured("deploy", "--quiet", "--device", dev, "--image", image)
        assert_refused(outcome)
        assert not image_table_seen(dev)


# -- a file the deploy creates (no zeroing calls at all) ----------------------------------------

@pytest.mark.parametrize("declared", ["64T", "1P", "63P"])
def test_created_file_for_a_huge_declared_size(tmp_path, declared):
    """A qcow2 of a few hundred KiB declaring tens of terabytes to exabytes onto --create:
    the new file is sized to the virtual size (sparse) where the filesystem allows it;
    where it does not (EFBIG: ext4 stops at 16 TiB), the deploy is refused in one line
    naming the file, and no file is left behind. Either way within the guards: nothing
    is written or zeroed for the declared zeros."""
    image = tmp_path / "huge.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=2M", image, declared)
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 1M 64k", image)
    target = tmp_path / "new.img"
    outcome = run_measured("deploy", "--quiet", "--create", "--device", target, "--image", image)
    virtual = int(out("qemu-img", "info", "--output=json", image).split('"virtual-size":')[1].split(",")[0])
    if outcome.returncode == 0:
        assert target.stat().st_size == virtual
        assert target.stat().st_blocks * 512 < 16 * MiB          # sparse: only what was written
        with open(target, "rb") as fp:
            fp.seek(MiB)
            assert fp.read(64 << 10) == b"\x5a" * (64 << 10)
    else:
        assert_refused(outcome, names=str(target))
        assert not target.exists()


# -- O_DIRECT refused part-way -----------------------------------------------------------------

@pytest.mark.parametrize("sector", [512, 4096])
@pytest.mark.parametrize("refused_at", [0, 1, 2, 4])
@pytest.mark.parametrize("layout", ["page-zeros-a-sector-off", "64k-plus-a-sector-data"])
def test_o_direct_refused_part_way(tmp_path, monkeypatch, layout, refused_at, sector):
    """The device refuses O_DIRECT (EINVAL, nothing written, as a device-mapper stack with
    a larger alignment than its logical sector does) at open (0) or at the n-th direct
    write: that piece and the rest go through the page cache, beside the zeroing thread;
    the disk equals qemu-img's conversion and no direct write follows the refusal."""
    import fcntl
    import os
    import partition.writing.direct as direct
    from partition.writing.copy import write_image
    from partition.writing.device import Target
    from partition.errors import PartitionError
    period, zeros, phase = LAYOUTS[layout]
    raw = pattern_raw(tmp_path / "image.raw", IMAGE_SIZE, period, zeros, phase, seed=period)
    image = qcow2_of(raw, 4096)
    ref = reference(image, "qcow2")
    direct_writes = []
    real_open, real_pwrite = os.open, Target.pwrite

    def refusing_open(path, flags, *mode):
        if flags & os.O_DIRECT and refused_at == 0:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *mode)

    def refusing_pwrite(self, data, offset):
        if fcntl.fcntl(self.fd, fcntl.F_GETFL) & os.O_DIRECT:
            direct_writes.append(offset)
            if len(direct_writes) == refused_at:
                raise PartitionError("refused") from OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(self, data, offset)
    monkeypatch.setattr(direct.os, "open", refusing_open)
    monkeypatch.setattr(Target, "pwrite", refusing_pwrite)
    disk = used(tmp_path / "target.img", TARGET_SIZE)
    with loop_device(disk, sector_size=sector) as dev:
        write_image(str(image), dev)
        monkeypatch.undo()
        run("cmp", "-n", str(IMAGE_SIZE), dev, ref)
    run("cmp", "-n", str(IMAGE_SIZE), disk, ref)
    assert len(direct_writes) == refused_at, direct_writes
