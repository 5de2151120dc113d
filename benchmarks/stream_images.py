"""Stream benchmark: `configdrive deploy` against qemu-img, dd and the decompressor
pipelines, side by side in one run, on the same sources and the same loop devices, one
backed by a file on the disk and one backed by RAM (/dev/shm); and every row against the
device's own limit for the image, measured in the same run.

    python benchmarks/stream_images.py [--sizes 4] [--data-gib 1] [--runs 3] [--workdir DIR]

Why two loop devices: this machine's disk is shared and its timings swing 2-5x between
runs; the RAM-backed device shows our own overhead (CPU, calls, flushes) without that noise,
the disk-backed one what a user sees.

How each figure is taken, so that no tool is favoured:
- `sync` before every command; the command and a `sync` after it are timed together, so a
  tool that leaves its data in the page cache (plain `qemu-img convert -n`) pays for the
  flush it skipped, as a deploy that powers the node off must.
- the tools alternate (ours, peer, limit, ours, peer, limit, ...) and each figure is the
  median of ``--runs``; CPU time (user u + system s, from wait4, children included) and
  peak RSS are shown beside wall time.
- every timed command meets the same device: detached, its backing file allocated whole
  (a used disk) and attached again first, untimed (``LoopDevice.renew`` says why: one
  tool's zeroing call could switch the device's zeroing off for every tool after it).
- sources are read once before timing, so every tool reads them from the page cache.
- ours is the installed command (`configdrive deploy -q --device DEV --image IMAGE`), a
  fresh process, so its start-up counts as qemu-img's does; the package is byte-compiled
  first, as `pip install` leaves it.

The limit: the longer of (i) writing the image's data extents alone (from `qemu-img map
--output=json` of the raw image) with O_DIRECT at their offsets and (ii) zeroing its zero
runs with the device's own write-zeroes (fallocate PUNCH_HOLE on the device, the call our
deploy makes), each by one xfs_io process for all extents (a dd or blkdiscard per extent
spends more on process start-up than on the writes); beside it, (iii) both at once, which
is what a deploy must do. It is measured after every round of every row; its medians are
the limits of that device, and each row is shown against (i)/(ii) and against (iii).

The source is shaped like a cloud image: ``--data-gib`` of data (half random, half
text-like) in 4 MiB pieces over the first half of the disk, zeros elsewhere, random bytes
in the last MiB (where a backup GPT lives); as raw, qcow2 and compressed qcow2, all made by
qemu-img, and as compressed raw streams in the forms that can be read in parallel: xz
made by `xz -T2` (blocks), zstd in 64 MiB frames and gzip in 64 MiB members (`split
--filter`), each against the pipeline a user would type (`xz -T0 -dc | dd oflag=direct`,
`zstd -dc | dd ...`, `pigz -dc | dd ...`). Rows that make a peer write every zero byte
(dd, the pipelines, qemu-img as IPA runs it) run only at the smallest size: at 16 GiB they
would fill the RAM-backed device with zeros.
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
  one call first, which freed blocks the data then had to allocate again; the runs the
  image's own map names (qcow2 tables, a file's holes) are queued there before the first
  data write, so the device zeroes while the writer reads (0.08-0.1 s of these rows);
- zero detection compares each 64 KiB grain in place, without copying it out first;
- still paid, and kept: the first and last MiB held back and three fsyncs (zeroed ends,
  body, head), so that a crash never leaves a half-written disk that looks bootable;
  Python's start-up; a peak RSS above qemu-img's (the interpreter and its modules, the
  read-ahead and the aligned buffer).
- where the time goes against the limit: each of our rows shows the copy alone beside the
  whole command (``copy_seconds``: the deploy's own figure, from the first read of the
  image's data to the fsync after its head) and the copy against both at once. The rest
  is fixed cost: on a 4 GiB qcow2 deploy onto the renewed RAM-backed device (strace and
  timestamps), about 0.1 s from execve to the device's open (the interpreter, its
  imports, the argument parser), 0.02 s opening the image (every L2 entry checked),
  0.03 s from there to the first write (first MiB read, both ends zeroed and flushed),
  0.015 s exit. On a loop device one kernel worker both copies the data into the backing
  file and frees its pages for the zero runs, so no tool doing both gets below "both at
  once" there; the longer of the two alone is what a device that zeroes beside its
  writes would allow.
qcow2 over HTTP(S) is read in place by Range requests: no temporary file, and a peak RSS
that does not grow with the image, where IPA's route needs the whole image in RAM first.
A compressed stream (qcow2 inside gzip/xz/zstd) still needs a spool, and says so.

Needs root (loop devices) and xfs_io (xfsprogs).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import RangeServer, workdir

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


def start(cmd: list) -> subprocess.Popen:
    """``cmd`` started under GNU time, for its peak RSS (%M): a child forked from this
    Python process would count this process's pages until its exec."""
    return subprocess.Popen(["/usr/bin/time", "-f", "%M", *map(str, cmd)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen) -> tuple[float, float, int, str]:
    """User and system CPU seconds (the command's and its children's, from wait4), peak
    RSS (bytes) and standard output (a few lines at most: read before standard error,
    where time's figure comes last) of a command from ``start``; a failure ends the
    benchmark."""
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"{' '.join(proc.args[3:])} failed: {err.decode()}")
    return usage.ru_utime, usage.ru_stime, int(err.split()[-1]) * 1024, out.decode()


