"""Stream benchmark: configdrive's image writer against qemu-img convert and dd, in one run,
on the same sources and the same targets (a loop device and a regular file).

    python benchmarks/stream_images.py [--size-gib 2] [--big-gib 8] [--workdir DIR]

The source is shaped like a cloud image: a few hundred MB of data (half random, half
text-like) in the first part of the disk, the rest zeros; as raw, qcow2, and compressed
qcow2 (all made by qemu-img). Sources are read once before timing so every tool reads them
from the page cache. Each run's wall time and peak RSS (wait4) are printed, and the ratio
against the peer tool (> 1: we are faster). Needs root for the loop device.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MiB = 1 << 20
PY = sys.executable


def make_source(path: Path, size: int, data_mib: int) -> None:
    """``data_mib`` MiB of data in 4 MiB pieces spread over the first half, zeros elsewhere."""
    rnd = random.Random(42)
    text = b"".join(b"usr/lib/python3/dist-packages/module_%06d.py\n" % i for i in range(100_000))
    with open(path, "wb") as fp:
        fp.truncate(size)
        pieces = data_mib // 4
        stride = (size // 2) // pieces
        for i in range(pieces):
            fp.seek(i * stride)
            chunk = rnd.randbytes(4 * MiB) if i % 2 else (text * (4 * MiB // len(text) + 1))[: 4 * MiB]
            fp.write(chunk)
        fp.seek(size - MiB)
        fp.write(rnd.randbytes(MiB))     # where a backup GPT lives


def timed(cmd: list[str]) -> tuple[float, int, float]:
    """Wall seconds, peak RSS (bytes) and CPU seconds (user + system) of one command.
    CPU time is shown because wall time on a shared machine is noisy."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.monotonic() - start
    if status != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.read().decode()}")
    return elapsed, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime


def ours(image: Path, target: str) -> list[str]:
    """The Python API a deploy agent calls (partition.copy.write_image), in a fresh
    interpreter so its start-up counts as qemu-img's does. (``configdrive deploy`` adds
    the GPT fix-up and rescan after the copy, which neither peer does.)"""
    code = "import sys; from partition.copy import write_image; write_image(sys.argv[1], sys.argv[2])"
    return [PY, "-c", code, str(image), target]


def warm(path: Path) -> None:
    with open(path, "rb") as fp:
        while fp.read(16 * MiB):
            pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gib", type=float, default=2)
    ap.add_argument("--big-gib", type=float, default=8, help="size for the peak-RSS check (0: skip)")
    ap.add_argument("--data-mib", type=int, default=400)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="stream-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    size = int(args.size_gib * (1 << 30))
    raw, qcow, cqcow = work / "src.raw", work / "src.qcow2", work / "src-c.qcow2"
    print(f"# sources in {work}: {size / (1 << 30):g} GiB virtual, {args.data_mib} MiB of data")
    make_source(raw, size, args.data_mib)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow], check=True)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-c", raw, cqcow], check=True)
    for p in (raw, qcow, cqcow):
        warm(p)
        print(f"#   {p.name}: {p.stat().st_size / MiB:.0f} MiB on disk")

    backing = work / "loop-backing.img"
    with open(backing, "wb") as fp:
        fp.truncate(size + 64 * MiB)
    dev = subprocess.run(["losetup", "--find", "--show", backing], check=True,
                         capture_output=True, text=True).stdout.strip()
    results = []
    try:
        def row(label, peer_label, ours_cmd, peer_cmd, prepare=None):
            runs = {}
            for name, cmd in (("ours", ours_cmd), (peer_label, peer_cmd)):
                best = None
                for _ in range(3):
                    if prepare:
                        prepare()
                    t, rss, cpu = timed(cmd)
                    best = (t, rss, cpu) if best is None or t < best[0] else best
                runs[name] = best
            ratio = runs[peer_label][0] / runs["ours"][0]
            results.append((label, runs["ours"], peer_label, runs[peer_label], ratio))
            o, p = runs["ours"], runs[peer_label]
            print(f"{label:32s} ours {o[0]:5.2f}s cpu {o[2]:4.2f}s {o[1] / MiB:3.0f} MiB | "
                  f"{peer_label:12s} {p[0]:5.2f}s cpu {p[2]:4.2f}s {p[1] / MiB:3.0f} MiB | "
                  f"ratio {ratio:4.2f}", flush=True)

        file_target = work / "out.raw"

        def fresh_file():
            file_target.unlink(missing_ok=True)

        # qemu-img convert's default cache mode for the target is "unsafe" (no flush at
        # all); "-t writeback" flushes at the end, as we and dd conv=fsync do; ironic's
        # agent uses "-t directsync -S 0". All three shown.
        qemu_dev = ["qemu-img", "convert", "-n", "-f", "qcow2", "-O", "raw"]
        flushed = ["qemu-img", "convert", "-t", "writeback", "-n", "-f", "qcow2", "-O", "raw"]
        row("qcow2 -> loop device", "qemu-img", ours(qcow, dev), [*qemu_dev, str(qcow), dev])
        row("qcow2 -> loop device", "qemu-img-wb", ours(qcow, dev), [*flushed, str(qcow), dev])
        row("compressed qcow2 -> loop device", "qemu-img", ours(cqcow, dev), [*qemu_dev, str(cqcow), dev])
        row("compressed qcow2 -> loop device", "qemu-img-wb", ours(cqcow, dev), [*flushed, str(cqcow), dev])
        # What ironic-python-agent runs for a non-raw image: every block written, O_DSYNC.
        ironic = ["qemu-img", "convert", "-n", "-t", "directsync", "-S", "0", "-f", "qcow2", "-O", "raw"]
        row("qcow2 -> loop device", "qemu-img-ipa", ours(qcow, dev), [*ironic, str(qcow), dev])
        row("compressed qcow2 -> loop device", "qemu-img-ipa", ours(cqcow, dev), [*ironic, str(cqcow), dev])
        row("raw -> loop device", "dd", ours(raw, dev),
            ["dd", f"if={raw}", f"of={dev}", "bs=4M", "conv=fsync", "status=none"])
        for label, src in (("qcow2 -> file", qcow), ("compressed qcow2 -> file", cqcow)):
            row(label, "qemu-img", ours(src, str(file_target)),
                ["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(src), str(file_target)], fresh_file)
            row(label, "qemu-img-wb", ours(src, str(file_target)),
                ["qemu-img", "convert", "-t", "writeback", "-f", "qcow2", "-O", "raw", str(src),
                 str(file_target)], fresh_file)
        row("raw -> file", "dd", ours(raw, str(file_target)),
            ["dd", f"if={raw}", f"of={file_target}", "bs=4M", "conv=fsync", "status=none"], fresh_file)
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)
        backing.unlink(missing_ok=True)

    if args.big_gib:
        big = int(args.big_gib * (1 << 30))
        bq = work / "big.qcow2"
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-c", raw, bq], check=True)
        subprocess.run(["qemu-img", "resize", bq, str(big)], check=True, capture_output=True)
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P 0x5a {big - 64 * MiB} 64M", bq],
                       check=True, capture_output=True)
        out = work / "big.raw"
        out.unlink(missing_ok=True)
        t, rss, cpu = timed(ours(bq, str(out)))
        print(f"{'%g GiB compressed qcow2 -> file' % args.big_gib:32s} ours {t:5.2f}s cpu "
              f"{cpu:4.2f}s {rss / MiB:3.0f} MiB (peak RSS)")
        out.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
