"""ironic's write_image deploy step, side by side: configdrive's hardware manager against
ironic-python-agent 13.0's own (download to its cache, then ``qemu-img convert -O
host_device -t directsync -S 0 -W``), on the same qcow2 over local HTTP, onto the same
loop device, each through IPA's real deploy step (tests/ipa_agent.py in .peers/ipa).

    python benchmarks/ipa_write_image.py [--size-gib 2] [--data-mib 400] [--runs 3]

Per run: wall time of the agent process, its peak RSS (wait4, children included, so
qemu-img counts for IPA), and the peak temporary space: each run gets a fresh tmpfs as
its TMPDIR (a ramdisk's /tmp is RAM too), whose use is sampled every 20 ms. Needs root
(loop device, mount) and the IPA venv (scripts/install.sh test).

Both download a qcow2 whole first (IPA to its cache, verified; we likewise, since qcow2
needs random access); IPA then runs `qemu-img convert -t directsync -S 0`, which writes
every block, zeros included, with O_DSYNC, while we zero runs of zeros with one call and
flush three times. Our writer runs inside the agent's process, hence its higher RSS. A
raw image is streamed by both (IPA with ironic's default `stream_raw_images`), with no
temporary space.
"""

from __future__ import annotations

import argparse
import json
import hashlib
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from stream_images import make_source

MiB = 1 << 20
ROOT = Path(__file__).resolve().parent.parent
AGENT_PYTHON = ROOT / ".peers" / "ipa" / "bin" / "python"
DRIVER = ROOT / "tests" / "ipa_agent.py"
CONF = ("[DEFAULT]\nimage_download_connection_retries = 0\ndisk_wait_attempts = 1\n"
        "disk_wait_delay = 0\n")


def serve(directory: Path) -> tuple[subprocess.Popen, str]:
    port = 8000 + os.getpid() % 1000
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                               "--directory", str(directory)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    return server, f"http://127.0.0.1:{port}"


def one_step(dev: str, url: str, digest: str, ours: bool, work: Path) -> tuple[float, int, int]:
    """(seconds, peak RSS, peak temp bytes) of one write_image deploy step."""
    tmp = work / "tmpfs"
    tmp.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8g", "tmpfs", tmp], check=True)
    try:
        conf = work / "ipa.conf"
        conf.write_text(CONF + ("" if ours else "[configdrive]\nwrite_image = false\n"))
        node = {"uuid": "7d3c9a51-1111-4a2b-9c3d-5e6f7a8b9c0d", "instance_info": {},
                "properties": {"root_device": {"name": dev}}, "driver_internal_info": {}}
        info = {"id": "bench", "urls": [url], "image_type": "whole-disk", "disk_format": "qcow2",
                "os_hash_algo": "sha256", "os_hash_value": digest}
        peak = [0]
        done = threading.Event()

        def sample():
            while not done.is_set():
                st = os.statvfs(tmp)
                peak[0] = max(peak[0], (st.f_blocks - st.f_bfree) * st.f_frsize)
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        proc = subprocess.Popen([AGENT_PYTHON, DRIVER, conf], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                env={**os.environ, "TMPDIR": str(tmp)})
        stdout, _ = proc.communicate(json.dumps({"device": dev, "node": node, "image_info": info}).encode())
        elapsed = time.monotonic() - started
        done.set()
        sampler.join()
        outcome = json.loads(stdout.decode().strip().splitlines()[-1])
        want = ["ConfigDriveHardwareManager" if ours else "GenericHardwareManager"]
        if outcome["status"] != "SUCCEEDED" or outcome["written_by"] != want:
            raise SystemExit(f"write_image failed or went elsewhere: {outcome}")
        # The largest process among those waited for: the agent, or qemu-img under it.
        # Each run is a fresh process of this script (see main), so this is its own.
        return elapsed, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, peak[0]
    finally:
        subprocess.run(["umount", tmp], check=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gib", type=float, default=2)
    ap.add_argument("--data-mib", type=int, default=400)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--one", choices=["ours", "ipa"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not AGENT_PYTHON.exists():
        raise SystemExit(f"{AGENT_PYTHON} is missing: run scripts/install.sh test")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="ipa-bench-"))
    www = work / "www"
    www.mkdir(parents=True, exist_ok=True)
    qcow = www / "disk.qcow2"
    size = int(args.size_gib * (1 << 30))
    if not qcow.exists():
        raw = work / "src.raw"
        make_source(raw, size, args.data_mib)
        # A whole-disk image has a partition table (both writers check for one after).
        subprocess.run(["sgdisk", "-n", "1:2048:0", raw], check=True, capture_output=True)
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow], check=True)
        raw.unlink()
    if args.one:
        return _one(args, work, qcow, size)
    subprocess.run([AGENT_PYTHON.with_name("pip"), "install", "-q", "--no-deps", ROOT],
                   check=True, stderr=subprocess.DEVNULL)
    print(f"# {qcow.name}: {size / (1 << 30):g} GiB virtual, {args.data_mib} MiB of data, "
          f"{qcow.stat().st_size / MiB:.0f} MiB as qcow2, served from 127.0.0.1")
    rows = {}
    for who in ("ours", "ipa"):
        for _ in range(args.runs):
            # One process per run, so that RUSAGE_CHILDREN is this run's alone.
            line = subprocess.run([sys.executable, __file__, "--one", who, "--workdir", work,
                                   "--size-gib", str(args.size_gib)], check=True,
                                  capture_output=True, text=True).stdout.strip().splitlines()[-1]
            seconds, rss, temp = json.loads(line)
            best = rows.get(who)
            rows[who] = (seconds, rss, temp) if best is None or seconds < best[0] else best
    o, p = rows["ours"], rows["ipa"]
    print(f"{'':28s} {'ours':>12s} {'IPA 13.0':>12s} {'IPA / ours':>11s}")
    print(f"{'wall time (best of %d)' % args.runs:28s} {o[0]:11.2f}s {p[0]:11.2f}s {p[0] / o[0]:11.2f}")
    print(f"{'peak RSS':28s} {o[1] / MiB:9.0f} MiB {p[1] / MiB:9.0f} MiB {p[1] / o[1]:11.2f}")
    print(f"{'peak temporary space':28s} {o[2] / MiB:9.0f} MiB {p[2] / MiB:9.0f} MiB "
          f"{p[2] / o[2] if o[2] else float('inf'):11.2f}")
    return 0


def _one(args, work: Path, qcow: Path, size: int) -> int:
    with open(qcow, "rb") as fp:
        digest = hashlib.file_digest(fp, "sha256").hexdigest()
    backing = work / "disk.img"
    with open(backing, "wb") as fp:
        fp.truncate(size + 128 * MiB)
    dev = subprocess.run(["losetup", "--find", "--show", backing], check=True,
                         capture_output=True, text=True).stdout.strip()
    server, base = serve(qcow.parent)
    try:
        result = one_step(dev, f"{base}/{qcow.name}", digest, args.one == "ours", work)
    finally:
        server.terminate()
        subprocess.run(["losetup", "-d", dev], check=False)
        backing.unlink(missing_ok=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
