"""ISO 9660 drives: what we write is read back by blkid, isoinfo, xorriso and cloud-init;
our primary names are the ones genisoimage writes with nova's flags; our reader reads
what genisoimage writes and refuses damaged images with one line."""

from __future__ import annotations

import io
import os
import re
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from configdrive.formats import iso, isonames, isoreader
from configdrive.model.content import Content
from configdrive.errors import ConfigDriveError
from configdrive.model.layout import build_tree

from conftest import cloud_init_read, configdrive, need_tool, out, run, sample_content

NOVA_GENISOIMAGE_FLAGS = ["-ldots", "-allow-lowercase", "-allow-multidot", "-l",
                          "-publisher", "test", "-quiet", "-J", "-r", "-V", "config-2"]

# Names that exercise every rule of genisoimage's primary-name mapping: "-" and other
# punctuation, many dots, leading and trailing dots, uppercase, names over 31 characters
# with and without an extension, long extensions, non-ASCII, and names that collide once
# mapped (a-b, a_b, a~b).
AWKWARD_NAMES = [
    "meta_data.json", "user_data", "meta-data.json", "user-data", "0000", "a-b", "a_b", "a~b",
    "x.json", "x-json", "ABC", "abc", "File.TXT", "a.b.c.d", "...dots", ".hidden", "trailing.",
    "a..b", "x.tar.gz", "foo.c.~3~", "foo~", "a;1", "b.c;2", "sp ace!@#$%^&()+=,",
    "ümlaut", "abcdefghijklmnopqrstuvwxyz0123456789A", "abcdefghijklmnopqrstuvwxyz0123456789B",
    "abcdefghijklmnopqrstuvwxyz01234", "abcdefghijklmnopqrstuvwxyz0123",
    "name.with.a-very-long-extension-name-here", "a" * 40 + ".json", "d" * 14 + "." + "e" * 16,
    "f" * 14 + "." + "e" * 15, "g" * 20 + "." + "e" * 16, "h" * 20 + "." + "e" * 15,
    "s" * 28 + ".c.~3~", "t" * 33 + ".",
]


def awkward_tree() -> dict[str, bytes]:
    tree = {f"files/{name}": name.encode() for name in AWKWARD_NAMES}
    tree.update({f"dirs/{name}/f": b"in a directory" for name in AWKWARD_NAMES})
    tree["2012-08-10/network-data.json"] = b"{}"
    return tree


def full_content() -> Content:
    return sample_content()


def write_iso(tree, path: Path, **kw) -> Path:
    kw.setdefault("epoch", 1700000000)
    with open(path, "wb") as fp:
        iso.write(tree, fp, **kw)
    return path


def write_dir(tree, root: Path) -> Path:
    for rel, data in tree.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return root


def genisoimage(tree, tmp: Path, flags=NOVA_GENISOIMAGE_FLAGS) -> Path:
    need_tool("genisoimage")
    source = write_dir(tree, tmp / "genisoimage-input")
    image = tmp / "genisoimage.iso"
    run("genisoimage", "-o", image, *flags, source)
    return image


def listing(image: Path, *flags: str) -> set[str]:
    """Every path in the image as ``isoinfo -f`` lists it (no flag: primary names)."""
    need_tool("isoinfo")
    proc = run("isoinfo", "-f", *flags, "-i", image)
    # isoinfo prints Joliet names in ISO 8859-1 (it has no UTF-8 output), Rock Ridge raw.
    text = proc.stdout.decode("latin-1" if "-J" in flags else "utf-8")
    return {line for line in text.splitlines() if line}


