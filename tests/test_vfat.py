"""vfat config drives, checked with tools we did not write: blkid, fsck.fat, mtools,
mkfs.fat, and cloud-init's own reader."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from configdrive.formats import fatgeometry, fatreader, vfat
from configdrive.drives.reader import read_directory
from configdrive.errors import ConfigDriveError
from configdrive.model.layout import build_tree

from conftest import cloud_init_read, need_tool, out, run, sample_content

MiB = 1024 * 1024
EPOCH = 1700000000             # 2023-11-14 22:13:20 UTC
UTF8 = {**os.environ, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}   # mtools prints names in the locale

# Names that each stress one rule of short names and long-name slots.
TRICKY_TREE = {
    "openstack/latest/meta_data.json": b'{"uuid": "x"}',
    "openstack/latest/user_data": b"#cloud-config\n",
    "openstack/2012-08-10/meta_data.json": b"{}",
    "openstack/2013-04-04/meta_data.json": b"{}",      # same short-name stem as the above
    "openstack/content/0000": b"an 8.3 name",
    "ec2/latest/meta-data.json": b"{}",
    "Mixed Case Name.TXT": b"case and a space",
    "exactly13char": b"one long-name slot, no terminator",
    "x" * 255: b"the longest name FAT allows",
    "caf\u00e9/na\u00efve.txt": "non-ASCII names".encode(),
    "a.b.c.d": b"several dots",
    ".hidden": b"leading dot",
    "empty": b"",
    "one-cluster": bytes(range(256)) * 8,               # 2048 bytes: exactly one cluster
    "deep/a/b/c/d/e/f/g/file": b"deep",
    "big.bin": os.urandom(300 * 1024),
    **{f"many/file-{i:03d}.json": f"{i}".encode() for i in range(150)},   # a multi-cluster directory
}


def build(tree, path: Path, **kw) -> Path:
    kw.setdefault("epoch", EPOCH)
    with open(path, "wb") as fp:
        vfat.write(tree, fp, **kw)
    return path


def mcopy_out(image: Path, dest: Path) -> dict[str, bytes]:
    dest.mkdir()
    run("mcopy", "-s", "-n", "-i", image, "::/", dest, env=UTF8)
    return read_directory(dest)


def fsck_lines(image: Path) -> list[str]:
    """fsck.fat's read-only check: exit 0, and only its banner and summary lines."""
    proc = run("fsck.fat", "-n", image, check=False)
    text = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, text
    return [line for line in text.splitlines() if line.strip()]


def assert_fsck_clean(image: Path) -> None:
    lines = fsck_lines(image)
    assert len(lines) == 2 and lines[0].startswith("fsck.fat ") \
        and re.match(rf"{re.escape(str(image))}: \d+ files, \d+/\d+ clusters$", lines[1]), lines


def fsck_geometry(image: Path) -> dict[str, str]:
    """What fsck.fat -v reports about the layout: sector size and count, FAT width, cluster
    size and count, root entries, and where the data area starts (after the reserved
    sectors, FATs and root directory)."""
    text = out("fsck.fat", "-n", "-v", image)
    return {
        "sector": re.search(r"(\d+) bytes per logical sector", text).group(1),
        "sectors": re.search(r"(\d+) sectors total", text).group(1),
        "data": re.search(r"Data area starts at byte (\d+)", text).group(1),
        "fat": re.search(r"(\d+) bit entries", text).group(1),
        "cluster": re.search(r"(\d+) bytes per cluster", text).group(1),
        "clusters": re.search(r"(\d+) data clusters", text).group(1),
        "root": (re.search(r"(\d+) root directory entries", text) or re.search("()", "")).group(1),
    }


def blkid(image: Path) -> dict[str, str]:
    text = out("blkid", "-p", "-o", "export", image)
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


@pytest.fixture
def nova_tree():
    return build_tree(sample_content())


# -- what a consumer sees -----------------------------------------------------------------

