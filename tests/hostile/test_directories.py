"""Directories someone else can write: the source of ``configdrive-mkisofs DIR`` and of
``build --from DIR``, a ``--file`` LOCAL_FILE, and ``extract``'s destination. Whoever can
write there may put a link, a FIFO, a device or a hard link where a file was, or swap an
entry between a file and a link to a host file while we read.

Each class is judged by tests/hostile/harness.py (a real process, one error line, the host
file watched byte for byte, hang and RSS guards); the race is a property held against a
thread flipping the entry in a loop; the images are read back with isoinfo and xorriso.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from configdrive.errors import ConfigDriveError
from configdrive.model.layout import build_tree

from conftest import configdrive, need_tool, out, run, sample_content
from harness import MKISOFS, refused, run_measured
from test_iso import listing, write_dir

ARGS = ["-ldots", "-allow-lowercase", "-allow-multidot", "-l", "-publisher", "OpenStack Nova 34.0.0",
        "-quiet", "-J", "-r", "-V", "config-2"]
SECRET = b"HOST-SECRET root:$6$never-in-an-image\n"
MINE = b"#cloud-config\n# the drive's own user data\n"
GiB = 1 << 30
# How long a flipping thread races one reader: the property is checked on every read in
# that time; the time bounds the test, it is not asserted.
RACE_SECONDS = 3.0


@pytest.fixture
def secret(tmp_path) -> Path:
    """A host file no image may ever hold."""
    path = tmp_path / "host" / "shadow"
    path.parent.mkdir()
    path.write_bytes(SECRET)
    return path


def drive_dir(tmp_path: Path) -> Path:
    return write_dir(build_tree(sample_content()), tmp_path / "drive")


def _plant(kind: str, at: Path, secret: Path) -> None:
    """Put ``kind`` at ``at`` (where a file or directory of ours could be)."""
    at.parent.mkdir(parents=True, exist_ok=True)
    if kind == "link-to-host-file":
        at.symlink_to(secret)
    elif kind == "link-to-host-dir":
        at.symlink_to(secret.parent)
    elif kind == "fifo":
        os.mkfifo(at)
    elif kind == "socket":
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(at))
    elif kind == "char-device":
        os.mknod(at, stat.S_IFCHR | 0o644, os.makedev(1, 5))    # /dev/zero's numbers
    elif kind == "empty-dir":
        at.mkdir()


# -- configdrive-mkisofs: one line, exit 1, for every class --------------------------------

KINDS = ["link-to-host-file", "link-to-host-dir", "fifo", "socket", "char-device", "empty-dir"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("where", ["openstack/latest/user_data", "openstack/odd", "top"])
def test_mkisofs_refuses_what_is_not_a_regular_file(tmp_path, secret, kind, where):
    if kind == "char-device" and os.geteuid() != 0:
        pytest.skip("mknod needs root")
    source = drive_dir(tmp_path)
    at = source / where
    with contextlib.suppress(FileNotFoundError):
        at.unlink()
    _plant(kind, at, secret)
    image = tmp_path / "out.iso"
    line = refused("-o", image, *ARGS, source, exe=MKISOFS, watch=[secret], names=str(at))
    assert ("symbolic link" in line) == kind.startswith("link"), line
    assert not image.exists()


@pytest.mark.parametrize("name", [b"user_data\xff", b"\x80", b"caf\xe9", b"dir\xfe/file"], ids=range(4))
@pytest.mark.parametrize("command", ["mkisofs", "build-from"])
def test_a_name_that_is_not_utf8_is_refused(tmp_path, name, command):
    source = os.fsencode(drive_dir(tmp_path))
    path = os.path.join(source, b"openstack", name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fp:
        fp.write(b"x")
    image = tmp_path / "out.iso"
    if command == "mkisofs":
        refused("-o", image, *ARGS, os.fsdecode(source), exe=MKISOFS, names="not UTF-8")
    else:
        refused("build", "--from", os.fsdecode(source), "--hostname", "n", "-o", image, names="not UTF-8")
    assert not image.exists()


@pytest.mark.parametrize("publisher", ["é€", "OpenStack Nova\u00a034", "\u202eevil", "\U0001f600"], ids=range(4))
def test_mkisofs_refuses_a_publisher_iso_9660_cannot_hold(tmp_path, publisher):
    source = drive_dir(tmp_path)
    image = tmp_path / "out.iso"
    args = [a if a != "OpenStack Nova 34.0.0" else publisher for a in ARGS]
    refused("-o", image, *args, source, exe=MKISOFS, names="publisher")
    assert not image.exists()


@pytest.mark.parametrize("output", ["no\nsuch/x.iso", "file\nhere/x.iso", "dir\nhere"], ids=range(3))
def test_mkisofs_output_path_with_a_newline_is_one_line(tmp_path, output):
    source = drive_dir(tmp_path)
    (tmp_path / "dir\nhere").mkdir()       # -o naming a directory
    (tmp_path / "file\nhere").write_bytes(b"")  # ... or going through a file
    line = refused("-o", tmp_path / output, *ARGS, source, exe=MKISOFS)
    assert "\\u000a" in line, line


# -- --file LOCAL_FILE ------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["link-to-host-file", "fifo", "socket", "char-device", "dir", "sparse"])
def test_file_option_takes_only_a_regular_file_of_a_drives_size(tmp_path, secret, kind):
    if kind == "char-device" and os.geteuid() != 0:
        pytest.skip("mknod needs root")
    local = tmp_path / "incoming" / "motd"
    if kind == "dir":
        local.mkdir(parents=True)
    elif kind == "sparse":
        local.parent.mkdir()
        with open(local, "wb") as fp:
            fp.truncate(4 * GiB)
    else:
        _plant(kind, local, secret)
    image = tmp_path / "out.iso"
    refused("build", "--example", "-o", image, "--file", f"/etc/motd={local}", watch=[secret],
            names=str(local))
    assert not image.exists()


# -- build --from DIR: a link or special file in the drive is left out, never read --------

@pytest.mark.parametrize("kind", ["link-to-host-file", "fifo", "socket"])
def test_build_from_a_directory_never_reads_through_what_is_planted(tmp_path, secret, kind):
    source = drive_dir(tmp_path)
    planted = source / "openstack" / "latest" / "vendor_data.json"
    planted.unlink()
    _plant(kind, planted, secret)
    image = tmp_path / "out.iso"
    outcome = run_measured("build", "--from", source, "--hostname", "n", "-o", image)
    assert outcome.returncode == 0, outcome.stderr
    assert "/openstack/latest/vendor_data.json" not in listing(image, "-R")
    assert SECRET.strip() not in image.read_bytes()


# -- extract DRIVE DIR: what is already in DIR ---------------------------------------------

def _drive_image(tmp_path: Path) -> Path:
    image = tmp_path / "drive.iso"
    configdrive("build", "--example", "-o", image)
    return image


def test_extract_replaces_a_hard_link_instead_of_writing_through_it(tmp_path, secret):
    image = _drive_image(tmp_path)
    dest = tmp_path / "dest"
    (dest / "openstack" / "latest").mkdir(parents=True)
    os.link(secret, dest / "openstack" / "latest" / "meta_data.json")
    configdrive("extract", image, dest)
    assert secret.read_bytes() == SECRET
    need_tool("isoinfo")
    assert (dest / "openstack" / "latest" / "meta_data.json").read_bytes() == \
        run("isoinfo", "-R", "-x", "/openstack/latest/meta_data.json", "-i", image).stdout


@pytest.mark.parametrize("kind", ["fifo", "socket", "regular-file-as-dir"])
def test_extract_refuses_a_special_file_in_the_way(tmp_path, secret, kind):
    image = _drive_image(tmp_path)
    dest = tmp_path / "dest"
    at = dest / "openstack" / "latest" / "meta_data.json"
    if kind == "regular-file-as-dir":
        at = dest / "openstack"
        at.parent.mkdir(parents=True)
        at.write_bytes(b"in the way")
    else:
        _plant(kind, at, secret)
    refused("extract", image, dest, watch=[secret, image], names=str(at))


# -- a sparse multi-GiB file: streamed, not held -------------------------------------------

def test_mkisofs_streams_a_sparse_multi_gib_file(tmp_path):
    need_tool("xorriso")
    source = drive_dir(tmp_path)
    user_data = source / "openstack" / "latest" / "user_data"
    with open(user_data, "r+b") as fp:
        fp.truncate(3 * GiB)
        fp.seek(3 * GiB - len(MINE))
        fp.write(MINE)                  # bytes at the end: the tail must arrive too
    image = tmp_path / "big.iso"
    outcome = run_measured("-o", image, *ARGS, source, exe=MKISOFS, hang_guard=600)
    assert outcome.returncode == 0, outcome.stderr
    assert outcome.peak_rss < 100 << 20, f"peak RSS {outcome.peak_rss >> 20} MiB for a 3 GiB file"
    latest = out("isoinfo", "-R", "-l", "-i", image).split("Directory listing of /openstack/latest/")[1]
    assert f" {3 * GiB} " in next(line for line in latest.splitlines() if line.endswith(" user_data "))
    # isoinfo cannot extract a file past 2 GiB; xorriso can, leaving holes where zeros were
    back = tmp_path / "back"
    run("xorriso", "-osirrox", "on:sparse=1m", "-indev", image,
        "-extract", "/openstack/latest/user_data", back)
    image.unlink()
    assert _same_bytes(back, user_data)


def _same_bytes(a: Path, b: Path) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(8 << 20), fb.read(8 << 20)
            if x != y:
                return False
            if not x:
                return True


# -- the race: an entry flipping between a file and a link to a host file -----------------

# The attacker is another process, running beside ours on another core as it would.
FLIP_LOOP = """
import os, sys
at, secret, new_file, new_link = sys.argv[1:5]
while True:
    with open(new_file, "wb") as fp:
        fp.write(%r)
    os.replace(new_file, at)
    os.symlink(secret, new_link)
    os.replace(new_link, at)
