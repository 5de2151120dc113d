"""Building a nova-sized config drive (every version directory, ec2, injected files: about
60 files), ours against the route a user takes today, side by side in one run:

- ISO: configdrive.iso in-process  vs  nova's route: write the tree to a temporary
  directory, run genisoimage with nova's flags.            goal: ours <= 0.5 x theirs
- vfat: configdrive.vfat into a file  vs  mkfs.vfat -C + mcopy -s (the tree is already on
  disk for the peer: not timed, in its favour).            goal: ours <= 1.0 x theirs
- the whole command (a fresh process, like the peers' processes): `build --hostname x`
  against nova's route as processes (a Python process writes the same tree, then
  genisoimage), and `configdrive --help` start-up.         goal: --help < 50 ms

    python benchmarks/build_drives.py [--runs N]

What to read into it: the library builds faster than the tools; a one-shot command need
not. Of a whole process's time, Python's start-up and the imports of jsonschema and
pycdlib take most (`python -X importtime` shows it); a deploy agent or a compute service
calling the API pays those imports once. Matching nova's route as a one-shot process would
mean a build path without jsonschema and pycdlib, the two libraries this project chose; we
keep them (a hand-written validator and ISO writer would be more code to trust).
`--no-validate` with JSON files still passes each file through the schemas' type check,
so it imports jsonschema too. `configdrive --help` imports argparse and little else.
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

from configdrive.formats import iso, vfat
from configdrive.model.content import InjectedFile
from configdrive.model.inputs import content_from_files
from configdrive.drives.extract import extract
from configdrive.examples import example_paths
from configdrive.model.layout import build_tree

EPOCH = 1700000000
NOVA_ISO_FLAGS = ["-ldots", "-allow-lowercase", "-allow-multidot", "-l", "-publisher", "bench",
                  "-quiet", "-J", "-r", "-V", "config-2"]


def nova_tree(extra_mib: int = 0) -> dict[str, bytes]:
    """The built-in example with every version directory, plus a few injected files
    (and one large one with ``extra_mib``)."""
    ex = example_paths()
    content = content_from_files(**ex)
    content.vendor_data = {"cloud-init": "#cloud-config\n{}\n"}
    content.files += [InjectedFile(f"/etc/file{i}", os.urandom(2000)) for i in range(8)]
    if extra_mib:
        content.files.append(InjectedFile("/opt/blob", os.urandom(extra_mib << 20)))
    return build_tree(content)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11)
    runs = parser.parse_args().runs
    for tool in ("genisoimage", "mkfs.vfat", "mcopy"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            sys.exit(f"{tool} is not installed (scripts/install.sh test installs it)")

    work = Path(tempfile.mkdtemp(prefix="build-bench-"))
    exe = Path(sys.executable).with_name("configdrive")
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH)}
    try:
        iso_rows = []
        for label, tree in (("nova-sized", nova_tree()), ("nova-sized + 32 MiB file", nova_tree(32))):
            def ours_iso(tree=tree):
                iso.write(tree, io.BytesIO(), epoch=EPOCH)

            def nova_route(tree=tree):
                with tempfile.TemporaryDirectory(dir=work) as tmp:
                    extract(tree, Path(tmp, "d"))
                    subprocess.run(["genisoimage", "-o", Path(tmp, "d.iso"), *NOVA_ISO_FLAGS, Path(tmp, "d")],
                                   check=True, capture_output=True)
            iso_rows.append((f"ISO {label} ({len(tree)} files)", median_seconds(ours_iso, runs),
                             median_seconds(nova_route, runs)))

        tree = nova_tree()
        source = work / "tree"
        extract(tree, source)
        top = sorted(str(p) for p in source.iterdir())
        peer_img = work / "mkfs.img"

        def ours_vfat():
            with open(work / "ours.img", "wb") as fp:
                vfat.write(tree, fp, epoch=EPOCH)

        def mkfs_mcopy():
            peer_img.unlink(missing_ok=True)
            subprocess.run(["mkfs.vfat", "-n", "config-2", "-C", peer_img, "65536"], check=True, capture_output=True)
            subprocess.run(["mcopy", "-s", "-i", peer_img, *top, "::/"], check=True, capture_output=True)

        mkfs_time = median_seconds(mkfs_mcopy, runs)
        vfat_rows = [("vfat 64 MiB, library into a file", median_seconds(ours_vfat, runs), mkfs_time)]

        def command(fmt, *extra):
            return lambda: subprocess.run([exe, "build", "--example", "--format", fmt, *extra,
                                           "-o", work / f"cli.{fmt}"], check=True, capture_output=True, env=env)

        def nova_route_example():
            with tempfile.TemporaryDirectory(dir=work) as tmp:
                extract(tree, Path(tmp, "d"))
                subprocess.run(["genisoimage", "-o", Path(tmp, "d.iso"), *NOVA_ISO_FLAGS, Path(tmp, "d")],
                               check=True, capture_output=True)

        # nova's route as processes: a Python process (nova's) writes the same tree a
        # `build --hostname x` holds, then genisoimage makes the image.
        small = build_tree(content_from_files(hostname="x"))
        writer = ("import os, sys\nroot = sys.argv[1]\n"
                  f"for rel, data in {dict(small)!r}.items():\n"
                  "    os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)\n"
                  "    open(os.path.join(root, rel), 'wb').write(data)\n")

        def nova_processes():
            with tempfile.TemporaryDirectory(dir=work) as tmp:
                subprocess.run([sys.executable, "-c", writer, Path(tmp, "d")], check=True)
                subprocess.run(["genisoimage", "-o", Path(tmp, "d.iso"), *NOVA_ISO_FLAGS, Path(tmp, "d")],
                               check=True, capture_output=True)

        def ours_small(*extra):
            return lambda: subprocess.run([exe, "build", "--hostname", "x", *extra, "-o", work / "small.iso"],
                                          check=True, capture_output=True, env=env)
        nova_small = median_seconds(nova_processes, runs)
        cmd_rows = [("configdrive build --hostname x (process)",
                     median_seconds(ours_small(), runs), nova_small),
                    ("  the same, --no-validate (no jsonschema)", median_seconds(ours_small("--no-validate"), runs),
                     nova_small),
                    ("configdrive build --format iso (process)", median_seconds(command("iso"), runs),
                     median_seconds(nova_route_example, runs)),
                    ("configdrive build --format vfat (process)", median_seconds(command("vfat"), runs), mkfs_time),
                    ("  the same, --no-validate (JSON types still checked)",
                     median_seconds(command("vfat", "--no-validate"), runs), mkfs_time)]
        help_time = median_seconds(lambda: subprocess.run([exe, "--help"], check=True, capture_output=True), runs)

        print(f"medians of {runs} runs; ratio = peer / ours (above 1: we are faster)")
        print(table("ISO: configdrive.iso vs tree-to-directory + genisoimage (nova's flags)", iso_rows))
        print(table("vfat: configdrive.vfat vs mkfs.vfat -C + mcopy -s", vfat_rows))
        print(table("whole command vs the peer route", cmd_rows))
        print(f"configdrive --help: {help_time * 1000:.0f} ms (goal < 50 ms)")
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
