"""docs/performance.md is what `make bench` prints, written by benchmarks/run.py with the
date and the machine, not figures copied by hand."""

from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, is_root, need_tool, run

sys.path.insert(0, str(ROOT / "benchmarks"))
from common import RangeServer  # noqa: E402
from stream_images import LoopDevice, extents  # noqa: E402

MiB = 1 << 20

GENERATED = "<!-- Written by benchmarks/run.py (`make bench`); edit the benchmarks, not this page. -->"


def test_the_committed_page_was_written_by_the_benchmarks():
    text = (ROOT / "docs/performance.md").read_text()
    assert text.splitlines()[0] == GENERATED
    for key in ("cores (nproc)", "memory", "kernel", "CPU model"):
        assert f"| {key} | " in text


@pytest.mark.slow
def test_run_writes_the_page_with_date_machine_and_tables(tmp_path):
    need_tool("genisoimage", "mkfs.vfat", "mcopy")
    page = tmp_path / "performance.md"
    proc = run(sys.executable, ROOT / "benchmarks/run.py", "--quick", "--bench", "build_drives.py",
               "--out", page)
    assert f"wrote {page}" in proc.stdout.decode()
    text = page.read_text()
    assert text.splitlines()[0] == GENERATED
    assert f"Run: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d}" in text
    assert f"| cores (nproc) | {len(os.sched_getaffinity(0))} |" in text
    assert f"| kernel | Linux {platform.release()} " in text
    assert "| memory | " in text and "| CPU model | " in text
    assert "not to be quoted" in text                      # a --quick page says what it is
    assert "Not run this time: stream_images.py, ipa_write_image.py, fleet.py." in text
    # The benchmark's own tables, as it printed them.
    assert "vfat 64 MiB, library into a file" in text and "peer/ours" in text


def test_the_server_counts_requests_and_bytes_per_client(tmp_path):
    (tmp_path / "disk.qcow2").write_bytes(bytes(range(256)) * 4096)
    server = RangeServer(tmp_path)
    with server as base:
        for client, rng in (("node-0", None), ("node-1", "bytes=0-99"), ("node-1", "bytes=1000-")):
            request = urllib.request.Request(f"{base}/disk.qcow2?{client}", headers={"Range": rng} if rng else {})
            with urllib.request.urlopen(request) as answer:
                answer.read()
    assert server.clients == {"node-0": {"requests": 1, "bytes": 1 << 20},
                              "node-1": {"requests": 2, "bytes": 100 + (1 << 20) - 1000}}


def test_the_limit_writes_the_data_extents_and_zeroes_the_runs_between(tmp_path):
    """The limit's extents are the image's: qemu-img map's data ranges, and the rest."""
    need_tool("qemu-img")
    raw = tmp_path / "src.raw"
    with open(raw, "wb") as fp:
        fp.truncate(16 * MiB)
        for offset in (0, 1 * MiB, 8 * MiB):           # the first two touch: one extent
            fp.seek(offset)
            fp.write(b"x" * MiB)
    data, zeros = extents(raw)
    assert data == [(0, 2 * MiB), (8 * MiB, MiB)]
    assert zeros == [(2 * MiB, 6 * MiB), (9 * MiB, 7 * MiB)]


def test_renew_gives_every_command_the_same_device_with_its_zeroing_on():
    """One ZERO_RANGE (BLKZEROOUT, `blkdiscard -z`) on a RAM-backed loop device makes the
    loop driver switch its write-zeroes off (tmpfs refuses the call), so every later
    command would zero by writing zero pages: renew attaches the same node again, with
    its zeroing on and its backing file allocated whole (a used disk)."""
    if not is_root():
        pytest.skip("loop devices need root")
    need_tool("xfs_io", "losetup", "fallocate")
    dev = LoopDevice(Path("/dev/shm"), 16 * MiB, name="bench-renew-test")
    try:
        limit = Path(f"/sys/block/{Path(dev.path).name}/queue/write_zeroes_max_bytes")
        assert int(limit.read_text()) > 0
        run("xfs_io", "-c", f"fzero {MiB} {MiB}", dev.path)
        assert int(limit.read_text()) == 0, "the kernel kept tmpfs-backed write-zeroes on"
        node = dev.path
        dev.renew()
        assert dev.path == node and int(limit.read_text()) > 0
        assert os.stat(dev.backing).st_blocks * 512 >= 16 * MiB
        run("xfs_io", "-c", f"fpunch {MiB} {MiB}", dev.path)     # the limit's zeroing works
        assert int(limit.read_text()) > 0
        assert os.stat(dev.backing).st_blocks * 512 == 15 * MiB
    finally:
        dev.close()


def _fleet_leftovers() -> set[str]:
    """The fleet's loop devices and /dev/shm files (bench-fleet-*) that exist now."""
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout.splitlines()
    return {x for x in loops if "bench-fleet-" in x} | {p.name for p in Path("/dev/shm").glob("bench-fleet-*")}


@pytest.mark.slow
def test_quick_stream_and_fleet_pages_show_the_limit_and_the_fleet(tmp_path):
    if not is_root():
        pytest.skip("loop devices need root")
    need_tool("qemu-img", "xfs_io", "pigz", "zstd", "xz", "curl", "losetup")
    page, before = tmp_path / "performance.md", _fleet_leftovers()
    run(sys.executable, ROOT / "benchmarks/run.py", "--quick", "--bench", "stream_images.py",
        "--bench", "fleet.py", "--out", page)
    text = page.read_text()
    assert "Not run this time: build_drives.py, ipa_write_image.py." in text
    assert "FAILED" not in text
    # Every deploy row, on both devices, against its peer and against the limit.
    for where in ("disk", "RAM"):
        assert f"# physical limit, 0.0625G {where}-backed loop" in text
        for row, peer in (("qcow2", "qemu-img -n"), ("compressed qcow2", "qemu-img -n"),
                          ("raw", "dd oflag=direct"), ("raw.xz, xz -T2 blocks", "xz -T0 -dc | dd"),
                          ("raw.zst, 64 MiB frames", "zstd -dc | dd"),
                          ("raw.gz, 64 MiB members", "pigz -dc | dd")):
            lines = [x for x in text.splitlines()
                     if x.startswith(f"0.0625G {where}-backed loop: {row} ") and x.endswith(peer)]
            assert len(lines) == 1, (row, peer)          # the row in the table against the limit
    assert "ours/limit" in text and "peer/limit" in text and "u+" in text
    # Our copy alone (the deploy's --json seconds) beside each whole command of ours.
    assert "copy/both" in text
    compared = [x for x in text.splitlines() if "| peer/ours" in x]
    assert len(compared) == 2 * 9                      # 9 rows on each device
    assert all(re.search(r" ours +[0-9.]+s \(copy +[0-9.]+s\) cpu", x) for x in compared)
    for line in ("fleet wall time (8 at once)", "bytes sent per deploy (x file)",
                 "requests per deploy", "peak RSS per deploy (median)", "the devices at once"):
        assert line in text
    assert _fleet_leftovers() <= before                   # its loop devices detached, files removed
