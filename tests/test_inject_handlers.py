"""Injection through the debugfs handler (no root, no mount) and the loop handler (a real
mount), read back with debugfs cat/stat and e2fsck -fn; perl's crypt() (glibc) checks the
password hash."""

from __future__ import annotations

import json
import os

import pytest

from configdrive.model.content import Content, InjectedFile, add_ssh_key
from configdrive.errors import ConfigDriveError
from configdrive.inject import InjectionError, inject
from conftest import is_root, need_tool, run
from inject_images import (ROOT_PART_OFFSET, attached_loops, debugfs_cat, debugfs_stat, e2fsck_clean,
                           ext4_image, gpt_image, guest_tree, mounts_released, record_loop_mounts)

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJexPmzEjHe8yieS6WMeJA+OKbixdYxYJCI0FCAynhdP alice@example"
PASSWORD = "correct horse battery staple"
NETWORK = {
    "links": [{"id": "tap0", "type": "phy", "ethernet_mac_address": "52:54:00:12:34:56"}],
    "networks": [{"id": "n0", "link": "tap0", "type": "ipv4", "ip_address": "10.0.2.15",
                  "netmask": "255.255.255.0",
                  "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.0.2.2"}]}],
    "services": [{"type": "dns", "address": "10.0.2.3"}],
}
META = {"role": "db", "tier": "gold"}


def full_content() -> Content:
    content = Content(meta_data={"uuid": "83679162-1378-4288-a2d4-70e13ec132aa", "meta": META,
                                 "admin_pass": PASSWORD},
                      network_data=NETWORK,
                      files=[InjectedFile("/etc/motd", b"welcome\n"),
                             InjectedFile("opt/app/conf/app.ini", b"[app]\nx=1\n")])
    add_ssh_key(content.meta_data, "alice", KEY)
    return content


@pytest.fixture(params=["debugfs", "loop"])
def handler(request):
    need_tool("debugfs", "e2fsck")
    if request.param == "loop" and not is_root():
        pytest.skip("the loop handler needs root")
    return request.param


@pytest.fixture
def made_mounts(monkeypatch):
    """The mount points the loop handler makes during the test."""
    return record_loop_mounts(monkeypatch)


def check_loops_and_mounts_released(img, handler, made):
    # The loop handler mounted the guest once (so the check below judges a real mount);
    # debugfs never mounts.
    assert len(made) == (1 if handler == "loop" else 0), made
    assert attached_loops(img) == []
    assert mounts_released(made), made


def assert_injected(img, offset=0, selinux=False):
    ssh = debugfs_stat(img, "/root/.ssh", offset)
    assert ssh == {"type": "directory", "mode": 0o700, "uid": 0, "gid": 0}
    assert debugfs_stat(img, "/root/.ssh/authorized_keys", offset) == \
        {"type": "regular", "mode": 0o600, "uid": 0, "gid": 0}
    keys = debugfs_cat(img, "/root/.ssh/authorized_keys", offset).decode().splitlines()
    assert KEY in keys
    assert keys[keys.index(KEY) - 1].startswith("# ")          # the comment line before it

    interfaces = debugfs_cat(img, "/etc/network/interfaces", offset).decode()
    assert "iface eth0 inet static" in interfaces and "address 10.0.2.15" in interfaces
    assert "gateway 10.0.2.2" in interfaces

    assert json.loads(debugfs_cat(img, "/meta.js", offset)) == META

    passwd = debugfs_cat(img, "/etc/passwd", offset)
    assert passwd == b"root:x:0:0:root:/root:/bin/bash\nbob:x:1000:1000:Bob:/home/bob:/bin/sh\n"
    shadow = debugfs_cat(img, "/etc/shadow", offset).decode().splitlines()
    root_fields = shadow[0].split(":")
    assert root_fields[0] == "root" and root_fields[1].startswith("$6$")
    assert root_fields[2:] == ["19000", "0", "99999", "7", "", "", ""]
    assert shadow[1] == "bob:!:19000:0:99999:7:::"
    # glibc's crypt (through perl) must accept the hash for the password.
    check = run("perl", "-e", "print crypt($ARGV[0], $ARGV[1])", PASSWORD, root_fields[1]).stdout.decode()
    assert check == root_fields[1]
    shadow_stat = debugfs_stat(img, "/etc/shadow", offset)
    assert shadow_stat["mode"] == 0o640
    if is_root():
        assert shadow_stat["gid"] == 42

    assert debugfs_cat(img, "/etc/motd", offset) == b"welcome\n"
    assert debugfs_stat(img, "/etc/motd", offset) == {"type": "regular", "mode": 0o644, "uid": 0, "gid": 0}
    assert debugfs_cat(img, "/opt/app/conf/app.ini", offset) == b"[app]\nx=1\n"
    for d in ("/opt", "/opt/app", "/opt/app/conf"):
        assert debugfs_stat(img, d, offset) == {"type": "directory", "mode": 0o744, "uid": 0, "gid": 0}

    if selinux:
        rc = debugfs_cat(img, "/etc/rc.local", offset).decode()
        assert rc.startswith("#!/bin/sh\n") and "restorecon -RF /root/.ssh" in rc
        assert debugfs_stat(img, "/etc/rc.local", offset)["mode"] == 0o700
    else:
        assert debugfs_stat(img, "/etc/rc.local", offset) is None
    e2fsck_clean(img, offset)


