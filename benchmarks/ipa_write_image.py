"""ironic's write_image deploy step, side by side, in the real ironic-python-agent 13.0
process driven over its REST API (tests/ipa_process.py): configdrive's hardware manager
against IPA's own write_image (download into its temporary directory, then ``qemu-img
convert -O host_device -t directsync -S 0 -W``), on the same qcow2 served over local HTTP
with byte ranges (as ironic's conductor, Metal3's httpd and Swift serve images), onto the
same kind of loop device.

    python benchmarks/ipa_write_image.py [--size-gib 2.5] [--data-mib 640] [--runs 3]

The agent's temporary directory is a tmpfs, as a ramdisk's /tmp is RAM: one of
--small-tmpfs-mib (128) for our path and for IPA's (which fails there for want of room:
its error is printed), and one with room for IPA's timed runs. Per run: wall time of the
write_image command, peak RSS of the agent process (VmHWM in /proc/PID/status, read
before it ends; qemu-img, IPA's child, is not in it) and peak use of the tmpfs (sampled
every 20 ms). Medians of --runs runs. Needs root (loop devices, mount, unshare) and the
IPA venv (scripts/install.sh test).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import RangeServer
from stream_images import make_source

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from ipa_process import Agent, agent_venv  # noqa: E402

MiB = 1 << 20
NODE = {"uuid": "7d3c9a51-1111-4a2b-9c3d-5e6f7a8b9c0d", "instance_info": {},
        "properties": {}, "driver_internal_info": {}}


class TmpfsPeak:
    """A fresh tmpfs of ``size`` bytes at ``path`` and its peak use while in the block."""

    def __init__(self, path: Path, size: int):
        self.path, self.size, self.peak = path, size, 0
        self._done = threading.Event()

    def __enter__(self) -> "TmpfsPeak":
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size}", "tmpfs", self.path],
                       check=True)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.is_set():
            st = os.statvfs(self.path)
            self.peak = max(self.peak, (st.f_blocks - st.f_bfree) * st.f_frsize)
            time.sleep(0.02)

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        subprocess.run(["umount", "-l", self.path], check=False)


def one_run(python: Path, work: Path, url: str, digest: str, size: int, ours: bool,
            tmpfs_size: int) -> dict:
    backing = work / "node-disk"
    with open(backing, "wb") as fp:
        fp.truncate(size + 128 * MiB)
    dev = subprocess.run(["losetup", "--find", "--show", backing], check=True,
                         capture_output=True, text=True).stdout.strip()
    info = {"id": "bench", "urls": [url], "image_type": "whole-disk", "disk_format": "qcow2",
            "os_hash_algo": "sha256", "os_hash_value": digest}
    try:
        with TmpfsPeak(work / "agent-tmp", tmpfs_size) as tmp, \
                Agent(python, work, dev, ours=ours, tmpdir=tmp.path) as agent:
            started = time.monotonic()
            result = agent.write_image(NODE, info)
            seconds = time.monotonic() - started
            rss = agent.peak_rss()
            log = agent.log()
        error = result.get("command_error")
        return {"ok": result.get("command_status") == "SUCCEEDED", "seconds": seconds,
                "rss": rss, "tmp": tmp.peak, "result": result,
                "error": error and f"{error.get('type')}: {error.get('details')}", "log": log}
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)
        backing.unlink(missing_ok=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gib", type=float, default=2.5)
    ap.add_argument("--data-mib", type=int, default=640)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--small-tmpfs-mib", type=int, default=128)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    python = agent_venv(ROOT)
    if python is None:
        raise SystemExit(f"{ROOT / '.peers' / 'ipa'} is missing: run scripts/install.sh test")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="ipa-bench-"))
    www = work / "www"
    www.mkdir(parents=True, exist_ok=True)
    qcow = www / "disk.qcow2"
    size = int(args.size_gib * (1 << 30))
    if not qcow.exists():
        raw = work / "src.raw"
        make_source(raw, size, args.data_mib * MiB)
        # A whole-disk image has a partition table (both writers check for one after).
        subprocess.run(["sgdisk", "-n", "1:2048:0", raw], check=True, capture_output=True)
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow], check=True)
        raw.unlink()
    with open(qcow, "rb") as fp:
        digest = hashlib.file_digest(fp, "sha256").hexdigest()
    small, roomy = args.small_tmpfs_mib * MiB, qcow.stat().st_size + 512 * MiB
    print(f"# {qcow.name}: {size / (1 << 30):g} GiB virtual, {args.data_mib} MiB of data, "
          f"{qcow.stat().st_size / MiB:.0f} MiB as qcow2, served with ranges from 127.0.0.1")
    with RangeServer(www) as base:
        url = f"{base}/{qcow.name}"
        runs = {"ours": [], "ipa": []}
        for _ in range(args.runs):
            for who, tmpfs in (("ours", small), ("ipa", roomy)):
                run = one_run(python, work, url, digest, size, who == "ours", tmpfs)
                if not run["ok"]:
                    raise SystemExit(f"{who}: write_image failed: {run['error']}")
                runs[who].append(run)
        starved = one_run(python, work, url, digest, size, False, small)
    if starved["ok"]:
        print(f"IPA's own path on a {args.small_tmpfs_mib} MiB tmpfs succeeds: the image fits there")
    else:
        print(f"IPA's own path on a {args.small_tmpfs_mib} MiB tmpfs fails: {starved['error']}")

    def med(who, key):
        return statistics.median(r[key] for r in runs[who])
    o_s, p_s = med("ours", "seconds"), med("ipa", "seconds")
    print(f"{'medians of %d' % args.runs:34s} {'ours':>14s} {'IPA 13.0':>14s} {'IPA / ours':>11s}")
    print(f"{'agent temp dir (tmpfs)':34s} {args.small_tmpfs_mib:10d} MiB {roomy / MiB:10.0f} MiB")
    print(f"{'wall time of write_image':34s} {o_s:13.2f}s {p_s:13.2f}s {p_s / o_s:11.2f}")
    o_r, p_r = med("ours", "rss"), med("ipa", "rss")
    print(f"{'peak agent RSS (VmHWM)':34s} {o_r / MiB:10.0f} MiB {p_r / MiB:10.0f} MiB "
          f"{p_r / o_r:11.2f}")
    o_t, p_t = med("ours", "tmp"), med("ipa", "tmp")
    print(f"{'peak tmpfs use':34s} {o_t / MiB:10.1f} MiB {p_t / MiB:10.1f} MiB")
    print(f"{'IPA on the small tmpfs':34s} {'':14s} {'fails' if not starved['ok'] else 'ok':>14s}"
          f" (peak RSS {starved['rss'] / MiB:.0f} MiB, tmpfs {starved['tmp'] / MiB:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
