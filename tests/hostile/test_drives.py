"""Hostile config drives: what the bytes of a drive (ISO 9660 with Rock Ridge/Joliet, vfat,
or a disk's config partition) control when we read it with ``inspect``, ``extract``,
``validate``, ``pack`` and ``deploy --config-drive``.

Every drive starts as a real image made by a tool we did not write (xorriso, genisoimage,
mkfs.vfat + mcopy) and is then patched in code, several variants per class: cross-linked
directory records and cluster chains, geometry that does not fit, names that lie, control
characters, sizes past ironic's 64 MiB cap. Each case is judged by tests/hostile/harness.py
(exit 1, one printable line naming the place, no traceback, watched files unchanged, hang
and peak-RSS guards).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

from conftest import make_gpt_disk, need_tool, out, run
from configdrive.errors import one_line
from harness import assert_refused, digest, refused, run_measured

BLOCK = 2048
MiB = 1 << 20
META = {"uuid": "83679162-1378-4288-a2d4-70e13ec132aa", "hostname": "node-7", "name": "node-7"}


def drive_tree(root: Path, extra: dict[str, bytes] | None = None) -> Path:
    """A small config-drive tree on the host, for the tools to make images from."""
    files = {
        "openstack/latest/meta_data.json": json.dumps(META).encode(),
        "openstack/latest/user_data": b"#cloud-config\n{}\n",
        "openstack/2012-08-10/meta_data.json": json.dumps(META).encode(),
        "openstack/2012-08-10/user_data": b"#cloud-config\n{}\n",
        "ec2/latest/meta-data.json": b"{}",
        **(extra or {}),
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


# -- ISO 9660: a tiny walker over what xorriso/genisoimage wrote -----------------------------

def iso_image(tmp_path: Path, maker: str, extra=None) -> Path:
    tree = drive_tree(tmp_path / "tree", extra)
    image = tmp_path / "drive.iso"
    if maker == "xorriso":
        need_tool("xorriso")
        run("xorriso", "-as", "mkisofs", "-quiet", "-R", "-J", "-V", "config-2", "-o", image, tree)
    elif maker == "genisoimage-rr":
        need_tool("genisoimage")
        run("genisoimage", "-quiet", "-r", "-J", "-V", "config-2", "-o", image, tree)
    else:   # Joliet only: names come from the supplementary tree
        need_tool("genisoimage")
        run("genisoimage", "-quiet", "-J", "-V", "config-2", "-o", image, tree)
    return image


def iso_tree_root(img: bytes, joliet: bool) -> bytes:
    for n in range(16, 32):
        desc = img[n * BLOCK:(n + 1) * BLOCK]
        if desc[0] == (2 if joliet else 1) and (not joliet or desc[88:91] in (b"%/@", b"%/C", b"%/E")):
            return desc[156:190]
    raise AssertionError("no such volume descriptor")


def record_name(record: bytes, joliet: bool) -> str:
    raw = record[33:33 + record[32]]
    su = record[33 + record[32] + (1 - record[32] % 2):record[0]]
    at = 0
    while at + 4 <= len(su):   # a Rock Ridge NM entry, when there is one
        if su[at:at + 2] == b"NM":
            return su[at + 5:at + su[at + 2]].decode()
        at += max(su[at + 2], 1)
    return raw.decode("utf-16-be" if joliet else "ascii").split(";")[0]


def iso_records(img: bytes, joliet: bool) -> dict[str, int]:
    """{path: byte offset of its directory record} over the whole tree."""
    found, stack = {}, [(iso_tree_root(img, joliet), "")]
    while stack:
        record, path = stack.pop()
        extent, size = struct.unpack_from("<I", record, 2)[0], struct.unpack_from("<I", record, 10)[0]
        pos = extent * BLOCK
        while pos < extent * BLOCK + size:
            length = img[pos]
            if length == 0:
                pos = (pos // BLOCK + 1) * BLOCK
                continue
            child = img[pos:pos + length]
            if child[33:33 + child[32]] not in (b"\0", b"\1"):
                name = path + "/" + record_name(child, joliet)
                found[name.lstrip("/")] = pos
                if child[25] & 2:
                    stack.append((child, name))
            pos += length
    return found


def set_extent(img: bytearray, at: int, extent: int | None = None, size: int | None = None) -> None:
    """Both-endian extent and size fields of the record at ``at``."""
    if extent is not None:
        img[at + 2:at + 10] = struct.pack("<I", extent) + struct.pack(">I", extent)
    if size is not None:
        img[at + 10:at + 18] = struct.pack("<I", size) + struct.pack(">I", size)


def extent_of(img: bytes, at: int) -> tuple[int, int]:
    return struct.unpack_from("<I", img, at + 2)[0], struct.unpack_from("<I", img, at + 10)[0]


MAKERS = ["xorriso", "genisoimage-rr", "genisoimage-joliet"]


def patched_iso(tmp_path: Path, maker: str, patch, extra=None) -> Path:
    image = iso_image(tmp_path, maker, extra)
    img = bytearray(image.read_bytes())
    joliet = maker.endswith("joliet")
    records = iso_records(bytes(img), joliet)
    records[""] = next(n * BLOCK + 156 for n in range(16, 32) if img[n * BLOCK:(n + 1) * BLOCK][:190][156:190]
                       == iso_tree_root(bytes(img), joliet))    # the root's record, in its descriptor
    patch(img, records)
    image.write_bytes(img)
    return image


def _dir_to(target: str):
    """openstack/latest's record points at the directory ``target`` ("" the root)."""
    def patch(img, rec):
        set_extent(img, rec["openstack/latest"], extent=extent_of(img, rec[target])[0])
    return patch