def timed(cmd: list) -> tuple[float, float, float, int, str]:
    """Wall seconds (command + sync), user and system CPU seconds, peak RSS (bytes) and
    standard output of one command."""
    subprocess.run(["sync"], check=True)
    begun = time.monotonic()
    user, system, rss, out = finish(start(cmd))
    subprocess.run(["sync"], check=True)
    return time.monotonic() - begun, user, system, rss, out


def ours(image: Path | str, target: str) -> list[str]:
    """What a user runs: `configdrive deploy` (the installed command beside this Python),
    a fresh process, so its start-up counts as qemu-img's does. With ``--json``: its
    summary's ``image.seconds`` is the copy alone (``copy_seconds``)."""
    return [str(Path(PY).with_name("configdrive")), "deploy", "-q", "--json", "--device",
            target, "--image", str(image)]


def copy_seconds(summary: str) -> float:
    """The copy's own time in a deploy's JSON summary: from the first read of the image's
    data to the fsync after its head, so without start-up (interpreter, imports), the
    checks made when the device and the image are opened, and exit."""
    return json.loads(summary)["image"]["seconds"]


def byte_compiled() -> None:
    """Compile the installed configdrive and partition packages to bytecode first, as
    `pip install` does: from an editable install, or with PYTHONDONTWRITEBYTECODE set,
    every deploy would otherwise compile its modules from source (0.06 s of CPU each)."""
    import importlib.util
    where = [d for name in ("configdrive", "partition")
             for d in importlib.util.find_spec(name).submodule_search_locations]
    subprocess.run([PY, "-m", "compileall", "-q", *where], check=True, stdout=subprocess.DEVNULL)


def warm(path: Path) -> None:
    with open(path, "rb") as fp:
        while fp.read(16 * MiB):
            pass