""" % MINE


class Flipper:
    """A process that swaps ``at`` between a regular file holding MINE and a link to the
    host file, each swap one rename (so the name always exists), until stopped. The new
    file and link are made in ``staging`` (same filesystem, outside the tree read)."""

    def __init__(self, at: Path, secret: Path, staging: Path):
        self.at = at
        self._args = [sys.executable, "-c", FLIP_LOOP, at, secret, staging / "flip-file", staging / "flip-link"]

    def __enter__(self) -> "Flipper":
        self.at.write_bytes(MINE)
        self._proc = subprocess.Popen(self._args)
        return self

    def __exit__(self, *exc) -> None:
        # still running: it flipped for the whole race (a crash would make the race vacuous)
        self.ran_throughout = self._proc.poll() is None
        self._proc.kill()
        self._proc.wait()


def _race(read_once) -> int:
    """Call ``read_once`` until RACE_SECONDS pass; returns how many reads were made. The
    interpreter switches threads as often as it can meanwhile, so a flipping thread's
    renames land between any two steps of a read, as another process's would."""
    reads, end = 0, time.monotonic() + RACE_SECONDS
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        while time.monotonic() < end:
            read_once()
            reads += 1
    finally:
        sys.setswitchinterval(interval)
    return reads


def _source_for_race(tmp_path: Path) -> tuple[Path, Path]:
    source = write_dir({"openstack/latest/meta_data.json": b"{}"}, tmp_path / "src")
    return source, source / "openstack" / "latest" / "user_data"