ISO_CROSS_LINKS = {
    "dir-is-its-parent": _dir_to("openstack"),
    "dir-is-the-root": _dir_to(""),
    "dir-is-its-sibling": _dir_to("openstack/2012-08-10"),
    "dir-extent-4GiB": lambda img, rec: set_extent(img, rec["openstack/latest"], size=0xFFFFF800),
    "dir-extent-past-end": lambda img, rec: set_extent(img, rec["openstack/latest"], extent=0x00FFFFFF),
    "file-past-end": lambda img, rec: set_extent(img, rec["openstack/latest/user_data"], size=0x7FFFFFFF),
}


@pytest.mark.parametrize("maker", MAKERS)
@pytest.mark.parametrize("case", sorted(ISO_CROSS_LINKS))
def test_iso_cross_linked_records_are_refused_naming_the_byte(tmp_path, maker, case):
    image = patched_iso(tmp_path, maker, ISO_CROSS_LINKS[case])
    line = refused("inspect", image, watch=[image], names=f"{image}: ")
    assert "byte" in line
    out_dir = tmp_path / "out"
    refused("extract", image, out_dir, watch=[image], names="byte")
    assert not out_dir.exists() or not any(out_dir.rglob("*"))


@pytest.mark.parametrize("maker", MAKERS)
@pytest.mark.parametrize("records", [2, 12, 40])
def test_iso_many_records_on_one_huge_extent_are_charged_and_refused(tmp_path, maker, records):
    """The 8.8 MB image of the issue: every small file's record points at one 8 MiB file.
    Read, that is records x 8 MiB; we refuse it (two files sharing bytes, or the 64 MiB
    cap) within the RSS guard."""
    extra = {"openstack/content/big": os.urandom(8 * MiB)}
    extra.update({f"openstack/content/{n:04d}": b"x" for n in range(records)})

    def patch(img, rec):
        extent, size = extent_of(img, rec["openstack/content/big"])
        for n in range(records):
            set_extent(img, rec[f"openstack/content/{n:04d}"], extent, size)
    image = patched_iso(tmp_path, maker, patch, extra)
    assert image.stat().st_size > 8 * MiB
    line = refused("inspect", image, watch=[image], names="openstack/content/")
    assert "cross-linked" in line or "64 MiB" in line
    validated = run_measured("validate", image)     # a refused drive is validate's one error
    assert validated.returncode == 1 and len(validated.stderr.splitlines()) == 1, validated.stderr
    assert "cross-linked" in validated.stderr or "64 MiB" in validated.stderr
    assert validated.peak_rss < 400 << 20


# -- ISO names that lie --------------------------------------------------------------------

LYING_NAMES = {
    "nul": "ev\0l", "slash": "ev/l", "dotdot": "..", "dot": ".", "newline": "ev\nl",
    "escape": "\x1b[2J", "carriage-return": "e\rvl", "tab": "ev\tl",
}


