"""Shared measuring for the side-by-side benchmarks: medians of repeated runs, peak
memory of a child process, and one table format, so every figure is a ratio against the
tool a user would pick instead, measured in the same run."""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import time
from typing import Callable, Sequence


def median_seconds(fn: Callable[[], object], runs: int = 5, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def run_measured(cmd: Sequence[str], **kw) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one child process run to completion."""
    start = time.perf_counter()
    proc = subprocess.Popen(list(map(str, cmd)), stdout=subprocess.DEVNULL, **kw)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {proc.returncode}")
    return elapsed, usage.ru_maxrss * 1024


def drop_caches() -> None:
    """Best effort: start each timed run from a cold page cache (needs root)."""
    subprocess.run(["sync"])
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        pass


def table(title: str, rows: list[tuple[str, float, float]], unit: str = "s") -> str:
    """rows: (what, ours, theirs); prints the ratio theirs/ours (>1 means we are faster)."""
    lines = [f"## {title}", f"{'case':44} {'ours':>10} {'peer':>10} {'peer/ours':>10}"]
    for what, ours, theirs in rows:
        lines.append(f"{what:44} {ours:>9.3f}{unit} {theirs:>9.3f}{unit} {theirs / ours:>10.2f}")
    return "\n".join(lines)


def self_peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
