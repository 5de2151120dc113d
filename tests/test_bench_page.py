"""docs/performance.md is what `make bench` prints, written by benchmarks/run.py with the
date and the machine, not figures copied by hand."""

from __future__ import annotations

import datetime
import os
import platform
import sys

import pytest

from conftest import ROOT, need_tool, run

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
    assert "Not run this time: stream_images.py, ipa_write_image.py." in text
    # The benchmark's own tables, as it printed them.
    assert "vfat 64 MiB, library into a file" in text and "peer/ours" in text