def _rename_in_place(img: bytearray, old: str, new: str, joliet: bool) -> None:
    """Replace the name of the one record named ``old`` (its Rock Ridge NM entry, or its
    Joliet name with genisoimage's ";1"), keeping the length so nothing else moves."""
    enc = "utf-16-be" if joliet else "utf-8"
    old_b, new_b = old.encode(enc), new.encode(enc)
    assert len(old_b) == len(new_b)
    if joliet:   # genisoimage writes Joliet file names with or without the ";1" version
        version = ";1".encode(enc)
        prefix, suffix = ((bytes([len(old_b) + len(version)]), version)
                          if bytes([len(old_b) + len(version)]) + old_b + version in img
                          else (bytes([len(old_b)]), b""))
    else:
        prefix, suffix = b"NM" + bytes([5 + len(old_b), 1, 0]), b""
    pattern = prefix + old_b + suffix
    assert img.count(pattern) == 1, (old, img.count(pattern))
    at = img.index(pattern) + len(prefix)
    img[at:at + len(new_b)] = new_b


@pytest.mark.parametrize("maker", MAKERS)
@pytest.mark.parametrize("case", sorted(LYING_NAMES))
def test_iso_names_that_lie_are_refused_and_extract_writes_nothing_outside(tmp_path, maker, case):
    lie = LYING_NAMES[case]
    placeholder = "qzqzqzqz"[:len(lie)]
    joliet = maker.endswith("joliet")
    image = iso_image(tmp_path, maker, {f"openstack/content/{placeholder}": b"owned"})
    img = bytearray(image.read_bytes())
    _rename_in_place(img, placeholder, lie, joliet)
    image.write_bytes(img)

    line = refused("inspect", image, watch=[image], names="openstack/content")
    assert "cannot be a file name" in line
    dest = tmp_path / "a" / "out"
    dest.parent.mkdir()
    refused("extract", image, dest, watch=[image], names="openstack/content")
    assert sorted(p.name for p in dest.parent.iterdir()) in ([], ["out"])
    assert not dest.exists() or not any(dest.rglob("*")), "extract wrote part of a refused drive"


# -- vfat: mkfs.vfat + mcopy, patched --------------------------------------------------------

class Fat:
    """What a test needs of a FAT16/32 image mkfs.vfat made: where things are, and the
    directory entries by long name."""

    def __init__(self, img: bytearray):
        self.img = img
        sec, per, rsvd, nfats, roots = struct.unpack_from("<HBHBH", img, 11)
        fatsz = struct.unpack_from("<H", img, 22)[0] or struct.unpack_from("<I", img, 36)[0]
        self.fat32 = struct.unpack_from("<H", img, 22)[0] == 0
        self.sec, self.cluster = sec, sec * per
        self.fats = [(rsvd + n * fatsz) * sec for n in range(nfats)]
        self.root = (rsvd + nfats * fatsz) * sec
        self.data = self.root + roots * 32
        self.root_cluster = struct.unpack_from("<I", img, 44)[0] if self.fat32 else 0

    def offset(self, cluster: int) -> int:
        return self.data + (cluster - 2) * self.cluster

    def set_fat(self, cluster: int, value: int) -> None:
        for at in self.fats:
            if self.fat32:
                struct.pack_into("<I", self.img, at + 4 * cluster, value)
            else:
                struct.pack_into("<H", self.img, at + 2 * cluster, value)

    def get_fat(self, cluster: int) -> int:
        return struct.unpack_from("<I" if self.fat32 else "<H", self.img,
                                  self.fats[0] + (4 if self.fat32 else 2) * cluster)[0]

    def entries(self, cluster: int):
        """(name, byte offset of the 8.3 entry) of one directory (first cluster only)."""
        start = self.root if cluster == 0 else self.offset(cluster)
        length = self.data - self.root if cluster == 0 else self.cluster
        lfn = {}
        for at in range(start, start + length, 32):
            e = self.img[at:at + 32]
            if e[0] == 0:
                break
            if e[11] == 0x0F:
                lfn[e[0] & 0x1F] = e[1:11] + e[14:26] + e[28:32]
                continue
            if e[0] != 0xE5 and not e[11] & 0x08:
                if lfn:
                    name = b"".join(lfn[k] for k in sorted(lfn)).decode("utf-16-le").split("\0")[0]
                else:   # mtools keeps "latest" as LATEST with the lowercase flag
                    base, ext = e[:8].decode().strip(), e[8:11].decode().strip()
                    base, ext = (base.lower() if e[12] & 0x08 else base), (ext.lower() if e[12] & 0x10 else ext)
                    name = f"{base}.{ext}" if ext else base
                yield name, at
            lfn = {}

    def find(self, path: str) -> int:
        cluster, at = self.root_cluster, None
        for part in path.split("/"):
            at = dict(self.entries(cluster))[part]
            cluster = self.first_cluster(at)
        return at

    def first_cluster(self, at: int) -> int:
        return struct.unpack_from("<H", self.img, at + 26)[0] | struct.unpack_from("<H", self.img, at + 20)[0] << 16

    def set_first_cluster(self, at: int, cluster: int) -> None:
        struct.pack_into("<H", self.img, at + 26, cluster & 0xFFFF)
        struct.pack_into("<H", self.img, at + 20, cluster >> 16)


