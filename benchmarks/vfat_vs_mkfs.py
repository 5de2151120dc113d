"""How long a nova-sized vfat config drive (64 MiB, ~60 files) takes to make: our writer
against nova's way, mkfs.vfat then mcopy -s, side by side in one run.

    python benchmarks/vfat_vs_mkfs.py [--runs N]

Prints the median of each and the ratio (ours / theirs; below 1 means we are faster).
Three of ours: the library call writing a file, the library call into memory (what
``configdrive build`` does before it writes), and the whole ``configdrive build`` command
(a fresh Python process, like the two processes of the peer).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from configdrive import vfat
from configdrive.content import InjectedFile, content_from_files
from configdrive.drive import extract
from configdrive.examples import example_paths
from configdrive.layout import build_tree


def nova_tree() -> dict[str, bytes]:
    content = content_from_files(**example_paths())
    content.files += [InjectedFile(f"/etc/file{i}", os.urandom(2000)) for i in range(8)]
    return build_tree(content)


def median_seconds(action, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    runs = parser.parse_args().runs
    for tool in ("mkfs.vfat", "mcopy"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            sys.exit(f"{tool} is not installed (scripts/install.sh installs it)")

    tree = nova_tree()
    work = Path(tempfile.mkdtemp(prefix="vfat-bench-"))
    try:
        source = work / "tree"
        extract(tree, source)
        top = sorted(str(p) for p in source.iterdir())
        ours_img, theirs_img, cli_img = work / "ours.img", work / "mkfs.img", work / "cli.img"
        env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
        exe = Path(sys.executable).with_name("configdrive")

        def ours_file():
            with open(ours_img, "wb") as fp:
                vfat.write(tree, fp, epoch=1700000000)

        def ours_memory():
            vfat.write(tree, io.BytesIO(), epoch=1700000000)

        def ours_command():
            subprocess.run([exe, "build", "--example", "--format", "vfat", "-o", cli_img],
                           check=True, capture_output=True, env=env)

        def theirs():
            theirs_img.unlink(missing_ok=True)
            subprocess.run(["mkfs.vfat", "-n", "config-2", "-C", theirs_img, "65536"],
                           check=True, capture_output=True)
            subprocess.run(["mcopy", "-s", "-i", theirs_img, *top, "::/"], check=True, capture_output=True)

        peer = median_seconds(theirs, runs)
        print(f"{len(tree)} files, {sum(map(len, tree.values()))} bytes, 64 MiB image, median of {runs} runs")
        print(f"  mkfs.vfat + mcopy -s          {peer * 1000:8.2f} ms")
        for name, action in (("vfat.write to a file", ours_file),
                             ("vfat.write to memory", ours_memory),
                             ("configdrive build (process)", ours_command)):
            ours = median_seconds(action, runs)
            print(f"  {name:<29} {ours * 1000:8.2f} ms   ratio {ours / peer:5.2f}")
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
