"""configdrive-mkisofs, the drop-in for genisoimage that nova (mkisofs_cmd) and openstacksdk
(the first genisoimage on PATH) run: on the same directory and the same argument list, the
image has genisoimage's primary, Joliet and Rock Ridge names, modes and sizes (isoinfo),
the same files byte for byte (xorriso), and the publisher and label asked for; whatever we
do not implement is refused with one line naming it, and no image is left behind."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from configdrive.errors import ConfigDriveError

from configdrive.model.layout import build_tree

from conftest import need_tool, out, run, sample_content
from test_iso import awkward_tree, listing, write_dir, xorriso_extract

NOVA_ARGS = ["-ldots", "-allow-lowercase", "-allow-multidot", "-l",
             "-publisher", "OpenStack Nova 34.0.0", "-quiet", "-J", "-r", "-V", "config-2"]
SDK_ARGS = ["-ldots", "-allow-lowercase", "-allow-multidot", "-l", "-J", "-r", "-V", "config-2"]
MKISOFS = Path(sys.executable).with_name("configdrive-mkisofs")


def mkisofs(*args, check=True):
    return run(MKISOFS, *args, check=check)


def rock_ridge_entries(image: Path) -> set[tuple[str, str, str, str]]:
    """(directory, name, mode, size) of every entry isoinfo lists through Rock Ridge."""
    need_tool("isoinfo")
    entries, directory = set(), None
    for line in out("isoinfo", "-l", "-R", "-i", image).splitlines():
        heading = re.match(r"Directory listing of (.*)$", line)
        if heading:
            directory = heading.group(1)
            continue
        fields = re.match(r"(\S{10})\s+\d+\s+\d+\s+\d+\s+(\d+) .*\]\s+(.*?) ?$", line)
        if fields and fields.group(3) not in (".", ".."):
            entries.add((directory, fields.group(3), fields.group(1), fields.group(2)))
    return entries


def descriptor(image: Path) -> dict[str, str]:
    need_tool("isoinfo")
    return dict(line.split(": ", 1) for line in out("isoinfo", "-d", "-i", image).splitlines() if ": " in line)


@pytest.mark.parametrize("args", [NOVA_ARGS, SDK_ARGS], ids=["nova", "openstacksdk"])
@pytest.mark.parametrize("tree", [build_tree(sample_content()), awkward_tree()], ids=["drive", "awkward"])
def test_names_modes_and_bytes_equal_genisoimage_on_the_same_directory(tmp_path, args, tree):
    need_tool("genisoimage")
    source = write_dir(tree, tmp_path / "src")
    ours, theirs = tmp_path / "ours.iso", tmp_path / "theirs.iso"
    assert mkisofs("-o", ours, *args, source).returncode == 0
    run("genisoimage", "-o", theirs, *args, source)
    for flags in ((), ("-J",), ("-R",)):
        assert listing(ours, *flags) == listing(theirs, *flags), flags
    assert rock_ridge_entries(ours) == rock_ridge_entries(theirs)
    assert xorriso_extract(ours, tmp_path / "x") == tree
    mine, genisoimage = descriptor(ours), descriptor(theirs)
    for field in ("Volume id", "Publisher id"):
        assert mine[field] == genisoimage[field], field


def test_publisher_is_written_as_given(tmp_path):
    source = write_dir({"a": b"1"}, tmp_path / "src")
    mkisofs("-o", tmp_path / "x.iso", *NOVA_ARGS, source)
    assert descriptor(tmp_path / "x.iso")["Publisher id"] == "OpenStack Nova 34.0.0"


def test_options_may_come_in_any_order(tmp_path):
    source = write_dir({"openstack/latest/meta_data.json": b"{}"}, tmp_path / "src")
    mkisofs(source, "-V", "config-2", "-r", "-J", "-l", "-allow-multidot", "-allow-lowercase", "-ldots",
            "-o", tmp_path / "x.iso")
    assert listing(tmp_path / "x.iso", "-R") == {"/openstack", "/openstack/latest", "/openstack/latest/meta_data.json"}


UNIMPLEMENTED = [
    (["-R"], "-R"), (["-joliet-long"], "-joliet-long"), (["-udf"], "-udf"), (["-iso-level", "4"], "-iso-level"),
    (["--help"], "--help"), (["-input-charset", "utf-8"], "-input-charset"), (["-graft-points"], "-graft-points"),
    (["-no-pad"], "-no-pad"), (["-o"], "-o"), (["-V"], "-V"), (["-publisher"], "-publisher"),
]


@pytest.mark.parametrize("extra, named", UNIMPLEMENTED, ids=[n for _, n in UNIMPLEMENTED])
def test_an_option_we_do_not_implement_is_refused_by_name(tmp_path, extra, named):
    source = write_dir({"a": b"1"}, tmp_path / "src")
    image = tmp_path / "x.iso"
    args = ["-o", image, *NOVA_ARGS, source, *extra]
    proc = mkisofs(*args, check=False)
    lines = proc.stderr.decode().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("configdrive-mkisofs: error: ") and named in lines[0]
    assert not image.exists() and os.listdir(tmp_path) == ["src"]


@pytest.mark.parametrize("dropped", ["-ldots", "-allow-lowercase", "-allow-multidot", "-l", "-J", "-r", "-V", "-o"])
def test_a_missing_flag_is_refused_by_name(tmp_path, dropped):
    source = write_dir({"a": b"1"}, tmp_path / "src")
    args = ["-o", str(tmp_path / "x.iso"), *NOVA_ARGS]
    at = args.index(dropped)
    del args[at: at + (2 if dropped in ("-o", "-V") else 1)]
    proc = mkisofs(*args, source, check=False)
    lines = proc.stderr.decode().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and dropped in lines[0], proc.stderr
    assert os.listdir(tmp_path) == ["src"]


def test_more_than_one_source_directory_is_refused(tmp_path):
    a, b = write_dir({"a": b"1"}, tmp_path / "a"), write_dir({"b": b"1"}, tmp_path / "b")
    proc = mkisofs("-o", tmp_path / "x.iso", *SDK_ARGS, a, b, check=False)
    assert proc.returncode == 2 and b"one source directory" in proc.stderr


@pytest.mark.parametrize("kind", ["symlink", "dangling-symlink", "symlinked-dir", "fifo", "empty-dir"])
def test_what_our_tree_cannot_hold_fails_without_an_image(tmp_path, kind):
    source = write_dir({"openstack/latest/meta_data.json": b"{}"}, tmp_path / "src")
    odd = source / "openstack" / "odd"
    {"symlink": lambda: odd.symlink_to("latest/meta_data.json"),
     "dangling-symlink": lambda: odd.symlink_to("nowhere"),
     "symlinked-dir": lambda: odd.symlink_to("latest"),
     "fifo": lambda: os.mkfifo(odd),
     "empty-dir": lambda: odd.mkdir()}[kind]()
    image = tmp_path / "x.iso"
    proc = mkisofs("-o", image, *NOVA_ARGS, source, check=False)
    lines = proc.stderr.decode().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and str(odd) in lines[0], proc.stderr
    assert not image.exists() and sorted(os.listdir(tmp_path)) == ["src"]


def test_the_image_goes_into_the_output_file_the_caller_holds_open(tmp_path):
    # openstacksdk hands over a NamedTemporaryFile's name and reads the image back
    # through its own descriptor: the file must be written in place, not replaced
    source = write_dir({"openstack/latest/meta_data.json": b"{}"}, tmp_path / "src")
    image = tmp_path / "held.iso"
    with open(image, "w+b") as held:
        mkisofs("-o", image, *SDK_ARGS, source)
        held.seek(0)
        copy = tmp_path / "copy.iso"
        copy.write_bytes(held.read())
    assert listing(copy, "-R") == {"/openstack", "/openstack/latest", "/openstack/latest/meta_data.json"}


def test_a_failed_build_leaves_a_held_output_file_empty(tmp_path):
    source = write_dir({"a": b"1"}, tmp_path / "src")
    os.symlink("/nonexistent", source / "dangling")
    image = tmp_path / "held.iso"
    image.write_bytes(b"old contents")
    proc = mkisofs("-o", image, *NOVA_ARGS, "-V", "x" * 40, source, check=False)
    assert proc.returncode == 2   # -V twice: refused before anything is touched
    assert image.read_bytes() == b"old contents"
    (source / "dangling").unlink()
    args = [a if a != "config-2" else "a-label-far-too-long-for-joliet" for a in NOVA_ARGS]
    proc = mkisofs("-o", image, *args, source, check=False)
    assert proc.returncode == 1 and len(proc.stderr.decode().splitlines()) == 1, proc.stderr
    assert image.read_bytes() == b""


@pytest.mark.parametrize("existed", [True, False])
def test_a_failed_build_cleans_up_only_the_file_it_opened(tmp_path, monkeypatch, existed):
    """The output is named once. A symbolic link to another file renamed over the name
    during the build (anyone who may write the directory can) is left alone by the
    clean-up after a failure, and so is the file it points to; the file the build opened
    is emptied. Before, the clean-up truncated or removed whatever the name named by then."""
    from configdrive.engines import mkisofs as engine
    from configdrive.formats import iso
    source = write_dir({"openstack/latest/meta_data.json": b"{}"}, tmp_path / "src")
    victim, image = tmp_path / "victim", tmp_path / "out.iso"
    victim.write_bytes(b"precious")
    if existed:
        image.write_bytes(b"old contents")
        os.link(image, tmp_path / "opened")        # the file opened, reachable after the swap

    def write_then_fail(tree, fp, **kw):
        fp.write(b"partial image")
        (tmp_path / "link").symlink_to(victim)
        os.replace(tmp_path / "link", image)       # the name now leads to the victim
        raise ConfigDriveError("the build failed half-way")
    monkeypatch.setattr(iso, "write", write_then_fail)
    with pytest.raises(ConfigDriveError, match="half-way"):
        engine.make_image({"source": str(source), "output": str(image), "label": "config-2",
                           "publisher": "x"})
    assert victim.read_bytes() == b"precious"
    assert image.is_symlink() and os.readlink(image) == str(victim)
    if existed:
        assert (tmp_path / "opened").read_bytes() == b""


def test_an_unwritable_output_fails_with_one_line(tmp_path):
    source = write_dir({"a": b"1"}, tmp_path / "src")
    proc = mkisofs("-o", tmp_path / "no" / "such" / "x.iso", *NOVA_ARGS, source, check=False)
    lines = proc.stderr.decode().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "x.iso" in lines[0], proc.stderr
