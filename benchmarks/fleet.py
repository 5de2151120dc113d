"""Fleet benchmark: a rack provisioned from one image server, as ironic's conductor or a
Metal3 image cache sees it. ``--nodes`` deploys at once of one qcow2 from one HTTP server
on 127.0.0.1 (honouring Range; the benchmarks' RangeServer, a thread per connection in
this process), each onto its own RAM-backed loop device, against as many runs at once of
IPA's route: download the image to a file in /dev/shm (a ramdisk's /tmp is RAM), then
`qemu-img convert -O raw -n` onto the device, then remove the file.

    python benchmarks/fleet.py [--size-gib 1] [--data-mib 128] [--nodes 8] [--rounds 3]

Per fleet: wall time from the first start to the last exit and a `sync` after it (`sync`
before it too); per deploy: bytes the server sent for it (as a multiple of the file's
size), the requests it made, its own wall time, CPU (user + system, children included)
and peak RSS (wait4 of GNU time, as in stream_images.py); the server's CPU (this
process's, which does little else meanwhile). The two fleets alternate for ``--rounds``
rounds; figures are medians (per deploy: over all deploys of all rounds). The CPU line
says how busy the cores were: (deploys' CPU + server's CPU) / (wall x cores); the loop
devices' own kernel workers, which copy every block into RAM, are not in it. A third
fleet in each round is the devices' floor: on each device at once, the image's data
extents written with O_DIRECT beside its zero runs zeroed (stream_images.py's limit, both
at once, no network), to which both routes are compared. Every fleet meets the same devices:
each detached, its backing file allocated whole and attached again first, untimed
(stream_images.py's ``LoopDevice.renew`` says why).
Goal (issue 25): the fleet's wall time <= 0.7 of IPA's route, bytes <= 1.05x the file.
The source is stream_images.py's cloud-image shape; ours is its `configdrive deploy`
command, byte-compiled first as there.

Where a fleet's time goes (perf record -a during the fleets, wait4 of each deploy): on
this 2-core machine a fleet is CPU-bound, its wall time about the CPU of all its deploys
and the server over the cores it gets (other sessions' work takes its share too). Per
deploy, ours and IPA's route spend CPU of the same order at this shape: about a third of
ours is the interpreter's start-up and imports (half, before they were byte-compiled),
the rest the download and the O_DIRECT writes (mostly system time); the server, one
Python process, is a small share. IPA's
route writes through the page cache and pays at the `sync`: with other I/O or memory
pressure its system time and wall time grow severalfold, ours (O_DIRECT, no cache) much
less; so the ratio between the two swings from run to run more than the bytes and
requests, which do not. On RAM-backed loops that pressure is partly the benchmark's own:
each device's page cache holds what its backing file in /dev/shm holds again, which a
real disk would not cost (kswapd shows in IPA's fleet, hardly in ours).

Needs root (loop devices).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import RangeServer, workdir
from stream_images import (GiB, MiB, Limit, LoopDevice, byte_compiled, finish, make_source, ours,
                           start, warm)


def fleet(cmds: list[list], server: RangeServer) -> dict:
    """Run ``cmds`` all at once; the fleet's wall time, each command's figures (wall, user,
    system, RSS) and what the server sent for each (its client is its index)."""
    server.clients.clear()
    subprocess.run(["sync"], check=True)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    begun = time.monotonic()
    each: list = [None] * len(cmds)

    def one(i: int, proc: subprocess.Popen) -> None:
        try:
            user, system, rss, _ = finish(proc)
        except SystemExit as failed:          # a thread ends quietly on SystemExit: say why
            print(failed, file=sys.stderr, flush=True)
            return
        each[i] = (time.monotonic() - begun, user, system, rss)
    waiters = [threading.Thread(target=one, args=(i, start(cmd))) for i, cmd in enumerate(cmds)]
    for w in waiters:
        w.start()
    for w in waiters:
        w.join()
    subprocess.run(["sync"], check=True)
    wall = time.monotonic() - begun
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    if None in each:
        raise SystemExit("a deploy of the fleet failed (see above)")
    sent = [server.clients.get(f"node-{i}", {"requests": 0, "bytes": 0}) for i in range(len(cmds))]
    return {"wall": wall, "each": each, "sent": sent,
            "server_cpu": cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime}


def summary(runs: list[dict], size: int) -> dict:
    per = [(e, s) for r in runs for e, s in zip(r["each"], r["sent"])]

    def med(xs):
        return statistics.median(xs)
    cores = len(os.sched_getaffinity(0))
    busy = [(sum(e[1] + e[2] for e in r["each"]) + r["server_cpu"]) / (r["wall"] * cores) for r in runs]
    return {"wall": med([r["wall"] for r in runs]),
            "deploy_wall": med([e[0] for e, _ in per]), "deploy_wall_max": max(e[0] for e, _ in per),
            "user": med([e[1] for e, _ in per]), "system": med([e[2] for e, _ in per]),
            "rss": med([e[3] for e, _ in per]), "rss_max": max(e[3] for e, _ in per),
            "bytes": med([s["bytes"] / size for _, s in per]),
            "bytes_max": max(s["bytes"] / size for _, s in per),
            "requests": med([s["requests"] for _, s in per]),
            "server_cpu": med([r["server_cpu"] for r in runs]), "busy": med(busy)}


def report(o: dict, p: dict, nodes: int, rounds: int) -> None:
    print(f"{'medians of %d rounds' % rounds:40s} {'ours':>14s} {'IPA route':>14s} {'ours/IPA':>9s}")

    def line(what, a, b, fmt, ratio=True, goal=""):
        r = f"{a / b:9.2f}" if ratio and b else f"{'':9s}"
        print(f"{what:40s} {fmt.format(a):>14s} {fmt.format(b):>14s} {r}{goal}")
    line(f"fleet wall time ({nodes} at once)", o["wall"], p["wall"], "{:.2f}s", goal="  goal <= 0.70")
    line("one deploy's wall time (median)", o["deploy_wall"], p["deploy_wall"], "{:.2f}s")
    line("one deploy's wall time (slowest)", o["deploy_wall_max"], p["deploy_wall_max"], "{:.2f}s")
    line("CPU per deploy, user", o["user"], p["user"], "{:.2f}s")
    line("CPU per deploy, system", o["system"], p["system"], "{:.2f}s")
    line("server CPU per fleet", o["server_cpu"], p["server_cpu"], "{:.2f}s")
    line("cores busy (all CPU / wall x cores)", o["busy"], p["busy"], "{:.0%}", ratio=False)
    line("bytes sent per deploy (x file)", o["bytes"], p["bytes"], "{:.3f}", ratio=False,
         goal="           goal <= 1.05")
    line("bytes sent per deploy, most (x file)", o["bytes_max"], p["bytes_max"], "{:.3f}", ratio=False)
    line("requests per deploy", o["requests"], p["requests"], "{:g}", ratio=False)
    line("peak RSS per deploy (median)", o["rss"] / MiB, p["rss"] / MiB, "{:.0f} MiB")
    line("peak RSS per deploy (most)", o["rss_max"] / MiB, p["rss_max"] / MiB, "{:.0f} MiB")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gib", type=float, default=1)
    ap.add_argument("--data-mib", type=int, default=128)
    ap.add_argument("--nodes", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir", default=None, help="where the image is made and served from")
    args = ap.parse_args()
    work = workdir(args.workdir, "fleet-bench-")
    byte_compiled()
    size = int(args.size_gib * GiB)
    raw, qcow = work / "src.raw", work / "disk.qcow2"
    make_source(raw, size, args.data_mib * MiB)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow], check=True)
    warm(qcow)
    file_size = qcow.stat().st_size
    print(f"# {qcow.name}: {size / GiB:g} GiB virtual, {args.data_mib} MiB of data, "
          f"{file_size / MiB:.0f} MiB as qcow2, served with ranges from 127.0.0.1; "
          f"{args.nodes} RAM-backed loop devices")
    devs, runs = [], {"ours": [], "ipa": [], "limit": []}
    try:
        for i in range(args.nodes):
            devs.append(LoopDevice(Path("/dev/shm"), size + 64 * MiB, name=f"bench-fleet-{i}"))
        server = RangeServer(work)
        with server as base:
            url = f"{base}/{qcow.name}"
            spool = f"/dev/shm/bench-fleet-spool-{os.getpid()}"
            ipa_route = ('curl -sf -o "$1" "$2" && qemu-img convert -O raw -n -f qcow2 "$1" "$3"; '
                         's=$?; rm -f "$1"; exit $s')
            cmds = {"ours": [ours(f"{url}?node-{i}", d.path) for i, d in enumerate(devs)],
                    "ipa": [["sh", "-c", ipa_route, "sh", f"{spool}-{i}", f"{url}?node-{i}", d.path]
                            for i, d in enumerate(devs)],
                    "limit": [Limit(raw, d).both_cmd for d in devs]}
            for _ in range(args.rounds):
                for who in ("ours", "ipa", "limit"):
                    for d in devs:     # every fleet meets the same devices (LoopDevice.renew)
                        d.renew()
                    runs[who].append(fleet(cmds[who], server))
    finally:
        for d in devs:
            d.close()
        qcow.unlink(missing_ok=True)
        raw.unlink(missing_ok=True)
        if not args.workdir:
            work.rmdir()
    floor = statistics.median(r["wall"] for r in runs["limit"])
    report(summary(runs["ours"], file_size), summary(runs["ipa"], file_size), args.nodes, args.rounds)
    o, p = (statistics.median(r["wall"] for r in runs[who]) for who in ("ours", "ipa"))
    print(f"{'the devices at once (xfs_io, no network)':40s} {floor:13.2f}s  ours/floor {o / floor:.2f}, "
          f"IPA route/floor {p / floor:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
