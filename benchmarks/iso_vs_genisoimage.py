"""In-process ISO build (configdrive.iso, pycdlib) against what nova does: write the tree
to a temporary directory, then run genisoimage with nova's flags.

Run: python benchmarks/iso_vs_genisoimage.py [--rounds N] [--extra-mib M]
Prints the median of each side and their ratio (ours / genisoimage; the goal is <= 0.5),
for a nova-sized drive (every OpenStack version, ec2, two injected files) and, with
--extra-mib, the same drive plus one injected file of that many MiB.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from configdrive import iso  # noqa: E402
from configdrive.content import Content, InjectedFile, content_from_files  # noqa: E402
from configdrive.examples import example_paths  # noqa: E402
from configdrive.layout import build_tree  # noqa: E402

NOVA_FLAGS = ["-ldots", "-allow-lowercase", "-allow-multidot", "-l", "-publisher", "bench",
              "-quiet", "-J", "-r", "-V", "config-2"]


def nova_sized_tree(extra_mib: int = 0) -> dict[str, bytes]:
    ex = example_paths()
    content: Content = content_from_files(
        meta_data=ex["meta_data"], user_data=ex["user_data"], network_data=ex["network_data"],
        vendor_data2=ex["vendor_data2"], ssh_keys=ex["ssh_keys"])
    content.vendor_data = {"cloud-init": "#cloud-config\n{}\n"}
    content.files = [InjectedFile("/etc/motd", b"welcome\n" * 64),
                     InjectedFile("/etc/hosts.extra", b"10.0.0.1 gw\n")]
    if extra_mib:
        content.files.append(InjectedFile("/opt/blob", os.urandom(extra_mib << 20)))
    return build_tree(content)


def ours(tree: dict[str, bytes]) -> int:
    out = io.BytesIO()
    iso.write(tree, out, epoch=0)
    return len(out.getbuffer())


def genisoimage(tree: dict[str, bytes]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp, "drive")
        for rel, data in tree.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        image = Path(tmp, "drive.iso")
        subprocess.run(["genisoimage", "-o", str(image), *NOVA_FLAGS, str(root)], check=True,
                       stderr=subprocess.DEVNULL)
        return image.stat().st_size


def median_seconds(fn, tree, rounds: int) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(rounds):
        start = time.perf_counter()
        size = fn(tree)
        times.append(time.perf_counter() - start)
    return statistics.median(times), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--extra-mib", type=int, default=32)
    args = parser.parse_args()
    if shutil.which("genisoimage") is None:
        sys.exit("genisoimage is not installed")

    start = time.perf_counter()
    import pycdlib  # noqa: F401  (what the first build in a process pays once)
    print(f"import pycdlib: {(time.perf_counter() - start) * 1000:.1f} ms")

    cases = [("nova-sized", nova_sized_tree())]
    if args.extra_mib:
        cases.append((f"nova-sized + {args.extra_mib} MiB file", nova_sized_tree(args.extra_mib)))
    for name, tree in cases:
        ours(tree)          # warm up both sides (page cache, allocator)
        genisoimage(tree)
        t_ours, s_ours = median_seconds(ours, tree, args.rounds)
        t_gen, s_gen = median_seconds(genisoimage, tree, args.rounds)
        print(f"{name}: {len(tree)} files, {sum(map(len, tree.values()))} bytes of content")
        print(f"  configdrive.iso  median {t_ours * 1000:8.2f} ms  image {s_ours} bytes")
        print(f"  tmpdir+genisoimage median {t_gen * 1000:6.2f} ms  image {s_gen} bytes")
        print(f"  ratio ours/genisoimage: {t_ours / t_gen:.2f}")


if __name__ == "__main__":
    main()
