"""How long a nova-sized vfat config drive (64 MiB, ~60 files) takes to make: our writer
against nova's way, mkfs.vfat then mcopy -s, side by side in one run.

    python benchmarks/vfat_vs_mkfs.py [--runs N]

Three of ours against the same peer: the library call writing a file (where the unused
part of the image becomes a hole, as with mkfs.vfat -C), the library call into memory,
and the whole ``configdrive build`` command (a fresh Python process, like the peer's two
processes; it also pays for Python's start-up and for drive.build's in-memory copy).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import median_seconds, table

from configdrive import vfat
from configdrive.content import InjectedFile, content_from_files
from configdrive.drive import extract
from configdrive.examples import example_paths
from configdrive.layout import build_tree

EPOCH = 1700000000


def nova_tree() -> dict[str, bytes]:
    """The built-in example with every version directory, plus a few injected files."""
    content = content_from_files(**example_paths())
    content.files += [InjectedFile(f"/etc/file{i}", os.urandom(2000)) for i in range(8)]
    return build_tree(content)


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
        extract(tree, source)          # the peer copies from a directory: not timed
        top = sorted(str(p) for p in source.iterdir())
        ours_img, peer_img, cli_img = work / "ours.img", work / "mkfs.img", work / "cli.img"
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH)}
        exe = Path(sys.executable).with_name("configdrive")

        def ours_file():
            with open(ours_img, "wb") as fp:
                vfat.write(tree, fp, epoch=EPOCH)

        def ours_memory():
            vfat.write(tree, io.BytesIO(), epoch=EPOCH)

        def ours_command():
            subprocess.run([exe, "build", "--example", "--format", "vfat", "-o", cli_img],
                           check=True, capture_output=True, env=env)

        def peer():
            peer_img.unlink(missing_ok=True)
            subprocess.run(["mkfs.vfat", "-n", "config-2", "-C", peer_img, "65536"],
                           check=True, capture_output=True)
            subprocess.run(["mcopy", "-s", "-i", peer_img, *top, "::/"], check=True, capture_output=True)

        theirs = median_seconds(peer, runs)
        rows = [(name, median_seconds(action, runs), theirs) for name, action in (
            ("vfat.write to a file", ours_file),
            ("vfat.write into memory (BytesIO)", ours_memory),
            ("configdrive build --format vfat (process)", ours_command))]
        print(f"{len(tree)} files, {sum(map(len, tree.values()))} bytes of content, "
              f"64 MiB images, medians of {runs} runs; peer: mkfs.vfat -C + mcopy -s")
        print(table("vfat config drive: ours vs mkfs.vfat + mcopy", rows, unit="s"))
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