def test_raw_image(tmp_path, handler, made_mounts, caplog):
    img = ext4_image(tmp_path / "guest.img", guest_tree(tmp_path))
    caplog.set_level("INFO", logger="configdrive.inject")
    result = inject(str(img), full_content(), handlers=[handler])
    assert result["handler"] == handler and result["partition"] is None
    assert result["injected"] == ["key", "net", "metadata", "admin_password", "files"]
    assert result["warnings"] == []
    assert_injected(img)
    logged = [r.getMessage() for r in caplog.records]
    for what in ("key", "net", "metadata", "admin_password", "files"):
        assert f"Injecting {what} into image {img}" in logged
    check_loops_and_mounts_released(img, handler, made_mounts)


def test_the_image_checked_is_the_image_written(tmp_path, handler, made_mounts, monkeypatch):
    """The image is named once (configdrive/inject/target.py). Another ext4 image renamed
    over the name right after the open, as anyone who may write the directory can do,
    gets nothing: the file opened, and checked, gets the content. Before, the handlers
    checked and then wrote whatever the name named by then (a symbolic link to a mounted
    disk included)."""
    import configdrive.inject.target as target_module
    named = ext4_image(tmp_path / "guest.img", guest_tree(tmp_path))
    other_tree = tmp_path / "other"
    other_tree.mkdir()
    other = ext4_image(tmp_path / "other.img", guest_tree(other_tree))
    kept = tmp_path / "opened.img"
    os.link(named, kept)                 # the file opened, still reachable after the swap
    real_open = target_module.Target.open.__func__

    def swapped_after_open(cls, path, partition="auto"):
        target = real_open(cls, path, partition)
        os.replace(other, path)          # the name now names the other image
        return target
    monkeypatch.setattr(target_module.Target, "open", classmethod(swapped_after_open))
    result = inject(str(named), full_content(), handlers=[handler])
    assert result["handler"] == handler
    assert_injected(kept)
    assert debugfs_stat(named, "/root/.ssh") is None          # the other image: untouched
    assert debugfs_stat(named, "/etc/motd") is None
    e2fsck_clean(named)
    check_loops_and_mounts_released(kept, handler, made_mounts)


def test_gpt_image_auto_partition_selinux(tmp_path, handler, made_mounts):
    fs = ext4_image(tmp_path / "root.ext4", guest_tree(tmp_path, selinux=True))
    disk = gpt_image(tmp_path / "disk.img", fs)
    result = inject(str(disk), full_content(), handlers=[handler], partition="auto")
    assert result["partition"] == 2 and result["filesystem"] == "ext4"
    assert_injected(disk, ROOT_PART_OFFSET, selinux=True)
    # The partition table is untouched (sgdisk's own check of both GPT headers).
    need_tool("sgdisk")
    assert "No problems found" in run("sgdisk", "-v", disk).stdout.decode()
    check_loops_and_mounts_released(disk, handler, made_mounts)