def test_default_image_is_a_64mib_fat16_drive_labelled_config2(tmp_path, nova_tree):
    need_tool("blkid", "fsck.fat", "mlabel")
    image = build(nova_tree, tmp_path / "cd.img")
    assert image.stat().st_size == 64 * MiB
    found = blkid(image)
    assert (found["TYPE"], found["LABEL"], found["VERSION"]) == ("vfat", "config-2", "FAT16")
    # blkid reads the label from the root directory, LABEL_FATBOOT from the boot sector.
    assert found["LABEL_FATBOOT"] == "config-2"
    assert fsck_geometry(image)["cluster"] == "2048"
    assert "Volume label is config-2" in out("mlabel", "-s", "-i", image)
    assert_fsck_clean(image)


def test_default_layout_is_what_mkfs_vfat_makes_for_nova(tmp_path, nova_tree):
    need_tool("mkfs.vfat", "fsck.fat")
    ours = build(nova_tree, tmp_path / "ours.img")
    theirs = tmp_path / "mkfs.img"
    run("mkfs.vfat", "-n", "config-2", "-C", theirs, 64 * 1024)
    assert fsck_geometry(ours) == fsck_geometry(theirs)


def test_fsck_check_notices_a_label_mismatch(tmp_path, nova_tree):
    """Control for assert_fsck_clean: the complaint it must catch is really printed."""
    need_tool("fsck.fat")
    image = build(nova_tree, tmp_path / "cd.img")
    data = bytearray(image.read_bytes())
    data[43:54] = b"OTHER      "   # the boot sector's copy of the label (FAT16)
    image.write_bytes(data)
    proc = run("fsck.fat", "-n", image, check=False)
    assert b"label" in (proc.stdout + proc.stderr).lower()
    with pytest.raises(AssertionError):
        assert_fsck_clean(image)


def test_mtools_extract_every_file_byte_for_byte_with_long_names(tmp_path):
    need_tool("mcopy", "mdir", "fsck.fat")
    image = build(TRICKY_TREE, tmp_path / "cd.img")
    assert_fsck_clean(image)
    assert mcopy_out(image, tmp_path / "out") == TRICKY_TREE
    listing = out("mdir", "-i", image, "::/openstack", env=UTF8)
    assert "2012-08-10" in listing and "2013-04-04" in listing and "latest" in listing


def test_cloud_init_reads_the_extracted_drive(tmp_path, nova_tree):
    need_tool("mcopy")
    image = build(nova_tree, tmp_path / "cd.img")
    extracted = tmp_path / "out"
    assert mcopy_out(image, extracted) == nova_tree
    seen = cloud_init_read(extracted)
    content = sample_content()
    assert seen["metadata"]["uuid"] == content.uuid
    assert seen["metadata"]["hostname"] == content.meta_data["hostname"]
    assert seen["metadata"]["public_keys"] == content.meta_data["public_keys"]
    assert seen["userdata"] == content.user_data
    assert seen["networkdata"] == content.network_data
    assert seen["vendordata"] == content.vendor_data
    assert seen["files"] == {f.path: f.data for f in content.files}


@pytest.mark.parametrize("label", ["config-2", "CONFIG-2", "cidata"])
def test_label_is_stored_as_given_in_both_places(tmp_path, label):
    need_tool("blkid", "fsck.fat", "mlabel")
    image = build({"a": b"1"}, tmp_path / "cd.img", label=label)
    found = blkid(image)
    assert (found["LABEL"], found["LABEL_FATBOOT"]) == (label, label)
    assert f"Volume label is {label}" in out("mlabel", "-s", "-i", image)
    assert_fsck_clean(image)


@pytest.mark.parametrize("label", ["config-2-is-too-long", "a:b", "bad/label", " lead", "caf\u20ac"])
def test_bad_labels_are_refused(label):
    with pytest.raises(ConfigDriveError, match="label"):
        vfat.write({"a": b"1"}, io.BytesIO(), label=label)


# -- reproducibility ----------------------------------------------------------------------

def test_same_epoch_gives_identical_images_with_that_date(tmp_path, nova_tree):
    need_tool("mdir", "blkid")
    first = build(nova_tree, tmp_path / "1.img", epoch=EPOCH)
    second = build(dict(reversed(list(nova_tree.items()))), tmp_path / "2.img", epoch=EPOCH)
    assert first.read_bytes() == second.read_bytes()
    assert "2023-11-14  22:13" in out("mdir", "-i", first, "::/openstack")
    later = build(nova_tree, tmp_path / "3.img", epoch=EPOCH + 86400)
    assert "2023-11-15  22:13" in out("mdir", "-i", later, "::/openstack")
    assert blkid(later)["UUID"] != blkid(first)["UUID"]   # the serial follows the inputs