def vfat_image(tmp_path: Path, fat_bits: int = 16, extra=None, tree: Path | None = None) -> Path:
    need_tool("mkfs.vfat", "mcopy")
    tree = tree or drive_tree(tmp_path / "tree", extra)
    image = tmp_path / "drive.img"
    image.unlink(missing_ok=True)
    size_kib = 40 * 1024 if fat_bits == 32 else 16 * 1024
    run("mkfs.vfat", "-C", "-F", str(fat_bits), "-n", "config-2", "-i", "12345678", image, size_kib)
    run("mcopy", "-s", "-i", image, *sorted(tree.iterdir()), "::")
    return image


def patched_vfat(tmp_path: Path, patch, fat_bits: int = 16, extra=None) -> Path:
    image = vfat_image(tmp_path, fat_bits, extra)
    img = bytearray(image.read_bytes())
    patch(Fat(img))
    image.write_bytes(img)
    return image


def _dir_cluster_to(target: str):
    def patch(fat: Fat):
        cluster = fat.root_cluster if target == "" else fat.first_cluster(fat.find(target))
        fat.set_first_cluster(fat.find("openstack/latest"), cluster)
    return patch


def _loop_chain(path: str, back: int):
    """The middle cluster of ``path``'s chain points ``back`` clusters before it (0: at
    itself), so the loop lies inside the bytes the entry's size covers."""
    def patch(fat: Fat):
        chain = [fat.first_cluster(fat.find(path))]
        while fat.get_fat(chain[-1]) < (0x0FFFFFF8 if fat.fat32 else 0xFFF8):
            chain.append(fat.get_fat(chain[-1]))
        middle = len(chain) // 2
        fat.set_fat(chain[middle], chain[max(middle - back, 0)])
    return patch


def _cross_link(a: str, b: str):
    def patch(fat: Fat):
        fat.set_first_cluster(fat.find(b), fat.first_cluster(fat.find(a)))
    return patch


VFAT_CROSS_LINKS = {
    "dir-is-its-parent": _dir_cluster_to("openstack"),
    "dir-is-its-sibling": _dir_cluster_to("openstack/2012-08-10"),
    "dir-chain-loops-on-itself": _loop_chain("openstack/latest", 0),
    "file-chain-loops": _loop_chain("openstack/content/big", 3),
    "files-cross-linked": _cross_link("openstack/content/big", "openstack/content/0001"),
    "file-on-a-directory": _cross_link("openstack", "openstack/content/0001"),
    "chain-leaves-the-data-area": lambda fat: fat.set_fat(
        fat.first_cluster(fat.find("openstack/content/big")), 0xFFF0 if not fat.fat32 else 0x0FFFFFF0),
    "file-size-past-its-chain": lambda fat: struct.pack_into(
        "<I", fat.img, fat.find("openstack/latest/user_data") + 28, 0x7FFFFFFF),
}


@pytest.mark.parametrize("fat_bits", [16, 32])
@pytest.mark.parametrize("case", sorted(VFAT_CROSS_LINKS))
def test_vfat_cross_linked_or_cyclic_chains_are_refused(tmp_path, case, fat_bits):
    extra = {"openstack/content/big": os.urandom(64 * 1024), "openstack/content/0001": b"small"}
    image = patched_vfat(tmp_path, VFAT_CROSS_LINKS[case], fat_bits, extra)
    line = refused("inspect", image, watch=[image], names=f"{image}: ")
    assert "cluster" in line or "bytes" in line
    refused("extract", image, tmp_path / "out", watch=[image])
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))


def _bpb(offset: int, fmt: str, value: int):
    return lambda fat: struct.pack_into(fmt, fat.img, offset, value)