def test_mkisofs_never_reads_a_flipping_entrys_link_target(tmp_path, secret):
    from configdrive.engines.mkisofs import close_all, read_source_tree
    source, at = _source_for_race(tmp_path)

    def read_once():
        try:
            tree = read_source_tree(str(source))
        except ConfigDriveError as exc:
            assert str(at) in str(exc) and "symbolic link" in str(exc), exc
            return
        try:
            data = tree["openstack/latest/user_data"]
            data.seek(0)
            assert data.read() == MINE
        finally:
            close_all(tree)

    with Flipper(at, secret, tmp_path) as flipper:
        _race(read_once)
    assert flipper.ran_throughout


def test_mkisofs_command_never_puts_a_flipping_entrys_target_in_the_image(tmp_path, secret):
    source, at = _source_for_race(tmp_path)
    image = tmp_path / "out.iso"
    with Flipper(at, secret, tmp_path):
        for _ in range(10):
            image.unlink(missing_ok=True)
            outcome = run_measured("-o", image, *ARGS, source, exe=MKISOFS)
            assert outcome.returncode in (0, 1) and "Traceback" not in outcome.stderr, outcome.stderr
            if outcome.returncode == 0:
                assert SECRET.strip() not in image.read_bytes()
                assert image.read_bytes().count(MINE) == 1
            else:
                assert not image.exists() and len(outcome.stderr.splitlines()) == 1


