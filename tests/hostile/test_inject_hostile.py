"""Hostile guest paths and hostile guest images for the legacy injector.

A guest path must reach debugfs as a path, never as its syntax: debugfs reads an argument
``<12>`` as inode 12 (debugfs/util.c string_to_inode), splits words at blanks outside
double quotes (lib/ss/parse.c), and reads options from a leading '-'. Each name below is
injected with ``configdrive inject --handlers debugfs`` into an ext4 image made by
``mkfs.ext4 -d``; debugfs itself (``stat`` on the exact name, ``ls``) and ``e2fsck -fn``
then show that exactly that path was written and that inode 12 and the root directory
kept their type, mode and owner.

The guest image is hostile too: names that would forge debugfs's listing, and sparse
files of 8 GiB where the steps read (authorized_keys, etc/shadow), which must not be read
whole under any handler.
"""

from __future__ import annotations

import json
import os
import re

import pytest

from conftest import is_root, need_tool, run
from harness import RSS_GUARD, refused, run_measured
from inject_images import e2fsck_clean, ext4_image, guest_tree

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJexPmzEjHe8yieS6WMeJA+OKbixdYxYJCI0FCAynhdP alice@example"
GiB = 1 << 30

# Names that mean something to debugfs: inode numbers in every base strtoul reads, blanks,
# quotes, option letters, comments, the ss shell escape, and plain oddities.
SYNTAX_NAMES = ["<12>", "<2>", "<0xc>", "<014>", "<7>", "<1>x", "two words", "tab\there", ' "quoted" ',
                '"', 'a""b', "-rf", "--help", "-l", "#comment", "!touch x", "back\\slash", "it's",
                "semi;colon", "<12> <2>", "\u00e9t\u00e9", "\x01ctl\x1b[m"]


def _debugfs_arg(text: str) -> str:
    """How a user quotes a word for debugfs by hand (lib/ss/parse.c: "" inside quotes)."""
    return '"' + text.replace('"', '""') + '"'


def debugfs(img, request: str) -> str:
    return run("debugfs", "-R", request, img).stdout.decode("utf-8", "surrogateescape")


def inode_identity(img, ino: int) -> tuple:
    """Type, mode, owner and link count of an inode, as debugfs's stat prints them."""
    text = debugfs(img, f"stat <{ino}>")
    kind = re.search(r"Type: (\w+)\s+Mode:\s+(\d+)", text)
    owner = re.search(r"User:\s+(\d+)\s+Group:\s+(\d+)", text)
    links = re.search(r"Links: (\d+)", text)
    return kind.groups(), owner.groups(), links.group(1)


@pytest.fixture
def guest(tmp_path):
    need_tool("mkfs.ext4", "debugfs", "e2fsck")
    img = ext4_image(tmp_path / "guest.img", guest_tree(tmp_path))
    assert debugfs(img, "stat <12>")          # mkfs.ext4 -d put a real file or directory there
    return img


@pytest.mark.parametrize("name", SYNTAX_NAMES, ids=range(len(SYNTAX_NAMES)))
@pytest.mark.parametrize("where", ["etc/{}", "{}/inner", "srv/{}/{}"])
def test_guest_path_is_written_exactly_and_nothing_else(tmp_path, guest, name, where):
    local = tmp_path / "local"
    local.write_bytes(b"payload\n")
    guest_path = "/" + where.format(name, name)
    before = {ino: inode_identity(guest, ino) for ino in (2, 11, 12, 13)}
    listing_before = debugfs(guest, "ls -l /etc")

    outcome = run_measured("inject", guest, "--handlers", "debugfs", "--json", "--file", f"{guest_path}={local}")
    assert outcome.returncode == 0, outcome.stderr
    assert json.loads(outcome.stdout)["injected"] == ["files"]

    st = debugfs(guest, f"stat {_debugfs_arg(guest_path)}")
    assert re.search(r"Type: regular\s+Mode:\s+0644", st), st
    assert re.search(r"User:\s+0\s+Group:\s+0", st), st
    assert debugfs(guest, f"cat {_debugfs_arg(guest_path)}") == "payload\n"
    parent, leaf = guest_path.rsplit("/", 1)
    # ls -p prints names raw, one /ino/mode/uid/gid/name/size/ record a line (debugfs/ls.c)
    assert re.search(r"^/\d+/100644/0/0/" + re.escape(leaf) + "/8/$", debugfs(guest, f"ls -p {_debugfs_arg(parent)}"),
                     re.MULTILINE)
    for ino, identity in before.items():
        if ino == 12 and where.startswith("etc/"):
            # inode 12 may be /etc itself, which gained an entry: same type, mode, owner
            assert identity[:2] == inode_identity(guest, ino)[:2]
        else:
            assert inode_identity(guest, ino)[:2] == identity[:2], f"inode {ino} changed"
    if not where.startswith("etc/"):
        assert debugfs(guest, "ls -l /etc") == listing_before
    e2fsck_clean(guest)