BAD_GEOMETRY = {   # (patch, field the line must name)
    "FATSz16-zero": (_bpb(22, "<H", 0), "BPB_FATSz"),
    "FATSz16-huge": (_bpb(22, "<H", 0xFFFF), "BPB_FATSz16"),
    "BytsPerSec-3": (_bpb(11, "<H", 3), "BPB_BytsPerSec"),
    "BytsPerSec-zero": (_bpb(11, "<H", 0), "BPB_BytsPerSec"),
    "SecPerClus-zero": (_bpb(13, "<B", 0), "BPB_SecPerClus"),
    "SecPerClus-3": (_bpb(13, "<B", 3), "BPB_SecPerClus"),
    "NumFATs-zero": (_bpb(16, "<B", 0), "BPB_NumFATs"),
    "RsvdSecCnt-zero": (_bpb(14, "<H", 0), "BPB_RsvdSecCnt"),
    "TotSec16-past-image": (_bpb(19, "<H", 0xFFFF), "BPB_TotSec16"),
    "TotSec32-past-image": (lambda fat: (_bpb(19, "<H", 0)(fat), _bpb(32, "<I", 0xFFFFFFF0)(fat)),
                            "BPB_TotSec32"),
    "TotSec16-tiny": (_bpb(19, "<H", 10), "BPB_"),
}


@pytest.mark.parametrize("case", sorted(BAD_GEOMETRY))
def test_vfat_geometry_that_does_not_fit_is_refused_naming_the_field(tmp_path, case):
    patch, field = BAD_GEOMETRY[case]
    image = patched_vfat(tmp_path, patch)
    line = refused("inspect", image, watch=[image], names=field)
    assert "byte" in line


@pytest.mark.parametrize("case, patch, field", [
    ("FATSz32-huge", _bpb(36, "<I", 0xFFFFFFF0), "BPB_FATSz32"),
    ("RootClus-zero", _bpb(44, "<I", 0), "BPB_RootClus"),
    ("RootClus-past-end", _bpb(44, "<I", 0x0FFFFFF0), "BPB_RootClus"),
    ("RootEntCnt-on-FAT32", _bpb(17, "<H", 512), "BPB_RootEntCnt"),
])
def test_fat32_geometry_that_does_not_fit_is_refused_naming_the_field(tmp_path, case, patch, field):
    image = patched_vfat(tmp_path, patch, fat_bits=32)
    refused("inspect", image, watch=[image], names=field)


def _deep_tree(fat: Fat, depth: int, loop_to: int | None) -> None:
    """Under openstack/latest, a chain of ``depth`` directories named D, the last holding
    a file F (or, with ``loop_to``, pointing back at the directory at that depth)."""
    parent = fat.first_cluster(fat.find("openstack/latest"))
    free = max(c for c in range(2, 4096) if fat.get_fat(c)) + 1
    clusters = list(range(free, free + depth + 1))

    def entry(name: bytes, attr: int, cluster: int, size: int = 0) -> bytes:
        return name.ljust(11) + bytes([attr]) + bytes(8) + struct.pack("<H", cluster >> 16) \
            + bytes(4) + struct.pack("<HI", cluster & 0xFFFF, size)
    slot = next(at for at in range(fat.offset(parent), fat.offset(parent) + fat.cluster, 32) if fat.img[at] == 0)
    fat.img[slot:slot + 32] = entry(b"D", 0x10, clusters[0])
    for level, cluster in enumerate(clusters[:-1]):
        at = fat.offset(cluster)
        up = parent if level == 0 else clusters[level - 1]
        child = clusters[loop_to] if loop_to is not None and level == depth - 1 else clusters[level + 1]
        last = level == depth - 1 and loop_to is None
        body = entry(b".", 0x10, cluster) + entry(b"..", 0x10, up) + (
            entry(b"F", 0x20, clusters[-1], 5) if last else entry(b"D", 0x10, child))
        fat.img[at:at + fat.cluster] = body.ljust(fat.cluster, b"\0")
        fat.set_fat(cluster, 0xFFFF)
    fat.img[fat.offset(clusters[-1]):fat.offset(clusters[-1]) + 5] = b"deep\n"
    fat.set_fat(clusters[-1], 0xFFFF)


@pytest.mark.parametrize("depth", [300, 1200, 2000])
def test_vfat_tree_thousands_deep_is_read_without_recursion(tmp_path, depth):
    image = patched_vfat(tmp_path, lambda fat: _deep_tree(fat, depth, None))
    need_tool("fsck.fat")
    fsck = run("fsck.fat", "-n", image, check=False)
    assert fsck.returncode == 0, fsck.stdout   # a valid filesystem, as dosfstools reads it
    outcome = run_measured("inspect", "--json", image)
    assert outcome.returncode == 0 and "Traceback" not in outcome.stderr, outcome.stderr
    files = {f["path"]: f["size"] for f in json.loads(outcome.stdout)["files"]}
    assert files["openstack/latest/" + "D/" * depth + "F"] == 5