def tree_paths(tree) -> set[str]:
    """The tree's files and the directories they imply, as absolute paths."""
    paths = set()
    for rel in tree:
        parts = rel.split("/")
        paths.update("/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1))
    return paths


def xorriso_extract(image: Path, dest: Path) -> dict[str, bytes]:
    need_tool("xorriso")
    run("xorriso", "-osirrox", "on", "-indev", image, "-extract", "/", dest)
    found = {}
    for dirpath, _dirs, files in os.walk(dest):
        os.chmod(dirpath, 0o755)   # xorriso restores r-x directories; let tmp_path clean up
        for name in files:
            full = Path(dirpath, name)
            found[full.relative_to(dest).as_posix()] = full.read_bytes()
    return found


# -- what other tools see in our images ------------------------------------------------

def test_blkid_sees_an_iso9660_filesystem_labelled_config_2(tmp_path):
    need_tool("blkid")
    image = write_iso(build_tree(full_content()), tmp_path / "drive.iso")
    assert out("blkid", "-p", "-s", "LABEL", "-s", "TYPE", "-o", "export", image).split() == \
        ["DEVNAME=" + str(image), "LABEL=config-2", "TYPE=iso9660"]


def test_label_option_changes_the_label_blkid_reports(tmp_path):
    need_tool("blkid")
    image = tmp_path / "drive.iso"
    configdrive("build", "--example", "--label", "CONFIG-2", "-o", image)
    assert out("blkid", "-p", "-s", "LABEL", "-o", "value", image).strip() == "CONFIG-2"


def test_rock_ridge_and_joliet_names_are_exact(tmp_path):
    tree = {rel: data for rel, data in awkward_tree().items() if len(rel.rsplit("/", 1)[-1]) <= 64}
    image = write_iso(tree, tmp_path / "drive.iso")
    assert listing(image, "-R") == tree_paths(tree)
    # Joliet cannot hold ";" (genisoimage writes "_" for it too); everything else is exact.
    assert listing(image, "-J") == {p.replace(";", "_") for p in tree_paths(tree)}


@pytest.mark.parametrize("tree", [build_tree(full_content()), awkward_tree()], ids=["nova", "awkward"])
def test_primary_names_equal_those_of_genisoimage_with_novas_flags(tmp_path, tree):
    ours = write_iso(tree, tmp_path / "ours.iso")
    theirs = genisoimage(tree, tmp_path)
    primary = listing(ours)
    assert primary == listing(theirs)
    if "openstack/latest/meta_data.json" in tree:   # the names ironic's reader asks for
        assert {"/openstack/2012_08_10/meta_data.json;1", "/openstack/latest/user_data.;1",
                "/openstack/content/0000.;1", "/ec2/latest/meta_data.json;1"} <= primary


# No ";": Joliet forbids it, and ";" next to "_" would make Joliet names collide.
_NAME = st.text(alphabet="aZ09._-~,é #", min_size=1, max_size=45).filter(lambda n: n not in (".", ".."))


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=st.sets(_NAME, min_size=1, max_size=8), dirs=st.sets(_NAME, max_size=4))
def test_primary_names_of_random_names_equal_genisoimage(tmp_path_factory, files, dirs):
    # A file and a directory whose primary names collide ("0" -> "0.;1", "0." -> "0.") are
    # renamed by genisoimage in readdir order, which differs between runs: no fixed answer
    # to compare with. Ours stays unique (test_file_and_directory_collision_stays_unique).
    file_names = {isonames.primary_name(n, False).split(";")[0] for n in files}
    assume(not any(isonames.primary_name(d, True) in file_names for d in dirs - files))
    tmp = tmp_path_factory.mktemp("names")
    tree = {f"top/{name}": b"x" for name in files}
    tree.update({f"top/{name}/inner-file.txt": b"y" for name in dirs - files})
    assert listing(write_iso(tree, tmp / "ours.iso")) == listing(genisoimage(tree, tmp))


@pytest.mark.parametrize("file, directory", [("0", "0."), ("-", ",."), ("#", "-.")])
def test_file_and_directory_collision_stays_unique(tmp_path, file, directory):
    tree = {f"top/{file}": b"x", f"top/{directory}/inner-file.txt": b"y"}
    names = listing(write_iso(tree, tmp_path / "ours.iso"))
    assert len(names) == 4 and xorriso_extract(tmp_path / "ours.iso", tmp_path / "x") == tree


def test_xorriso_extracts_the_tree_byte_for_byte(tmp_path):
    tree = build_tree(full_content())
    tree["openstack/content/0001"] = os.urandom(5 << 20)
    tree["openstack/content/0002"] = b""
    tree["binary/zeros-and-ff"] = bytes(range(256)) * 9
    image = write_iso(tree, tmp_path / "drive.iso")
    assert xorriso_extract(image, tmp_path / "x") == tree


def test_cloud_init_reads_everything_from_the_extracted_drive(tmp_path):
    content = full_content()
    image = write_iso(build_tree(content), tmp_path / "drive.iso")
    extracted = tmp_path / "x"
    xorriso_extract(image, extracted)
    seen = cloud_init_read(extracted)
    md = seen["metadata"]
    assert md["instance-id"] == md["uuid"] == content.uuid
    assert md["local-hostname"] == content.meta_data["hostname"]
    assert md["public_keys"] == content.meta_data["public_keys"]
    assert seen["userdata"] == content.user_data
    assert seen["networkdata"] == content.network_data
    assert seen["vendordata"] == content.vendor_data
    assert seen["vendordata2"] == content.vendor_data2
    assert seen["files"] == {f.path: f.data for f in content.files}


# -- reproducibility -------------------------------------------------------------------

