"""``configdrive inject`` as users run it: the rootless default path, the one error that
lists every handler's reason, and the reasons for copy-on-write images."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import configdrive, is_root, loop_device, need_tool, run
from inject_images import (ROOT_PART_OFFSET, debugfs_cat, debugfs_stat, e2fsck_clean, ext4_image, gpt_image,
                           guest_tree, qcow2_copy)

NOBODY = 65534


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def nbd_or_guestfs_here() -> bool:
    nbd = is_root() and bool(list(Path("/sys/block").glob("nbd*")))
    return nbd or shutil.which("guestmount") is not None


def test_example_content_with_default_handlers(tmp_path):
    need_tool("debugfs")
    disk = gpt_image(tmp_path / "disk.img", ext4_image(tmp_path / "root.ext4", guest_tree(tmp_path)))
    proc = configdrive("inject", disk, "--example", "--admin-pass", "s3cret", "--json")
    result = json.loads(proc.stdout)
    assert result["handler"] == "debugfs"          # the safest, first in the default order
    assert result["partition"] == 2
    assert result["injected"] == ["key", "net", "metadata", "admin_password"]
    for what in result["injected"]:
        assert f"Injecting {what} into image {disk}" in proc.stderr.decode()
    example_key = (Path(__file__).parent.parent / "configdrive/examples/example.pub").read_text().split()[1]
    assert example_key in debugfs_cat(disk, "/root/.ssh/authorized_keys", ROOT_PART_OFFSET).decode()
    e2fsck_clean(disk, ROOT_PART_OFFSET)


@pytest.fixture
def public_tmp():
    """A directory an unprivileged user can reach (pytest's tmp_path sits under a 0700
    directory of root's)."""
    path = Path(tempfile.mkdtemp(prefix="configdrive-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def test_debugfs_needs_no_root(public_tmp):
    if not is_root():
        pytest.skip("needs root to switch to an unprivileged user")
    need_tool("setpriv", "debugfs")
    tmp_path = public_tmp
    img = ext4_image(tmp_path / "guest.img", guest_tree(tmp_path))
    os.chown(img, NOBODY, NOBODY)
    key = tmp_path / "k.pub"
    key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJexPmzEjHe8yieS6WMeJA+OKbixdYxYJCI0FCAynhdP bob@x\n")
    exe = Path(sys.executable).with_name("configdrive")
    drop = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--inh-caps=-all"]
    env = dict(os.environ, HOME="/tmp", TMPDIR="/tmp")
    proc = run(*drop, exe, "inject", img, "--ssh-key", key, "--json", env=env, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout)["handler"] == "debugfs"
    assert debugfs_stat(img, "/root/.ssh/authorized_keys") == {"type": "regular", "mode": 0o600, "uid": 0, "gid": 0}
    # The same user gets a reason, not a crash, from the loop handler.
    proc = run(*drop, exe, "inject", img, "--ssh-key", key, "--handlers", "loop", env=env, check=False)
    assert proc.returncode == 1
    assert "loop: needs root" in proc.stderr.decode()


def test_qcow2_reasons_listed_and_image_untouched(tmp_path):
    img = qcow2_copy(ext4_image(tmp_path / "guest.img", guest_tree(tmp_path)))
    if nbd_or_guestfs_here():
        pytest.skip("this machine has nbd or libguestfs, so a qcow2 image can be served")
    before = sha256(img)
    proc = configdrive("inject", img, "--example", check=False)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.decode().splitlines() if line.startswith("configdrive: error:")]
    assert len(errors) == 1
    line = errors[0]
    assert "debugfs: copy-on-write image (qcow2)" in line
    assert "loop: copy-on-write image (qcow2)" in line
    assert ("nbd: no nbd kernel module" in line) or ("nbd: needs root" in line)
    assert "guestfs: libguestfs is not installed" in line
    assert sha256(img) == before


@pytest.mark.parametrize("kind", ["backing-file", "vmdk"])
def test_images_naming_other_files_are_refused_before_any_handler(tmp_path, kind):
    """A qcow2 with a backing file (here a host file), or a container whose header we do
    not read (VMDK: its extents may name host files), is refused in one line before any
    handler is asked, whatever this machine has: qemu-nbd or libguestfs would read them."""
    need_tool("qemu-img")
    raw = ext4_image(tmp_path / "guest.img", guest_tree(tmp_path))
    img = tmp_path / f"guest.{kind}"
    if kind == "backing-file":
        run("qemu-img", "create", "-f", "qcow2", "-F", "raw", "-b", raw, img)
        named = "qcow2 names a backing file"
    else:
        run("qemu-img", "convert", "-f", "raw", "-O", "vmdk", raw, img)
        named = "vmdk images are refused"
    before = sha256(img)
    proc = configdrive("inject", img, "--example", check=False)
    lines = proc.stderr.decode().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and named in lines[0], lines
    assert "debugfs" not in lines[0] and sha256(img) == before


def test_a_qcow2_on_a_block_device_is_checked_by_its_size(tmp_path):
    """A qcow2 held by a block device (st_size 0) passes the same checks as the file: the
    line lists the handlers' reasons, not a header "truncated" at 0 bytes."""
    img = qcow2_copy(ext4_image(tmp_path / "guest.img", guest_tree(tmp_path)))
    if nbd_or_guestfs_here():
        pytest.skip("this machine has nbd or libguestfs, so a qcow2 image can be served")
    with loop_device(img) as dev:
        proc = configdrive("inject", dev, "--example", check=False)
    line = proc.stderr.decode().strip()
    assert proc.returncode == 1 and "truncated" not in line, line
    assert "debugfs: copy-on-write image (qcow2)" in line


def test_qcow2_served_where_nbd_or_guestfs_exist(tmp_path):
    raw = ext4_image(tmp_path / "guest.img", guest_tree(tmp_path))
    img = qcow2_copy(raw)
    if not nbd_or_guestfs_here():
        pytest.skip("neither the nbd module nor libguestfs is available here")
    result = json.loads(configdrive("inject", img, "--example", "--json").stdout)
    assert result["handler"] in ("nbd", "guestfs")
    back = tmp_path / "back.raw"
    run("qemu-img", "convert", "-O", "raw", img, back)
    assert b"example@configdrive" in debugfs_cat(back, "/root/.ssh/authorized_keys")
    e2fsck_clean(back)


def test_partition_without_filesystem_is_a_reason(tmp_path):
    disk = gpt_image(tmp_path / "disk.img", ext4_image(tmp_path / "root.ext4", guest_tree(tmp_path)))
    before = sha256(disk)
    proc = configdrive("inject", disk, "--example", "--partition", "1", "--handlers", "debugfs", check=False)
    assert proc.returncode == 1
    assert "debugfs: partition 1 holds no filesystem blkid knows; debugfs edits ext2/3/4 only" in proc.stderr.decode()
    proc = configdrive("inject", disk, "--example", "--partition", "7", "--handlers", "debugfs", check=False)
    assert "has no partition 7 (it has 1, 2)" in proc.stderr.decode()
    assert sha256(disk) == before


def test_image_in_use_is_refused_by_debugfs(tmp_path):
    from conftest import loop_device
    img = ext4_image(tmp_path / "guest.img", guest_tree(tmp_path))
    with loop_device(img) as dev:
        proc = configdrive("inject", img, "--example", "--handlers", "debugfs", check=False)
    assert proc.returncode == 1
    assert f"image is in use (attached to {dev})" in proc.stderr.decode()