@pytest.mark.parametrize("depth, back_to", [(1200, 0), (1200, 600), (50, 49)])
def test_vfat_deep_tree_that_loops_is_refused(tmp_path, depth, back_to):
    image = patched_vfat(tmp_path, lambda fat: _deep_tree(fat, depth, back_to))
    refused("inspect", image, watch=[image], names="cluster")


# -- vfat names: duplicates resolved as mtools and Linux would --------------------------------

def set_long_name(img: bytearray, at: int, name: str) -> None:
    """Rewrite, in place, the long-name slots before the 8.3 entry at ``at`` (the short
    name, and so the slots' checksum, stay as mcopy wrote them)."""
    slots = 0
    while img[at - 32 * (slots + 1) + 11] == 0x0F:
        slots += 1
    units = name.encode("utf-16-le")
    units += b"\0\0" if len(units) % 26 else b""
    assert len(units) <= 26 * slots, (name, slots)
    units = units.ljust(26 * slots, b"\xff")
    for n in range(slots):
        slot, chunk = at - 32 * (n + 1), units[26 * n:26 * (n + 1)]
        img[slot + 1:slot + 11], img[slot + 14:slot + 26], img[slot + 28:slot + 32] = chunk[:10], chunk[10:22], chunk[22:]


def entry_at(image_bytes: bytearray, path: str) -> int:
    return Fat(image_bytes).find(path)


DUPLICATES = {
    # second entry's long name -> what it becomes; the first is always meta_data.json
    "same-long-name": ("meta_data.jsoX", "meta_data.json"),
    "differs-in-case": ("meta_data.jsoX", "meta_data.jsoN"),
    "upper-case": ("meta_data.jsoX", "META_DATA.JSON"),
}


@pytest.mark.parametrize("case", sorted(DUPLICATES))
def test_vfat_two_entries_one_name_are_refused_as_ambiguous(tmp_path, case):
    """mtools answers a name with every entry it matches (mtype prints both files, in
    directory order), the Linux driver's lookup with the first only: the guest and any
    reader disagree about which meta_data.json is meant, so we refuse the drive and name
    the name."""
    placeholder, lie = DUPLICATES[case]
    evil = b'{"uuid": "evil"}'
    image = vfat_image(tmp_path, extra={f"openstack/latest/{placeholder}": evil})
    img = bytearray(image.read_bytes())
    ours, theirs = entry_at(img, f"openstack/latest/{placeholder}"), entry_at(img, "openstack/latest/meta_data.json")
    set_long_name(img, ours, lie)
    image.write_bytes(img)
    in_order = [evil, json.dumps(META).encode()][::1 if ours < theirs else -1]
    mtools_reads = run("mtype", "-i", image, "::openstack/latest/meta_data.json").stdout
    assert mtools_reads == b"".join(in_order)   # mtools matches both, in directory order
    listed = out("mdir", "-i", image, "::openstack/latest")
    assert listed.lower().count("meta_data.json") == 2   # and both are there
    refused("inspect", image, watch=[image], names="meta_data.json")
    outcome = run_measured("validate", image)
    assert outcome.returncode == 1 and "ambiguous" in outcome.stderr


def test_vfat_short_name_colliding_with_a_long_name_is_refused(tmp_path):
    """mcopy gives meta_data.json the short name META_D~1.JSO; a second file whose long
    name is that short name is found by a lookup of either."""
    image = vfat_image(tmp_path, extra={"openstack/latest/abcdefghijkl": b"evil"})
    img = bytearray(image.read_bytes())
    fat = Fat(img)
    short = next(img[at:at + 11] for name, at in fat.entries(fat.first_cluster(fat.find("openstack/latest")))
                 if name == "meta_data.json")
    as_name = (short[:8].decode().strip() + "." + short[8:].decode().strip()).lower()
    assert len(as_name) == 12, as_name
    set_long_name(img, fat.find("openstack/latest/abcdefghijkl"), as_name)
    image.write_bytes(img)
    refused("inspect", image, watch=[image], names=as_name)