def test_source_date_epoch_gives_identical_images_and_stamps_every_date(tmp_path):
    epoch = "1650000000"   # 2022-04-15 05:20:00 UTC
    images = []
    for index, tz in enumerate(["UTC", "Asia/Tokyo"]):
        if index:
            time.sleep(1.1)    # a clock that leaked into the image would now differ
        image = tmp_path / f"drive{index}.iso"
        configdrive("build", "--example", "-o", image,
                    env={**os.environ, "SOURCE_DATE_EPOCH": epoch, "TZ": tz})
        images.append(image.read_bytes())
    assert images[0] == images[1]

    need_tool("xorriso")
    pvd = out("xorriso", "-indev", tmp_path / "drive0.iso", "-pvd_info")
    for field in ("Creation Time", "Modif. Time", "Eff. Time"):
        assert re.search(rf"^{re.escape(field)} *: 2022041505200000$", pvd, re.M), pvd
    extracted = tmp_path / "x"
    xorriso_extract(tmp_path / "drive0.iso", extracted)
    mtimes = {os.stat(Path(d, n)).st_mtime for d, ds, fs in os.walk(extracted) for n in ds + fs}
    assert mtimes == {int(epoch)}


def test_without_epoch_the_image_carries_the_current_time(tmp_path):
    need_tool("xorriso")
    before = int(time.time())
    image = tmp_path / "drive.iso"
    with open(image, "wb") as fp:
        iso.write({"a": b"1"}, fp)
    extracted = tmp_path / "x"
    xorriso_extract(image, extracted)
    assert before - 1 <= os.stat(extracted / "a").st_mtime <= time.time() + 1


# -- our reader --------------------------------------------------------------------------

def test_reader_reads_genisoimage_output(tmp_path):
    tree = build_tree(full_content())
    tree.update(awkward_tree())
    with open(genisoimage(tree, tmp_path), "rb") as fp:
        assert isoreader.read(fp, source="genisoimage.iso") == tree


@pytest.mark.parametrize("flags", [
    ["-l", "-allow-lowercase", "-allow-multidot", "-ldots", "-V", "config-2"],
    ["-J", "-V", "config-2"],
], ids=["primary-only", "joliet-only"])
def test_reader_gives_usable_paths_without_rock_ridge(tmp_path, flags):
    tree = build_tree(full_content())
    with open(genisoimage(tree, tmp_path, flags=["-quiet", *flags]), "rb") as fp:
        assert isoreader.read(fp, source="other.iso") == tree


def test_reader_refuses_a_truncated_image_with_one_line(tmp_path):
    data = genisoimage(build_tree(full_content()), tmp_path).read_bytes()
    for cut in (len(data) - 1, len(data) // 2, 40000):
        with pytest.raises(ConfigDriveError) as caught:
            isoreader.read(io.BytesIO(data[:cut]), source="cut.iso")
        message = str(caught.value)
        assert message == f"cut.iso: truncated ISO 9660 image: {cut} bytes, its volume descriptor declares {len(data)}"


def test_reader_refuses_a_file_that_is_no_iso(tmp_path):
    with pytest.raises(ConfigDriveError, match=r"^junk\.bin: not an ISO 9660 image"):
        isoreader.read(io.BytesIO(b"\0" * 70000), source="junk.bin")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(16 * 2048, 40 * 2048 - 1), st.integers(0, 255)), min_size=1, max_size=8))
def test_reader_turns_any_damage_into_one_error(flips):
    image = io.BytesIO()
    iso.write(build_tree(full_content()), image, epoch=0)
    damaged = bytearray(image.getvalue())
    for offset, value in flips:
        damaged[offset] = value
    try:
        isoreader.read(io.BytesIO(bytes(damaged)), source="bad.iso")
    except ConfigDriveError as exc:
        assert str(exc).startswith("bad.iso: ") and "\n" not in str(exc)


# -- what the writer refuses -------------------------------------------------------------

@pytest.mark.parametrize("tree, message", [
    ({"a": b"1", "a/b": b"2"}, "a: is both a file and a directory"),
    ({"/etc/x": b"1"}, "not a relative path"),
    ({"a/../b": b"1"}, "not a relative path"),
    ({"x" * 65 + "1": b"1", "x" * 65 + "2": b"2"}, "Joliet name"),
])
def test_writer_refuses_trees_that_cannot_be_a_drive(tree, message):
    with pytest.raises(ConfigDriveError, match=message):
        iso.write(tree, io.BytesIO())


def test_writer_refuses_a_label_joliet_cannot_hold():
    with pytest.raises(ConfigDriveError, match="1 to 16 characters"):
        iso.write({"a": b"1"}, io.BytesIO(), label="a-label-that-is-too-long")