def test_without_epoch_files_carry_the_current_date(tmp_path):
    need_tool("mdir")
    import datetime
    before = datetime.date.today().isoformat()
    image = build({"a": b"1"}, tmp_path / "cd.img", epoch=None)
    after = datetime.date.today().isoformat()
    listing = out("mdir", "-i", image, "::/")
    assert before in listing or after in listing, listing


# -- sizes --------------------------------------------------------------------------------

@pytest.mark.parametrize("size, fat", [(1 * MiB, "12"), (8 * MiB, "12"), (16 * MiB, "16"),
                                       (100 * MiB + 512, "16"), (600 * MiB, "32")])
def test_custom_size_gets_the_fat_type_and_clusters_mkfs_vfat_chooses(tmp_path, nova_tree, size, fat):
    need_tool("mkfs.vfat", "fsck.fat", "blkid", "mcopy")
    image = build(nova_tree, tmp_path / "cd.img", size=size)
    assert image.stat().st_size == size
    assert blkid(image)["VERSION"] == f"FAT{fat}"
    theirs = tmp_path / "mkfs.img"
    run("mkfs.vfat", "-n", "config-2", "-C", theirs, size // 1024)
    assert fsck_geometry(image) == fsck_geometry(theirs)
    assert_fsck_clean(image)
    assert mcopy_out(image, tmp_path / "out") == nova_tree


@pytest.mark.parametrize("size", [512 * 1024, 3 * 1024 * MiB, "64M", 64.0])
def test_unreasonable_sizes_are_refused(size):
    sink = io.BytesIO()
    with pytest.raises(ConfigDriveError, match="vfat size"):
        vfat.write({"a": b"1"}, sink, size=size)
    assert sink.getvalue() == b""


def test_content_too_large_is_refused_before_writing(tmp_path):
    target = tmp_path / "cd.img"
    with open(target, "wb") as fp:
        with pytest.raises(ConfigDriveError) as caught:
            vfat.write({"big": bytes(2 * MiB)}, fp, size=1 * MiB)
    message = str(caught.value)
    needed, available = map(int, re.search(r"needs (\d+) bytes.* has (\d+) bytes", message).groups())
    assert needed >= 2 * MiB > available and "\n" not in message
    assert target.stat().st_size == 0


def test_root_directory_overflow_is_refused():
    tree = {f"file-with-a-long-name-{i}": b"" for i in range(200)}   # 3 entries each > 512
    with pytest.raises(ConfigDriveError, match="root directory needs"):
        vfat.write(tree, io.BytesIO())


@pytest.mark.parametrize("tree, problem", [
    ({"a": b"1", "A": b"2"}, "case"),
    ({"a": b"1", "a/b": b"2"}, "both a file and a directory"),
    ({"/abs": b"1"}, "relative"),
    ({"a/../b": b"1"}, "relative"),
    ({"what?": b"1"}, "cannot hold"),
    ({"dot.": b"1"}, "trailing"),
    ({"x" * 256: b"1"}, "longer than 255"),
])
def test_names_fat_cannot_hold_are_refused(tree, problem):
    with pytest.raises(ConfigDriveError, match=problem):
        vfat.write(tree, io.BytesIO())


def test_only_the_used_part_is_written_to_a_regular_file(tmp_path, nova_tree):
    image = build(nova_tree, tmp_path / "cd.img")
    assert image.stat().st_blocks * 512 < 4 * MiB   # a hole, like mkfs.vfat -C makes


# -- logical sectors over 512 bytes (what a 4Kn disk needs) --------------------------------

@pytest.mark.parametrize("sector_size", [1024, 2048, 4096])
@pytest.mark.parametrize("size", [1 * MiB, 32 * MiB, 64 * MiB, 100 * MiB + 4096, 600 * MiB, 2048 * MiB])
def test_larger_sectors_get_the_layout_mkfs_vfat_makes_with_them(tmp_path, size, sector_size):
    """mkfs.fat counts clusters in sectors, so 4096-byte sectors give FAT12 with 16 KiB
    clusters up to 32 MiB, and a FAT32 cluster size that follows the sector count."""
    need_tool("mkfs.vfat", "fsck.fat")
    image = build({"openstack/latest/meta_data.json": b"{}"}, tmp_path / "cd.img", size=size,
                  sector_size=sector_size)
    theirs = tmp_path / "mkfs.img"
    run("mkfs.vfat", "-S", sector_size, "-n", "config-2", "-C", theirs, size // 1024)
    ours = fsck_geometry(image)
    assert ours == fsck_geometry(theirs)
    assert ours["sector"] == str(sector_size)
    assert_fsck_clean(image)


def test_4096_byte_sector_drive_as_fsck_blkid_mtools_and_cloud_init_see_it(tmp_path, nova_tree):
    need_tool("blkid", "fsck.fat", "mcopy")
    image = build(nova_tree, tmp_path / "cd.img", sector_size=4096)
    assert image.stat().st_size == 64 * MiB
    assert_fsck_clean(image)
    assert "4096 bytes per logical sector" in out("fsck.fat", "-n", "-v", image)
    found = blkid(image)
    assert (found["TYPE"], found["LABEL"], found["LABEL_FATBOOT"]) == ("vfat", "config-2", "config-2")
    assert found["BLOCK_SIZE"] == "4096"   # libblkid's reading of the boot sector's sector size
    extracted = tmp_path / "out"
    assert mcopy_out(image, extracted) == nova_tree
    seen = cloud_init_read(extracted)
    assert seen["metadata"]["uuid"] == sample_content().uuid
    assert seen["files"] == {f.path: f.data for f in sample_content().files}


@pytest.mark.parametrize("sector_size, size, fat", [(1024, 8 * MiB, "12"), (2048, 8 * MiB, "12"),
                                                    (4096, 8 * MiB, "12"), (4096, 64 * MiB, "16"),
                                                    (4096, 600 * MiB, "32")])
def test_larger_sectors_keep_every_file_for_mtools_and_our_reader(tmp_path, sector_size, size, fat):
    need_tool("mcopy", "fsck.fat", "blkid")
    image = build(TRICKY_TREE, tmp_path / "cd.img", size=size, sector_size=sector_size)
    assert blkid(image)["VERSION"] == f"FAT{fat}"
    assert_fsck_clean(image)
    assert mcopy_out(image, tmp_path / "out") == TRICKY_TREE
    with open(image, "rb") as fp:
        assert fatreader.read(fp, source=str(image)) == TRICKY_TREE


@pytest.mark.parametrize("sector_size", [256, 520, 8192, "4096", None])
def test_unsupported_sector_sizes_are_refused(sector_size):
    sink = io.BytesIO()
    with pytest.raises(ConfigDriveError, match="sector size"):
        vfat.write({"a": b"1"}, sink, sector_size=sector_size)
    assert sink.getvalue() == b""


# -- reading ------------------------------------------------------------------------------

@pytest.mark.parametrize("size_kib, sector_size", [(1024, 512), (8 * 1024, 512), (64 * 1024, 512),
                                                    (600 * 1024, 512), (8 * 1024, 4096), (64 * 1024, 4096),
                                                    (600 * 1024, 4096)])
def test_reads_a_drive_made_by_mkfs_vfat_and_mcopy(tmp_path, nova_tree, size_kib, sector_size):
    need_tool("mkfs.vfat", "mcopy")
    source = tmp_path / "tree"
    for rel, data in nova_tree.items():
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_bytes(data)
    image = tmp_path / "nova.img"
    run("mkfs.vfat", "-S", sector_size, "-n", "config-2", "-C", image, size_kib)
    run("mcopy", "-s", "-i", image, *sorted(source.iterdir()), "::/")
    with open(image, "rb") as fp:
        assert fatreader.read(fp, source=str(image)) == nova_tree


def test_reads_long_names_as_mtools_writes_them(tmp_path):
    need_tool("mkfs.vfat", "mcopy")
    names = {"latest": b"lowercase 8.3 (a case flag)", "UPPER": b"plain 8.3",
             "Mixed.Case": b"long name", "caf\u00e9 au lait.txt": b"unicode long name"}
    source = tmp_path / "tree"
    source.mkdir()
    for name, data in names.items():
        (source / name).write_bytes(data)
    image = tmp_path / "img"
    run("mkfs.vfat", "-n", "config-2", "-C", image, 1024)
    run("mcopy", "-i", image, *sorted(source.iterdir()), "::/", env=UTF8)
    assert fatreader.read(open(image, "rb")) == names


def test_reads_at_an_offset_from_a_stream_positioned_anywhere(tmp_path):
    image = io.BytesIO()
    vfat.write(TRICKY_TREE, image, size=4 * MiB, epoch=EPOCH)
    disk = tmp_path / "disk"
    disk.write_bytes(b"\xaa" * MiB + image.getvalue() + b"\xbb" * 4096)
    with open(disk, "r+b") as fp:
        fp.seek(12345)
        assert fatreader.read(fp, source=str(disk), offset=MiB) == TRICKY_TREE
        assert not fp.closed
    assert disk.read_bytes()[MiB:MiB + 4 * MiB] == image.getvalue()   # read-write handle left as it was
    image.seek(777)
    assert fatreader.read(image) == TRICKY_TREE


def test_damaged_images_are_refused_naming_the_source(tmp_path, nova_tree):
    good = io.BytesIO()
    vfat.write(nova_tree, good, size=4 * MiB, epoch=EPOCH)
    data = good.getvalue()
    geo = fatgeometry.geometry_for(4 * MiB)

    with pytest.raises(ConfigDriveError, match=r"^junk\.img: .*FAT"):
        fatreader.read(io.BytesIO(os.urandom(MiB)), source="junk.img")
    with pytest.raises(ConfigDriveError, match=r"^cut\.img: "):
        fatreader.read(io.BytesIO(data[:geo.data_offset + 4096]), source="cut.img")
    looped = bytearray(data)   # FAT12: cluster 3 (directory ec2/2009-04-04) points to itself
    for copy in range(2):
        at = geo.fat_offset + copy * geo.fat_sectors * 512 + 4   # entries 2 and 3 share bytes 3..5
        looped[at] = (looped[at] & 0x0F) | 0x30
        looped[at + 1] = 0x00
    with pytest.raises(ConfigDriveError, match=r"^loop\.img: "):
        fatreader.read(io.BytesIO(bytes(looped)), source="loop.img")


def test_import_and_use_never_load_pyfilesystem2_or_pkg_resources():
    """pyfatfs' file-level API imports PyFilesystem2 ("fs"), whose __init__ needs
    pkg_resources, gone from setuptools 81 and absent from Python 3.12 venvs."""
    code = ("import io, sys\n"
            "from configdrive.formats import fatreader, vfat\n"
            "buf = io.BytesIO(); vfat.write({'a/b': b'x'}, buf, epoch=0)\n"
            "assert fatreader.read(buf) == {'a/b': b'x'}\n"
            "loaded = sorted(m for m in ('fs', 'pkg_resources') if m in sys.modules)\n"
            "assert not loaded, loaded\n")
    proc = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# Names mixing the cases that drive the short-name rules: case, dots, spaces, "~", long
# stems sharing their first six characters, and non-ASCII letters.
_name = st.text(alphabet="abcXYZ019 .-_~\u00e9", min_size=1, max_size=20)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=st.dictionaries(st.lists(_name, min_size=1, max_size=3).map("/".join),
                            st.binary(max_size=5000), min_size=1, max_size=12))
def test_any_tree_comes_back_from_mtools_unchanged(tmp_path_factory, tree):
    need_tool("mcopy", "fsck.fat")
    work = tmp_path_factory.mktemp("prop")
    try:
        image = build(tree, work / "cd.img", size=MiB)
    except ConfigDriveError:
        assume(False)   # names FAT cannot hold (tested above), or a file/directory clash
    assert_fsck_clean(image)
    assert mcopy_out(image, work / "out") == tree