def test_vfat_long_name_with_control_characters_is_refused(tmp_path):
    image = vfat_image(tmp_path, extra={"openstack/content/long-name.txt": b"x"})
    img = bytearray(image.read_bytes())
    set_long_name(img, entry_at(img, "openstack/content/long-name.txt"), "a\nb\x1bc")
    image.write_bytes(img)
    line = refused("inspect", image, watch=[image], names="openstack/content")
    assert "\\u000a" in line and "\\u001b" in line


# -- what inspect prints: one line stays one line ----------------------------------------------

@pytest.mark.parametrize("value", ["node\nsource:    /etc/shadow", "\x1b[2J\x1b[31mred", "a\rb\x07c", "x\u2028y"])
@pytest.mark.parametrize("maker", ["xorriso", "mcopy"])
def test_inspect_prints_drive_values_with_control_characters_escaped(tmp_path, value, maker):
    meta = json.dumps({**META, "hostname": value, "public_keys": {value: "ssh-ed25519 AAAA k"}}).encode()
    extra = {"openstack/latest/meta_data.json": meta}
    image = iso_image(tmp_path, "xorriso", extra) if maker == "xorriso" else vfat_image(tmp_path, extra=extra)
    outcome = run_measured("inspect", image)
    assert outcome.returncode == 0, outcome.stderr
    text = outcome.stdout.decode()
    lines = text.splitlines()
    assert all(line.isprintable() for line in lines), lines
    assert sum(line.startswith("hostname:") for line in lines) == 1
    assert sum(line.startswith("source:") for line in lines) == 1
    assert [line for line in lines if line.startswith("hostname:")][0].endswith(one_line(value))


def test_error_lines_escape_a_label_or_path_with_control_characters(tmp_path):
    missing = tmp_path / "no\nsuch\x1b[2Jdrive"
    line = refused("inspect", missing, names="no\\u000asuch\\u001b[2Jdrive")
    assert line.count("configdrive: error:") == 1


# -- the 64 MiB cap: pack, unpack, and reading a drive -----------------------------------------

@pytest.mark.parametrize("size", [64 * MiB + 1, 100 * MiB, 1 << 40])
def test_pack_refuses_a_file_over_the_cap_by_its_size(tmp_path, size):
    big = tmp_path / "big.img"
    with open(big, "wb") as fp:
        fp.truncate(size)     # sparse: refusing by size reads none of it
    refused("pack", big, watch=[big] if size < 1 << 30 else [], names=str(size))


def test_pack_refuses_a_stream_past_the_cap_as_it_reads(tmp_path):
    """A pipe has no size to refuse by: pack counts as it reads and prints nothing."""
    import subprocess
    fifo = tmp_path / "drive.fifo"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", f"head -c {64 * MiB + 4096} /dev/zero > {fifo}"])
    try:
        outcome = run_measured("pack", fifo)
    finally:
        writer.kill()
        writer.wait()
    assert_refused(outcome, names="67108864")
    assert outcome.stdout == b""


# Payloads are made by shell pipelines, not in this process: the harness's peak RSS
# (wait4) starts from the RSS of the process that forks the command.
UNPACK_PAYLOADS = {
    "gzip-of-zeros": "head -c 200M /dev/zero | gzip -9",
    "gzip-members": "for n in 1 2 3; do head -c 40M /dev/zero | gzip; done",
    "raw-base64": "head -c 66M /dev/urandom",
    "gzip-then-junk": "head -c 1M /dev/zero | gzip; head -c 70M /dev/urandom",
}


@pytest.mark.parametrize("kind", sorted(UNPACK_PAYLOADS))
def test_unpack_stops_at_the_cap(tmp_path, kind):
    text = tmp_path / "packed.txt"
    run("sh", "-c", f"({UNPACK_PAYLOADS[kind]}) | base64 > {text}")
    dest = tmp_path / "drive.img"
    refused("unpack", text, "-o", dest, watch=[text])
    assert not dest.exists()


def test_drive_over_the_cap_is_refused_before_its_data_is_read(tmp_path):
    """Sparse files that add up past 64 MiB in an image xorriso made: refused by the sizes
    the directory lists, naming the file that crosses the cap."""
    need_tool("xorriso")
    tree = drive_tree(tmp_path / "tree")
    (tree / "openstack/content").mkdir()
    for n in range(3):
        with open(tree / f"openstack/content/{n:04d}", "wb") as fp:
            fp.truncate(22 * MiB)
    image = tmp_path / "big.iso"
    run("xorriso", "-as", "mkisofs", "-quiet", "-R", "-J", "-V", "config-2", "-o", image, tree)
    line = refused("inspect", image, watch=[image], names="64 MiB")
    assert "openstack/content/0002" in line


