"""Stream benchmark: configdrive's image writer against qemu-img and dd, side by side in one
run, on the same sources and the same loop devices, one backed by a file on the disk and
one backed by RAM (/dev/shm).

    python benchmarks/stream_images.py [--sizes 4,16] [--data-gib 1] [--runs 3] [--workdir DIR]

Why two loop devices: this machine's disk is shared and its timings swing 2-5x between
runs; the RAM-backed device shows our own overhead (CPU, calls, flushes) without that noise,
the disk-backed one what a user sees.

How each figure is taken, so that no tool is favoured:
- `sync` before every command; the command and a `sync` after it are timed together, so a
  tool that leaves its data in the page cache (plain `qemu-img convert -n`) pays for the
  flush it skipped, as a deploy that powers the node off must.
- the tools alternate (ours, peer, ours, peer, ...) and each figure is the median of
  ``--runs``; CPU time (user + system, from wait4) and peak RSS are shown beside wall time.
- sources are read once before timing, so every tool reads them from the page cache.

The source is shaped like a cloud image: ``--data-gib`` of data (half random, half
text-like) in 4 MiB pieces over the first half of the disk, zeros elsewhere, random bytes
in the last MiB (where a backup GPT lives); as raw, qcow2 and compressed qcow2, all made by
qemu-img. Rows that make a peer write every zero byte (dd, qemu-img as IPA runs it) run
only at the smallest size: at 16 GiB they would fill the RAM-backed device with zeros.
The HTTP row serves the qcow2 from 127.0.0.1 (a server in this process that honours Range)
and compares our read-in-place against IPA's route: download the image to a file in
/dev/shm (IPA's ramdisk /tmp is RAM), then `qemu-img convert -n`, then remove the file.

What the writer does that these rows show:
- data goes to a block device with O_DIRECT (as `dd oflag=direct` writes), copied once
  into an aligned buffer: written through the page cache, the kernel's copy into freshly
  allocated pages dominated our CPU time and swung widely between runs. qemu-img writes
  through the page cache, so its times vary more; a deploy meets a device with a cold
  page cache, which is what qemu-img meets here too.
- each run of zeros is zeroed (write-zeroes, never discard; BLKZEROOUT where the device
  cannot) on a thread of its own beside the data writes, rather than the whole range in
  one call first, which freed blocks the data then had to allocate again;
- zero detection compares each 64 KiB grain in place, without copying it out first;
- still paid, and kept: the first and last MiB held back and three fsyncs (zeroed ends,
  body, head), so that a crash never leaves a half-written disk that looks bootable;
  Python's start-up; a peak RSS above qemu-img's (the interpreter and its modules, the
  read-ahead and the aligned buffer).
qcow2 over HTTP(S) is read in place by Range requests: no temporary file, and a peak RSS
that does not grow with the image, where IPA's route needs the whole image in RAM first.
A compressed stream (qcow2 inside gzip/xz/zstd) still needs a spool, and says so.

Needs root (loop devices).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import RangeServer

MiB = 1 << 20
GiB = 1 << 30
PY = sys.executable


def make_source(path: Path, size: int, data: int) -> None:
    """``data`` bytes in 4 MiB pieces spread over the first half, zeros elsewhere."""
    rnd = random.Random(42)
    text = b"".join(b"usr/lib/python3/dist-packages/module_%06d.py\n" % i for i in range(100_000))
    text_piece = (text * (4 * MiB // len(text) + 1))[: 4 * MiB]
    with open(path, "wb") as fp:
        fp.truncate(size)
        pieces = data // (4 * MiB)
        stride = (size // 2) // pieces
        for i in range(pieces):
            fp.seek(i * stride)
            fp.write(rnd.randbytes(4 * MiB) if i % 2 else text_piece)
        fp.seek(size - MiB)
        fp.write(rnd.randbytes(MiB))


def timed(cmd: list[str]) -> tuple[float, float, int]:
    """Wall seconds (command + sync), CPU seconds and peak RSS (bytes) of one command.
    The peak RSS is GNU time's (%M): a child forked from this Python process would count
    this process's pages until its exec."""
    import time
    subprocess.run(["sync"], check=True)
    start = time.monotonic()
    proc = subprocess.Popen(["/usr/bin/time", "-f", "%M", *cmd], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    subprocess.run(["sync"], check=True)
    elapsed = time.monotonic() - start
    if status != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {err.decode()}")
    return elapsed, usage.ru_utime + usage.ru_stime, int(err.split()[-1]) * 1024


def ours(image: Path, target: str) -> list[str]:
    """The Python API a deploy agent calls (partition.copy.write_image), in a fresh
    interpreter so its start-up counts as qemu-img's does."""
    code = "import sys; from partition.writing.copy import write_image; write_image(sys.argv[1], sys.argv[2])"
    return [PY, "-c", code, str(image), target]


def warm(path: Path) -> None:
    with open(path, "rb") as fp:
        while fp.read(16 * MiB):
            pass


class LoopDevice:
    """A loop device over a sparse file of ``size`` bytes in ``directory``."""

    def __init__(self, directory: Path, size: int):
        self.backing = directory / f"bench-loop-{os.getpid()}.img"
        with open(self.backing, "wb") as fp:
            fp.truncate(size)
        self.path = subprocess.run(["losetup", "--find", "--show", self.backing], check=True,
                                   capture_output=True, text=True).stdout.strip()

    def close(self) -> None:
        subprocess.run(["losetup", "-d", self.path], check=False)
        self.backing.unlink(missing_ok=True)


def compare(label: str, ours_cmd: list[str], peer: str, peer_cmd: list[str], runs: int) -> dict:
    """Alternate the two commands ``runs`` times; medians of wall, CPU, RSS for each."""
    samples = {"ours": [], peer: []}
    for _ in range(runs):
        for name, cmd in (("ours", ours_cmd), (peer, peer_cmd)):
            samples[name].append(timed(cmd))
    med = {name: tuple(statistics.median(s[i] for s in runs_) for i in range(3))
           for name, runs_ in samples.items()}
    o, p = med["ours"], med[peer]
    print(f"{label:40s} ours {o[0]:6.2f}s cpu {o[1]:5.2f}s {o[2] / MiB:4.0f} MiB | "
          f"{peer:16s} {p[0]:6.2f}s cpu {p[1]:5.2f}s {p[2] / MiB:4.0f} MiB | "
          f"peer/ours {p[0] / o[0]:5.2f}", flush=True)
    return {"case": label, "peer": peer, "ours": o, "theirs": p, "ratio": p[0] / o[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="4,16", help="virtual sizes in GiB, comma-separated")
    ap.add_argument("--data-gib", type=float, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", default=None, help="where sources and the disk-backed loop live")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="stream-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    sizes = [int(float(s) * GiB) for s in args.sizes.split(",")]
    data = int(args.data_gib * GiB)
    results = []
    server = RangeServer(work)
    for size in sizes:
        raw, qcow, cqcow = work / "src.raw", work / "src.qcow2", work / "src-c.qcow2"
        for p in (raw, qcow, cqcow):
            p.unlink(missing_ok=True)
        make_source(raw, size, data)
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow], check=True)
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-c", raw, cqcow], check=True)
        print(f"\n# {size / GiB:g} GiB virtual, {data / GiB:g} GiB of data; on disk: " + ", ".join(
            f"{p.name} {p.stat().st_blocks * 512 / MiB:.0f} MiB" for p in (raw, qcow, cqcow)))
        for p in (raw, qcow, cqcow):
            warm(p)
        small = size == min(sizes)
        for where, directory in (("disk", work), ("RAM", Path("/dev/shm"))):
            dev = LoopDevice(directory, size + 64 * MiB)
            try:
                tag = f"{size / GiB:g}G {where}-backed loop:"

                def qemu(fmt, src, *extra):
                    return ["qemu-img", "convert", "-n", *extra, "-f", fmt, "-O", "raw", str(src), dev.path]
                results.append(compare(f"{tag} qcow2", ours(qcow, dev.path),
                                       "qemu-img -n", qemu("qcow2", qcow), args.runs))
                results.append(compare(f"{tag} compressed qcow2", ours(cqcow, dev.path),
                                       "qemu-img -n", qemu("qcow2", cqcow), args.runs))
                results.append(compare(f"{tag} raw", ours(raw, dev.path),
                                       "qemu-img -f raw", qemu("raw", raw), args.runs))
                url = f"{server.url}/{qcow.name}"
                spool = Path("/dev/shm") / f"bench-ipa-{os.getpid()}.qcow2"
                ipa_route = ["sh", "-c", 'curl -sf -o "$1" "$2" && qemu-img convert -n -f qcow2 '
                             '-O raw "$1" "$3"; s=$?; rm -f "$1"; exit $s', "sh",
                             str(spool), url, dev.path]
                results.append(compare(f"{tag} qcow2 over HTTP", ours(url, dev.path),
                                       "curl + qemu-img", ipa_route, args.runs))
                if small:
                    # What ironic-python-agent runs for a non-raw image: every block, O_DSYNC.
                    results.append(compare(f"{tag} qcow2", ours(qcow, dev.path), "qemu-img (IPA)",
                                           qemu("qcow2", qcow, "-t", "directsync", "-S", "0", "-W"),
                                           args.runs))
                    results.append(compare(f"{tag} raw", ours(raw, dev.path), "dd oflag=direct",
                                           ["dd", f"if={raw}", f"of={dev.path}", "bs=4M",
                                            "oflag=direct", "status=none"], args.runs))
            finally:
                dev.close()
    for p in (work / "src.raw", work / "src.qcow2", work / "src-c.qcow2"):
        p.unlink(missing_ok=True)
    worst = min(results, key=lambda r: r["ratio"])
    print(f"\n# slowest against its peer: {worst['case']} vs {worst['peer']}: {worst['ratio']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