def test_keys_append_and_do_not_repeat(tmp_path, handler):
    tree = guest_tree(tmp_path)
    (tree / "root/.ssh").mkdir(mode=0o755)
    (tree / "root/.ssh/authorized_keys").write_text("ssh-rsa AAAAB3Nza old@host\n")
    img = ext4_image(tmp_path / "guest.img", tree)
    content = Content()
    add_ssh_key(content.meta_data, "alice", KEY)
    inject(str(img), content, handlers=[handler])
    inject(str(img), content, handlers=[handler])
    keys = debugfs_cat(img, "/root/.ssh/authorized_keys").decode().splitlines()
    assert keys[0] == "ssh-rsa AAAAB3Nza old@host"
    assert keys.count(KEY) == 1
    assert debugfs_stat(img, "/root/.ssh")["mode"] == 0o700    # sshd's StrictModes
    e2fsck_clean(img)


def test_missing_root_user_warns_and_keeps_shadow(tmp_path, handler):
    tree = guest_tree(tmp_path)
    (tree / "etc/passwd").write_text("bob:x:1000:1000::/home/bob:/bin/sh\n")
    img = ext4_image(tmp_path / "guest.img", tree)
    before = (tree / "etc/shadow").read_bytes()
    result = inject(str(img), Content(meta_data={"admin_pass": "x"}), handlers=[handler])
    assert result["injected"] == []
    assert "no user root" in result["warnings"][0]
    assert debugfs_cat(img, "/etc/shadow") == before


# -- escape attempts: nothing outside the guest is written ---------------------------

def _host_dir(tmp_path):
    host = tmp_path / "host"
    host.mkdir()
    return host


@pytest.mark.parametrize("style", ["absolute", "relative"])
def test_planted_ssh_symlink_is_refused(tmp_path, handler, made_mounts, style):
    host = _host_dir(tmp_path)
    target = str(host) if style == "absolute" else "../" * 12 + str(host).lstrip("/")
    img = ext4_image(tmp_path / "guest.img", guest_tree(tmp_path, links={"root/.ssh": target}))
    content = Content(meta_data={"meta": META})
    add_ssh_key(content.meta_data, "alice", KEY)
    result = inject(str(img), content, handlers=[handler])
    assert result["injected"] == ["metadata"]
    assert "root/.ssh: is a symbolic link" in result["warnings"][0]
    assert list(host.iterdir()) == []
    assert debugfs_stat(img, "/root/.ssh")["type"] == "symlink"
    check_loops_and_mounts_released(img, handler, made_mounts)


def test_file_through_symlinked_directory_fails(tmp_path, handler, made_mounts):
    host = _host_dir(tmp_path)
    img = ext4_image(tmp_path / "guest.img", guest_tree(tmp_path, links={"etc/cron.d": str(host)}))
    content = Content(files=[InjectedFile("/etc/cron.d/evil", b"* * * * * root sh\n")])
    with pytest.raises(InjectionError, match="etc/cron.d: is a symbolic link"):
        inject(str(img), content, handlers=[handler])
    assert list(host.iterdir()) == []
    check_loops_and_mounts_released(img, handler, made_mounts)


def test_file_onto_symlink_fails(tmp_path, handler):
    host = _host_dir(tmp_path)
    victim = host / "passwd"
    victim.write_text("host's own\n")
    img = ext4_image(tmp_path / "guest.img", guest_tree(tmp_path, links={"etc/motd": str(victim)}))
    with pytest.raises(InjectionError, match="etc/motd: is a symbolic link"):
        inject(str(img), Content(files=[InjectedFile("etc/motd", b"pwned\n")]), handlers=[handler])
    assert victim.read_text() == "host's own\n"
    assert sorted(p.name for p in host.iterdir()) == ["passwd"]


def test_dotdot_in_file_path_refused_before_touching_image(tmp_path, handler):
    img = ext4_image(tmp_path / "guest.img", guest_tree(tmp_path))
    before = img.read_bytes()
    content = Content(files=[InjectedFile("etc/ok", b"1"), InjectedFile("../../../tmp/evil", b"x")])
    with pytest.raises(ConfigDriveError, match=r"\.\./\.\./\.\./tmp/evil: '\.\.' is not allowed"):
        inject(str(img), content, handlers=[handler])
    assert img.read_bytes() == before
    assert not os.path.exists("/tmp/evil")