class LoopDevice:
    """A loop device over a sparse file of ``size`` bytes in ``directory``."""

    def __init__(self, directory: Path, size: int, name: str = "bench-loop"):
        self.backing, self.size = directory / f"{name}-{os.getpid()}.img", size
        with open(self.backing, "wb") as fp:
            fp.truncate(size)
        self.path = subprocess.run(["losetup", "--find", "--show", self.backing], check=True,
                                   capture_output=True, text=True).stdout.strip()

    def renew(self) -> None:
        """Before every timed command (untimed): the same device node detached and
        attached again, over its backing file with every block allocated, so that each
        command meets the same device, as provisioned, holding a used disk. Why both:
        - the loop driver turns the device's write-zeroes off for good at the first one
          its backing file refuses (Linux 6.10, 5f75e081ab5c "loop: Disable fallocate()
          zero and discard if not supported"): tmpfs refuses ZERO_RANGE, which is what
          BLKZEROOUT and `blkdiscard -z` ask for, so one such call made every later
          command on a RAM-backed device, ours included, zero by writing zero pages;
          attaching again restores the device's limits;
        - what a zeroing costs depends on what the device holds (freeing 3 GiB of tmpfs
          pages took 0.47 s, zeroing the same range over holes 0.02 s), so each command
          would otherwise be charged for what the one before it left."""
        subprocess.run(["losetup", "-d", self.path], check=True)
        subprocess.run(["fallocate", "-l", str(self.size), self.backing], check=True)
        subprocess.run(["losetup", self.path, self.backing], check=True)

    def close(self) -> None:
        subprocess.run(["losetup", "-d", self.path], check=False)
        self.backing.unlink(missing_ok=True)


