"""Run every side-by-side benchmark in one go (what `make bench` calls) and write what they
print, with the date and the machine, to docs/performance.md: the figures there are this
script's output, never numbers copied by hand.

    python benchmarks/run.py [--quick] [--bench NAME]... [--out PATH]

--quick runs each benchmark at its smallest size, once: it checks that every benchmark
and this page's writer work, in seconds; its figures are not to be quoted, and the page
says so.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BENCHES = ["build_drives.py", "stream_images.py", "ipa_write_image.py", "fleet.py"]
# Each benchmark's smallest size, one run (--quick).
QUICK = {"build_drives.py": ["--runs", "1"],
         "stream_images.py": ["--sizes", "0.0625", "--data-gib", "0.03125", "--runs", "1"],
         "ipa_write_image.py": ["--size-gib", "0.0625", "--data-mib", "16", "--runs", "1"],
         "fleet.py": ["--size-gib", "0.0625", "--data-mib", "16", "--rounds", "1"]}
GENERATED = "<!-- Written by benchmarks/run.py (`make bench`); edit the benchmarks, not this page. -->"


def machine() -> list[tuple[str, str]]:
    """What the figures depend on: cores, memory, kernel, CPU model, load."""
    def first(path: str, key: str) -> str:
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return "unknown"
    mem_kib = first("/proc/meminfo", "MemTotal").split()[0]
    memory = f"{int(mem_kib) / (1 << 20):.1f} GiB" if mem_kib.isdigit() else "unknown"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [("cores (nproc)", str(usable)), ("memory", memory),
            ("kernel", f"{platform.system()} {platform.release()} {platform.machine()}"),
            ("CPU model", first("/proc/cpuinfo", "model name")),
            ("Python", platform.python_version())]


def load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def purpose(name: str) -> str:
    """The benchmark's own docstring: what it compares and how, written beside its code."""
    doc = ast.get_docstring(ast.parse((HERE / name).read_text())) or ""
    return doc.strip()


def run_one(name: str, extra: list[str]) -> tuple[int, str, float]:
    """Run one benchmark, echoing its output as it comes; (status, output, seconds)."""
    print(f"\n# {name} {' '.join(extra)}".rstrip(), flush=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    proc = subprocess.Popen([sys.executable, str(HERE / name), *extra], cwd=HERE, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines = []
    for line in proc.stdout:
        print(line, end="", flush=True)
        lines.append(line)
    status = proc.wait()
    seconds = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()
    return status, "".join(lines), seconds


def page(results: list[tuple[str, list[str], int, str, float]], quick: bool,
         started: datetime.datetime, load_before: str) -> str:
    out = [GENERATED, "", "# Performance, side by side", ""]
    out.append("Every figure is a ratio against the tool a user would pick instead, measured in the "
               "same run on the same machine (peer / ours: above 1 means we are faster). "
               "`make bench` regenerates this page; on a shared machine the ratios of one run "
               "are not a constant.")
    out.append("")
    left_out = [name for name in BENCHES if name not in {r[0] for r in results}]
    if left_out:
        out += [f"Not run this time: {', '.join(left_out)}.", ""]
    if quick:
        out += ["**This page comes from `benchmarks/run.py --quick`: every benchmark at its smallest "
                "size, run once, to check that they and this page's writer work. Its figures are "
                "not to be quoted; run `make bench` for real ones.**", ""]
    out += [f"Run: {started:%Y-%m-%d %H:%M} UTC, load average {load_before} at the start, "
            f"{load()} at the end.", "", "| machine | |", "|---|---|"]
    out += [f"| {key} | {value} |" for key, value in machine()]
    for name, extra, status, text, seconds in results:
        out += ["", f"## {name}", ""]
        command = " ".join(["python", f"benchmarks/{name}", *extra])
        out += [f"`{command}`: {seconds:.0f} s{', FAILED with status ' + str(status) if status else ''}.", ""]
        out += [purpose(name), "", "Output:", "", "```", text.rstrip("\n"), "```"]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smallest sizes, one run: checks, not figures")
    ap.add_argument("--bench", action="append", choices=BENCHES, help="only these (default: all)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "performance.md")
    args = ap.parse_args(argv)
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = load()
    results = []
    for name in args.bench or BENCHES:
        extra = QUICK[name] if args.quick else []
        results.append((name, extra, *run_one(name, extra)))
    args.out.write_text(page(results, args.quick, started, load_before))
    print(f"\nwrote {args.out}", flush=True)
    return 1 if any(status for _, _, status, _, _ in results) else 0


if __name__ == "__main__":
    sys.exit(main())
