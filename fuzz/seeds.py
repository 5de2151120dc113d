"""Valid inputs to start mutating from, made by the tools we did not write wherever one
exists (qemu-img, sgdisk, sfdisk, xorriso, mkfs.vfat + mtools, gzip/xz/zstd) and by
our own writers. Mutating real inputs reaches far deeper than random bytes: the magic,
the CRCs and the offsets are right until a mutation breaks exactly one of them.

    python fuzz/seeds.py CORPUS_DIR     # writes CORPUS_DIR/<target>/seed-N for atheris
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
KiB, MiB = 1 << 10, 1 << 20


# Seeds must be the same bytes on every machine and run: the fuzz budget is a fixed-seed
# walk over mutations of them, so a random GUID, serial or timestamp in a seed would make
# CI explore different inputs each time.
FIXED_EPOCH = 1700000000
_FIXED_ENV = {**os.environ, "SOURCE_DATE_EPOCH": str(FIXED_EPOCH), "TZ": "UTC"}


def _run(*cmd, input: bytes | None = None) -> bytes:
    return subprocess.run([str(c) for c in cmd], input=input, capture_output=True, check=True,
                          env=_FIXED_ENV).stdout


def _have(*tools: str) -> bool:
    return all(shutil.which(t) or Path("/usr/sbin", t).exists() for t in tools)


def _pattern(size: int) -> bytes:
    """Data with zero runs between non-zero runs (extents of both kinds)."""
    out = bytearray(size)
    for start in range(0, size, 16 * KiB):
        out[start:start + 4 * KiB] = bytes((start // 4096 + i) % 251 + 1 for i in range(4 * KiB))[: size - start]
    return bytes(out)


def _small_tree() -> dict[str, bytes]:
    from configdrive.model.content import Content
    from configdrive.model.layout import build_tree
    content = Content(meta_data={"uuid": "83679162-1378-4288-a2d4-70e13ec132aa", "name": "fuzz",
                                 "public_keys": {"k": "ssh-ed25519 AAAA k"}},
                      user_data=b"#cloud-config\n{}\n",
                      network_data={"links": [], "networks": [], "services": []})
    return build_tree(content, versions=["2012-08-10", "latest"], ec2=True)


def qcow2_seeds(work: Path) -> list[bytes]:
    if not _have("qemu-img"):
        return []
    raw = work / "q.raw"
    raw.write_bytes(_pattern(96 * KiB))
    variants = [
        ("v3-512", ["-o", "cluster_size=512"]),
        ("v2-4k", ["-o", "compat=0.10,cluster_size=4096"]),
        ("deflate", ["-c", "-o", "cluster_size=4096"]),
        ("zstd", ["-c", "-o", "cluster_size=4096,compression_type=zstd"]),
        ("extl2", ["-o", "cluster_size=16384,extended_l2=on"]),
    ]
    seeds = []
    for name, opts in variants:
        out = work / f"{name}.qcow2"
        _run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", *opts, raw, out)
        seeds.append(out.read_bytes())
    empty = work / "empty.qcow2"
    _run("qemu-img", "create", "-f", "qcow2", "-o", "cluster_size=512", empty, "1M")
    seeds.append(empty.read_bytes())
    return seeds


_FIXED_GUIDS = ["-U", "8f0c6a2e-1d3b-4c5a-9e7f-0a1b2c3d4e5f", "-u", "1:3b1d2c4e-5f6a-4b7c-8d9e-0f1a2b3c4d5e",
                "-u", "2:6e5d4c3b-2a1f-4e0d-9c8b-7a6f5e4d3c2b"]


def gpt_seeds(work: Path) -> list[bytes]:
    seeds = []
    if _have("sgdisk"):
        disk = work / "g.img"
        disk.write_bytes(bytes(256 * KiB))
        _run("sgdisk", "--set-alignment=1", "-n", "1:40:+64", "-c", "1:root", "-n", "2:0:+32",
             "-c", "2:config-v2", *_FIXED_GUIDS, disk)
        seeds.append(disk.read_bytes())
    # sfdisk here has no --sector-size: a 4096-byte-sector GPT from our own writer.
    from partition.tables.gpt import write_empty_gpt
    from partition.tables import add_partition, read_table
    fp = io.BytesIO(bytes(512 * KiB))
    guids = iter(uuid.UUID(int=n, version=4) for n in range(1, 100))   # fixed, for fixed seeds
    with mock.patch.object(uuid, "uuid4", lambda: next(guids)):
        write_empty_gpt(fp, 512 * KiB, 4096)
        table = read_table(fp, 512 * KiB, 4096)
        add_partition(fp, table, 8 * 4096, 16 * 4096, name="root")
        add_partition(fp, table, 24 * 4096, 16 * 4096, name="config-v2")
    seeds.append(fp.getvalue())
    return seeds


def mbr_seeds(work: Path) -> list[bytes]:
    if not _have("sfdisk"):
        return []
    seeds = []
    for name, script in (
        ("primaries", "label: dos\nlabel-id: 0x5eed0001\nstart=1, size=63, type=83, bootable\nstart=64, size=64, type=99\n"),
        ("logicals", "label: dos\nlabel-id: 0x5eed0002\nstart=1, size=31, type=83\nstart=32, size=200, type=5\n"
                     "start=34, size=30, type=83\nstart=66, size=30, type=82\nstart=98, size=30, type=99\n"),
    ):
        disk = work / f"{name}.img"
        disk.write_bytes(bytes(128 * KiB))
        _run("sfdisk", "-q", disk, input=script.encode())
        seeds.append(disk.read_bytes())
    return seeds


def _tree_dir(work: Path) -> Path:
    top = work / "tree"
    if not top.exists():
        for rel, data in _small_tree().items():
            path = top / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        for path in [top, *top.rglob("*")]:
            os.utime(path, (FIXED_EPOCH, FIXED_EPOCH))
    return top


def iso_seeds(work: Path) -> list[bytes]:
    from configdrive.formats import iso
    seeds = []
    # xorriso's mkisofs emulation (genisoimage's flags) honours SOURCE_DATE_EPOCH; genisoimage
    # stamps the current time into the volume descriptors.
    if _have("xorriso"):
        for name, flags in (("rj", ["-R", "-J"]), ("plain", []), ("joliet", ["-J"])):
            out = work / f"{name}.iso"
            _run("xorriso", "-as", "mkisofs", "-quiet", "-V", "config-2", *flags, "-o", out, _tree_dir(work))
            seeds.append(out.read_bytes())
    buf = io.BytesIO()
    iso.write(_small_tree(), buf, label="config-2", epoch=0)
    seeds.append(buf.getvalue())
    return seeds


def vfat_seeds(work: Path) -> list[bytes]:
    from configdrive.formats import vfat
    seeds = []
    if _have("mkfs.vfat", "mcopy"):
        for name, size_kib, flags in (("fat12", 256, ["-F", "12"]), ("fat16", 2200, ["-F", "16", "-s", "1"])):
            out = work / f"{name}.img"
            out.unlink(missing_ok=True)
            _run("mkfs.vfat", "--invariant", "-C", *flags, "-n", "config-2", out, size_kib)
            _run("mcopy", "-s", "-m", "-i", out, *sorted(_tree_dir(work).iterdir()), "::")
            seeds.append(out.read_bytes())
    buf = io.BytesIO()
    vfat.write(_small_tree(), buf, label="config-2", size=1 * MiB, epoch=0)
    seeds.append(buf.getvalue())
    return seeds


def disk_with_drive_seeds(work: Path) -> list[bytes]:
    """GPT disks (sgdisk) whose config-v2 partition holds a small FAT drive (mkfs.vfat)
    or an ISO 9660 one (xorriso)."""
    if not _have("sgdisk", "mkfs.vfat", "mcopy"):
        return []
    fs = work / "part.img"
    fs.unlink(missing_ok=True)
    _run("mkfs.vfat", "--invariant", "-C", "-F", "12", "-n", "config-2", fs, 128)
    _run("mcopy", "-s", "-m", "-i", fs, *sorted(_tree_dir(work).iterdir()), "::")
    drives = [fs.read_bytes()]
    if _have("xorriso"):
        iso = work / "part.iso"
        _run("xorriso", "-as", "mkisofs", "-quiet", "-V", "config-2", "-R", "-J", "-o", iso, _tree_dir(work))
        drives.append(iso.read_bytes())
    seeds = []
    for drive in drives:
        disk = work / "disk.img"
        disk.write_bytes(bytes(40 * 512 + len(drive) + 64 * KiB))
        sectors = -(-len(drive) // 512)
        _run("sgdisk", "--set-alignment=1", "-n", f"1:40:+{sectors}", "-c", "1:config-v2", *_FIXED_GUIDS[:4], disk)
        image = bytearray(disk.read_bytes())
        image[40 * 512: 40 * 512 + len(drive)] = drive
        seeds.append(bytes(image))
    return seeds


def json_seeds() -> list[bytes]:
    examples = ROOT / "configdrive" / "examples"
    docs = [json.loads((examples / n).read_text()) for n in ("meta_data.json", "network_data.json",
                                                              "vendor_data2.json")]
    ironic = {"meta_data": docs[0], "network_data": docs[1], "vendor_data": docs[2],
              "user_data": "#cloud-config\n{}"}
    seeds = [json.dumps(ironic).encode(), *(json.dumps(d, indent=1).encode() for d in docs)]
    corpus = ROOT / "tests" / "corpus" / "validate"
    seeds += [p.read_bytes() for p in sorted(corpus.glob("*/*.json")) if p.name != "expected.json"]
    return seeds


def compress_seeds(work: Path) -> list[bytes]:
    data = _pattern(40 * KiB)
    seeds = [gzip.compress(data, mtime=0), gzip.compress(data[:100], mtime=0) * 2]
    for tool, flags in (("xz", ["-c"]), ("zstd", ["-c", "-q", "--check"])):
        if _have(tool):
            seeds.append(_run(tool, *flags, input=data))
    return seeds


def build(work: Path) -> dict[str, list[bytes]]:
    """{target name: [seed bytes]} for every target of fuzz/targets.py."""
    work.mkdir(parents=True, exist_ok=True)
    from configdrive.formats.pack import pack
    qcow2 = qcow2_seeds(work)
    gpt, mbr = gpt_seeds(work), mbr_seeds(work)
    isos, fats, disks = iso_seeds(work), vfat_seeds(work), disk_with_drive_seeds(work)
    compressed = compress_seeds(work)
    small_drive = fats[0] if fats else isos[-1]
    packed = [pack(small_drive).encode(), base64.encodebytes(small_drive[:4096]),
              base64.b64encode(gzip.compress(isos[-1][:40 * KiB], mtime=0) + bytes(8))]
    tables = gpt + mbr + disks
    image_seeds = [gpt[0], *(q for q in qcow2[:2])]
    image_seeds += [gzip.compress(qcow2[0], mtime=0), gzip.compress(gpt[0], mtime=0)]
    if _have("zstd"):
        image_seeds.append(_run("zstd", "-c", "-q", input=qcow2[2]))
    return {
        "qcow2": qcow2, "gpt": gpt, "mbr": mbr, "tables": tables,
        "probe": [*isos, *fats], "iso": isos, "vfat": fats, "drive": [*isos, *fats, *disks],
        "disk": disks, "pack": [isos[0], fats[0]] if fats else isos[:1], "unpack": packed, "json": json_seeds(), "compress": compressed, "image": image_seeds,
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    corpus = Path(argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        for name, seeds in build(Path(tmp)).items():
            (corpus / name).mkdir(parents=True, exist_ok=True)
            for i, seed in enumerate(seeds):
                (corpus / name / f"seed-{i}").write_bytes(seed)
            print(f"{name}: {len(seeds)} seeds")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main(sys.argv))