def test_build_from_a_directory_never_reads_a_flipping_entrys_link_target(tmp_path, secret):
    from configdrive.drives.reader import read_directory   # what build --from DIR reads the drive with
    source, at = _source_for_race(tmp_path)

    def read_once():
        tree = read_directory(source)
        assert tree.get("openstack/latest/user_data", MINE) == MINE     # a link is left out

    with Flipper(at, secret, tmp_path) as flipper:
        _race(read_once)
    assert flipper.ran_throughout


def test_extract_never_writes_through_a_flipping_destination(tmp_path, secret):
    """DIR/openstack flips between a directory and a link to a host directory while
    extract writes: nothing may appear in the host directory."""
    from configdrive.drives.extract import extract
    outside = secret.parent
    dest = tmp_path / "dest"
    dest.mkdir()
    tree = build_tree(sample_content())
    stop = threading.Event()
    flips = 0

    def flip():
        nonlocal flips
        link, aside = dest / ".link", tmp_path / "aside"
        while not stop.is_set():
            with contextlib.suppress(OSError):
                os.rename(dest / "openstack", aside / str(flips))   # the directory extract made
            with contextlib.suppress(OSError):
                link.symlink_to(outside)
                os.replace(link, dest / "openstack")
            time.sleep(0.0002)          # a link for a while, then whatever extract makes
            with contextlib.suppress(OSError):
                os.unlink(dest / "openstack")                           # a link only
            time.sleep(0.0002)
            flips += 1

    (tmp_path / "aside").mkdir()
    thread = threading.Thread(target=flip, daemon=True)
    thread.start()
    try:
        def write_once():
            with contextlib.suppress(ConfigDriveError):
                extract(tree, dest)
        _race(write_once)
    finally:
        stop.set()
        thread.join()
    assert flips
    assert sorted(os.listdir(outside)) == ["shadow"] and secret.read_bytes() == SECRET


def test_a_file_that_shrinks_while_the_image_is_written_is_refused_not_padded(tmp_path):
    """pycdlib pads a short read silently: the image would hold bytes never in the file."""
    from configdrive.formats import iso
    from configdrive.engines.mkisofs import close_all, read_source_tree
    source, at = _source_for_race(tmp_path)
    at.write_bytes(MINE * 1000)
    tree = read_source_tree(str(source))       # judged and sized here
    try:
        os.truncate(at, 100)                   # then cut short by someone else
        with pytest.raises(ConfigDriveError, match=f"{at}: {len(MINE) * 1000} bytes when opened, ended at byte 100"):
            iso.write(tree, io.BytesIO())
    finally:
        close_all(tree)