@pytest.mark.parametrize("name", ["new\nline", "cr\rx", "x\n<12>", "\n", "end\r"], ids=range(5))
@pytest.mark.parametrize("handlers", ["debugfs"])
def test_names_debugfs_cannot_take_are_refused_untouched(tmp_path, guest, name, handlers):
    local = tmp_path / "local"
    local.write_bytes(b"payload\n")
    refused("inject", guest, "--handlers", handlers, "--file", f"/etc/{name}={local}",
            watch=[guest], names="debugfs")


@pytest.mark.parametrize("length", [256, 300, 5000])
def test_names_longer_than_a_filesystem_holds_are_refused(tmp_path, guest, length):
    local = tmp_path / "local"
    local.write_bytes(b"x")
    name = "a" * length if length < 1000 else "/".join(["b" * 200] * (length // 200))
    refused("inject", guest, "--file", f"/etc/{name}={local}", watch=[guest], names="longer than")


@pytest.mark.parametrize("planted", ["a\nb", "x\n12\n040755", "\n\n", "tail\n"], ids=range(4))
def test_guest_names_cannot_forge_the_listing(tmp_path, planted):
    """A name with a newline in the guest directory we must look into: debugfs prints it
    as is, so its listing can no longer be trusted; the mandatory files step refuses."""
    need_tool("mkfs.ext4", "debugfs")
    tree = guest_tree(tmp_path)
    (tree / "root" / planted).write_bytes(b"planted\n")
    img = ext4_image(tmp_path / "guest.img", tree)
    local = tmp_path / "local"
    local.write_bytes(b"x")
    refused("inject", img, "--handlers", "debugfs", "--file", f"/root/new={local}",
            watch=[img], names="cannot list unambiguously")


# -- guest files that must not be read whole ------------------------------------------

SPARSE = 8 * GiB


def _sparse_guest(tmp_path, rel: str):
    need_tool("mkfs.ext4", "debugfs")
    tree = guest_tree(tmp_path)
    target = tree / rel
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    target.unlink(missing_ok=True)
    with open(target, "wb") as fp:
        fp.truncate(SPARSE)
    img = ext4_image(tmp_path / "guest.img", tree)
    assert f"Size: {SPARSE}" in debugfs(img, f"stat /{rel}")
    return img


@pytest.fixture(params=["debugfs", "loop"])
def reading_handler(request):
    if request.param == "loop" and not is_root():
        pytest.skip("the loop handler needs root (losetup, mount)")
    return request.param


@pytest.mark.parametrize("rel, step, options", [
    ("root/.ssh/authorized_keys", "key", ["--ssh-key", "KEYFILE"]),
    ("etc/shadow", "admin_password", ["--admin-pass-file", "PASSFILE"]),
    ("etc/passwd", "admin_password", ["--admin-pass-file", "PASSFILE"]),
])
def test_sparse_8_gib_guest_file_is_refused_not_read(tmp_path, reading_handler, rel, step, options):
    img = _sparse_guest(tmp_path, rel)
    keyfile, passfile = tmp_path / "k.pub", tmp_path / "pass"
    keyfile.write_text(KEY + "\n")
    passfile.write_text("s3cret\n")
    args = [str(keyfile) if o == "KEYFILE" else str(passfile) if o == "PASSFILE" else o for o in options]
    outcome = run_measured("inject", img, "--handlers", reading_handler, "--json", *args)
    # The step is one that warns (as nova's did); what matters is that the file was
    # refused by its size, in bounded memory, and left as it was.
    assert outcome.returncode == 0, outcome.stderr
    assert outcome.peak_rss < RSS_GUARD, f"peak RSS {outcome.peak_rss >> 20} MiB"
    result = json.loads(outcome.stdout)
    assert step not in result["injected"]
    warning = [w for w in result["warnings"] if f"injecting {step} failed" in w]
    assert warning and f"{rel}: {SPARSE} bytes" in warning[0], result["warnings"]
    assert all(line.isprintable() for line in outcome.stderr.splitlines())
    assert f"Size: {SPARSE}" in debugfs(img, f"stat /{rel}")
    e2fsck_clean(img)