def extents(raw: Path) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(data extents, zero runs) of a sparse raw image, as (offset, length), from
    `qemu-img map --output=json` (its allocated and unallocated ranges)."""
    found = json.loads(subprocess.run(["qemu-img", "map", "--output=json", "-f", "raw", str(raw)],
                                      check=True, capture_output=True, text=True).stdout)
    runs: dict[bool, list[tuple[int, int]]] = {True: [], False: []}
    for ext in found:
        kind = runs[bool(ext["data"])]
        if kind and sum(kind[-1]) == ext["start"]:
            kind[-1] = (kind[-1][0], kind[-1][1] + ext["length"])
        else:
            kind.append((ext["start"], ext["length"]))
    return runs[True], runs[False]


class Limit:
    """The device's own speed for this image, measured beside the deploys, each after
    ``LoopDevice.renew`` and a `sync`, and timed with the `sync` after it, as the deploys
    are: writing the image's data extents alone with O_DIRECT; zeroing its zero runs with
    the device's own write-zeroes (fallocate PUNCH_HOLE on the device, which the kernel
    turns into write-zeroes that may unmap but must read back as zeros: what our deploy
    asks for; ZERO_RANGE, `blkdiscard -z`'s call, is what tmpfs refuses, see ``renew``);
    and the two at once. One xfs_io process for all extents of a kind: a process per
    extent (dd, blkdiscard) costs more than the writes of a small image.

    ``seconds``: the longer of the first two (issue 25's limit). ``together``: the
    system's tools doing both at once, what a deploy must do; on a loop device one
    kernel worker serves both (the copy into the backing file and the freeing of its
    pages), so together costs about their sum there."""

    def __init__(self, raw: Path, device: "LoopDevice"):
        data, zeros = extents(raw)
        self.device = device
        self.data_bytes, self.zero_bytes = sum(n for _, n in data), sum(n for _, n in zeros)
        self.data_runs, self.zero_runs = len(data), len(zeros)
        writes = [a for off, n in data for a in ("-c", f"pwrite -q -i {raw} -s {off} -b 4m {off} {n}")]
        self.write_cmd = ["xfs_io", "-d", *writes, device.path]
        self.zero_cmd = ["xfs_io", *[a for off, n in zeros for a in ("-c", f"fpunch {off} {n}")],
                         device.path]
        self.both_cmd = ["sh", "-c", f"{shlex.join(self.write_cmd)} & {shlex.join(self.zero_cmd)}; "
                         "s=$?; wait $! && exit $s"]
        self.samples: dict[str, list[float]] = {"data": [], "zero": [], "together": []}

    def measure(self) -> None:
        for kind, cmd in (("data", self.write_cmd), ("zero", self.zero_cmd),
                          ("together", self.both_cmd)):
            self.device.renew()
            self.samples[kind].append(timed(cmd)[0])

    def seconds(self) -> float:
        return max(statistics.median(self.samples[k]) for k in ("data", "zero"))

    def together(self) -> float:
        return statistics.median(self.samples["together"])

    def describe(self, tag: str) -> str:
        data, zero = (statistics.median(self.samples[k]) for k in ("data", "zero"))
        return (f"# physical limit, {tag} (medians of {len(self.samples['data'])}): "
                f"data {self.data_bytes / GiB:.2f} GiB in {self.data_runs} extents, O_DIRECT "
                f"(xfs_io pwrite) {data:.2f}s; zero runs {self.zero_bytes / GiB:.2f} GiB in "
                f"{self.zero_runs} runs (xfs_io fpunch) {zero:.2f}s; limit (the longer) "
                f"{self.seconds():.2f}s; both at once {self.together():.2f}s")


def compare(label: str, ours_cmd: list, peer: str, peer_cmd: list, runs: int,
            limit: Limit) -> dict:
    """Alternate the two commands ``runs`` times, each round ended by a measure of the
    limit, each command on the device renewed (``LoopDevice.renew``); medians of wall,
    user and system CPU, RSS for each."""
    samples = {"ours": [], peer: []}
    for _ in range(runs):
        for name, cmd in (("ours", ours_cmd), (peer, peer_cmd)):
            limit.device.renew()
            samples[name].append(timed(cmd))
        limit.measure()
    med = {name: tuple(statistics.median(s[i] for s in runs_) for i in range(4))
           for name, runs_ in samples.items()}
    o, p = med["ours"], med[peer]
    copy = statistics.median(copy_seconds(s[4]) for s in samples["ours"])
    print(f"{label:44s} ours {o[0]:6.2f}s (copy {copy:5.2f}s) cpu {o[1]:5.2f}u+{o[2]:4.2f}s "
          f"{o[3] / MiB:4.0f} MiB | {peer:22s} {p[0]:6.2f}s cpu {p[1]:5.2f}u+{p[2]:4.2f}s "
          f"{p[3] / MiB:4.0f} MiB | peer/ours {p[0] / o[0]:5.2f}", flush=True)
    return {"case": label, "peer": peer, "ours": o, "copy": copy, "theirs": p,
            "ratio": p[0] / o[0]}


def against_limit(results: list[dict], limit: Limit, tag: str) -> None:
    """Each row of one device against the limit measured on it: the longer of data and
    zeroing alone, and the two at once; and our copy alone (``copy_seconds``) against
    both at once, where the rest of ours is start-up, opening and exit."""
    print(limit.describe(tag))
    print(f"{'case':44s} {'ours/limit':>10s} {'ours/both':>9s} {'copy/both':>9s} "
          f"{'peer/limit':>10s} {'peer/ours':>9s}  peer")
    for r in results:
        print(f"{r['case']:44s} {r['ours'][0] / limit.seconds():10.2f} "
              f"{r['ours'][0] / limit.together():9.2f} {r['copy'] / limit.together():9.2f} "
              f"{r['theirs'][0] / limit.seconds():10.2f} {r['ratio']:9.2f}  {r['peer']}")


def streams(raw: Path) -> dict[str, tuple[Path, str, str]]:
    """The raw image as the compressed streams a distribution publishes, each in the form
    that can be read in parallel: xz in blocks (`xz -T2`), zstd in frames and gzip in
    members (64 MiB of the image each, through split --filter); per kind: the file, what
    it holds, the decompressor of the pipeline a user would type."""
    made = {"xz": (raw.with_suffix(".raw.xz"), "xz -T2 blocks", "xz -T0 -dc"),
            "zstd": (raw.with_suffix(".raw.zst"), "64 MiB frames", "zstd -dc"),
            "gzip": (raw.with_suffix(".raw.gz"), "64 MiB members", "pigz -dc")}
    with open(made["xz"][0], "wb") as out:
        subprocess.run(["xz", "-T2", "-c", raw], stdout=out, check=True)
    for kind, tool in (("zstd", "zstd -q -c"), ("gzip", "pigz -c")):
        with open(made[kind][0], "wb") as out:
            subprocess.run(["split", "-b", "64M", f"--filter={tool}", raw], stdout=out, check=True)
    return made


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="4", help="virtual sizes in GiB, comma-separated")
    ap.add_argument("--data-gib", type=float, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", default=None, help="where sources and the disk-backed loop live")
    args = ap.parse_args()
    work = workdir(args.workdir, "stream-bench-")
    byte_compiled()
    sizes = [int(float(s) * GiB) for s in args.sizes.split(",")]
    data = int(args.data_gib * GiB)
    results = []
    server = RangeServer(work)
    raw, qcow, cqcow = work / "src.raw", work / "src.qcow2", work / "src-c.qcow2"
    for size in sizes:
        make_source(raw, size, data)
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow], check=True)
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-c", raw, cqcow], check=True)
        small = size == min(sizes)
        compressed = streams(raw) if small else {}
        sources = [raw, qcow, cqcow, *(f for f, _, _ in compressed.values())]
        print(f"\n# {size / GiB:g} GiB virtual, {data / GiB:g} GiB of data; on disk: " + ", ".join(
            f"{p.name} {p.stat().st_blocks * 512 / MiB:.0f} MiB" for p in sources))
        for p in sources:
            warm(p)
        for where, directory in (("disk", work), ("RAM", Path("/dev/shm"))):
            dev = LoopDevice(directory, size + 64 * MiB)
            rows = []
            try:
                tag = f"{size / GiB:g}G {where}-backed loop"
                limit = Limit(raw, dev)

                def row(what, image, peer, peer_cmd):
                    rows.append(compare(f"{tag}: {what}", ours(image, dev.path), peer, peer_cmd,
                                        args.runs, limit))

                def qemu(fmt, src, *extra):
                    return ["qemu-img", "convert", "-n", *extra, "-f", fmt, "-O", "raw", str(src), dev.path]
                row("qcow2", qcow, "qemu-img -n", qemu("qcow2", qcow))
                row("compressed qcow2", cqcow, "qemu-img -n", qemu("qcow2", cqcow))
                row("raw", raw, "qemu-img -f raw", qemu("raw", raw))
                url = f"{server.url}/{qcow.name}"
                spool = Path("/dev/shm") / f"bench-ipa-{os.getpid()}.qcow2"
                ipa_route = ["sh", "-c", 'curl -sf -o "$1" "$2" && qemu-img convert -n -f qcow2 '
                             '-O raw "$1" "$3"; s=$?; rm -f "$1"; exit $s', "sh",
                             str(spool), url, dev.path]
                row("qcow2 over HTTP", url, "curl + qemu-img", ipa_route)
                if small:
                    # Rows whose peer writes every zero byte: at the smallest size only.
                    # What ironic-python-agent runs for a non-raw image: every block, O_DSYNC.
                    row("qcow2", qcow, "qemu-img (IPA)",
                        qemu("qcow2", qcow, "-t", "directsync", "-S", "0", "-W"))
                    row("raw", raw, "dd oflag=direct", ["dd", f"if={raw}", f"of={dev.path}", "bs=4M",
                                                        "oflag=direct", "status=none"])
                    for kind, (path, form, unpack) in compressed.items():
                        row(f"raw.{path.suffix[1:]}, {form}", path, f"{unpack} | dd",
                            ["bash", "-o", "pipefail", "-c", f'{unpack} "$1" | dd of="$2" bs=4M '
                             'iflag=fullblock oflag=direct status=none', "bash", path, dev.path])
                against_limit(rows, limit, tag)
                results += rows
            finally:
                dev.close()
    for p in sources:
        p.unlink(missing_ok=True)
    if not args.workdir:
        work.rmdir()
    worst = min(results, key=lambda r: r["ratio"])
    print(f"\n# slowest against its peer: {worst['case']} vs {worst['peer']}: {worst['ratio']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