# -- a disk's config partition and deploy --config-drive --------------------------------------

def _disk_with_drive(tmp_path: Path, drive: Path) -> Path:
    """A GPT disk (sgdisk) whose partition named config-v2 holds ``drive``."""
    disk = make_gpt_disk(tmp_path / "disk.img", "0DD0DD00-1111-4222-8333-444455556666", seed=3, size=48 * MiB)
    size = drive.stat().st_size
    run("sgdisk", "-n", f"3:{20 * MiB // 512}:+{-(-size // MiB)}M", "-c", "3:config-v2", disk)
    with open(disk, "r+b") as fp:
        fp.seek(20 * MiB)
        fp.write(drive.read_bytes())
    return disk


@pytest.mark.parametrize("case", ["dir-is-its-parent", "dir-extent-4GiB"])
def test_config_partition_with_a_cross_linked_iso_is_refused(tmp_path, case):
    need_tool("sgdisk")
    drive = patched_iso(tmp_path, "xorriso", ISO_CROSS_LINKS[case])
    disk = _disk_with_drive(tmp_path, drive)
    refused("inspect", disk, watch=[disk], names="partition 3")


@pytest.mark.parametrize("case", ["files-cross-linked", "dir-chain-loops-on-itself"])
def test_config_partition_with_a_cyclic_fat_is_refused(tmp_path, case):
    need_tool("sgdisk")
    extra = {"openstack/content/big": os.urandom(64 * 1024), "openstack/content/0001": b"small"}
    drive = patched_vfat(tmp_path, VFAT_CROSS_LINKS[case], 16, extra)
    disk = _disk_with_drive(tmp_path, drive)
    refused("inspect", disk, watch=[disk], names="partition 3")


@pytest.mark.parametrize("kind", ["iso-loop", "vfat-loop", "iso-lying-name"])
def test_deploy_refuses_a_hostile_config_drive_and_leaves_the_disk(tmp_path, kind):
    need_tool("sgdisk")
    if kind == "iso-loop":
        drive = patched_iso(tmp_path, "xorriso", ISO_CROSS_LINKS["dir-is-its-parent"])
    elif kind == "vfat-loop":
        drive = patched_vfat(tmp_path, VFAT_CROSS_LINKS["dir-chain-loops-on-itself"])
    else:
        drive = iso_image(tmp_path, "xorriso", {"openstack/content/qzqz": b"x"})
        img = bytearray(drive.read_bytes())
        _rename_in_place(img, "qzqz", "a\nb/", joliet=False)
        drive.write_bytes(img)
    target = make_gpt_disk(tmp_path / "target.img", "5EED5EED-2222-4333-8444-555566667777", seed=4)
    before = digest(target)
    refused("deploy", "--quiet", "--device", target, "--config-drive", drive, watch=[target, drive])
    assert digest(target) == before


@pytest.mark.parametrize("maker", ["xorriso", "mcopy"])
def test_more_entries_than_the_cap_are_refused(tmp_path, maker):
    """10 000 files and directories at most: an image of empty files costs nothing to
    make and, listed, one object each."""
    tree = drive_tree(tmp_path / "tree")
    many = tree / "openstack" / "content"
    many.mkdir()
    for n in range(10_050):
        (many / f"{n:05d}").touch()
    if maker == "xorriso":
        image = tmp_path / "many.iso"
        run("xorriso", "-as", "mkisofs", "-quiet", "-R", "-J", "-V", "config-2", "-o", image, tree)
    else:
        image = vfat_image(tmp_path, tree=tree)
    refused("inspect", image, watch=[image], names="more than 10000 files")


@pytest.mark.parametrize("link_at", ["openstack", "openstack/latest", "openstack/latest/meta_data.json"])
def test_extract_never_follows_a_link_already_in_dir(tmp_path, link_at):
    """DIR may hold a link planted by someone else: extract refuses to write through it."""
    image = iso_image(tmp_path, "xorriso")
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "meta_data.json"
    victim.write_bytes(b"keep me")
    dest = tmp_path / "dest"
    (dest / link_at).parent.mkdir(parents=True, exist_ok=True)
    (dest / link_at).symlink_to(victim if link_at.endswith(".json") else outside)
    refused("extract", image, dest, watch=[victim, image])
    assert sorted(p.name for p in outside.iterdir()) == ["meta_data.json"]
