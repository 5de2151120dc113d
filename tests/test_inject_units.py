"""The injector's pure parts: guest path parsing, the SHA-512 crypt hash (checked by
glibc through perl), the interfaces file (parsed by cloud-init's own ENI parser), the
handler registry with a third-party entry point."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

from configdrive.errors import ConfigDriveError
from configdrive.inject import eni
from configdrive.inject.guestpath import GuestPathError, parse
from configdrive.inject.handler import DEFAULT_ORDER, parse_order
from configdrive.inject.password import sha512_crypt
from conftest import SYSTEM_PYTHON, need_tool, out, run


@pytest.mark.parametrize("text, names", [
    ("/root/.ssh/authorized_keys", ("root", ".ssh", "authorized_keys")),
    ("etc//./motd", ("etc", "motd")),
    ("meta.js", ("meta.js",)),
])
def test_guest_paths(text, names):
    assert parse(text) == names


@pytest.mark.parametrize("text", ["../etc/passwd", "/a/../../b", "a/..", "", "/", "a\0b"])
def test_guest_paths_refused(text):
    with pytest.raises(GuestPathError):
        parse(text)


@pytest.mark.parametrize("password", ["secret", "pässwörd with spaces", "$6$tricky:colon"])
def test_sha512_crypt_is_what_glibc_and_openssl_compute(password):
    need_tool("openssl", "perl")
    hashed = sha512_crypt(password)
    assert hashed.startswith("$6$") and ":" not in hashed
    assert run("perl", "-e", "print crypt($ARGV[0], $ARGV[1])", password, hashed).stdout.decode() == hashed
    salt = hashed.split("$")[2]
    pinned = out("openssl", "passwd", "-6", "-salt", salt, password).strip()
    assert sha512_crypt(password, salt) == pinned == hashed
    assert sha512_crypt(password) != hashed          # a fresh salt every time


def test_password_with_newline_refused():
    with pytest.raises(ConfigDriveError, match="line break"):
        sha512_crypt("a\nb")


NETWORK = {
    "links": [
        {"id": "tap1", "type": "phy", "ethernet_mac_address": "52:54:00:00:00:01", "mtu": 9000},
        {"id": "tap2", "type": "phy", "ethernet_mac_address": "52:54:00:00:00:02"},
        {"id": "tap3", "type": "phy", "ethernet_mac_address": "52:54:00:00:00:03"},
        {"id": "b0", "type": "bond", "bond_links": ["tap2", "tap3"], "bond_mode": "802.3ad"},
        {"id": "v0", "type": "vlan", "vlan_link": "b0", "vlan_id": 101},
    ],
    "networks": [
        {"id": "n0", "link": "tap1", "type": "ipv4", "ip_address": "10.0.0.5", "netmask": "255.255.255.0",
         "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.0.0.1"},
                    {"network": "192.168.0.0", "netmask": "255.255.0.0", "gateway": "10.0.0.254"}]},
        {"id": "n1", "link": "tap1", "type": "ipv6", "ip_address": "2001:db8::5",
         "netmask": "ffff:ffff:ffff:ffff::", "routes": [{"network": "::", "netmask": "::", "gateway": "2001:db8::1"}]},
        {"id": "n2", "link": "v0", "type": "ipv4_dhcp"},
        {"id": "n3", "link": "b0", "type": "ipv6_slaac"},
    ],
    "services": [{"type": "dns", "address": "8.8.8.8"}],
}


def cloud_init_eni(text: str) -> dict:
    """cloud-init's own ENI parser (Debian's package, system interpreter)."""
    if not Path(SYSTEM_PYTHON).exists():
        pytest.skip("system python3 with cloud-init is not installed")
    code = ("import json, sys\nfrom cloudinit.net.eni import _parse_deb_config_data as parse\n"
            "d = {}\nparse(d, sys.stdin.read(), None, None)\nprint(json.dumps(d))")
    proc = run(SYSTEM_PYTHON, "-c", code, input=text.encode(), check=False)
    if b"No module named 'cloudinit'" in proc.stderr:
        pytest.skip("Debian's cloud-init package is not installed")
    assert proc.returncode == 0, proc.stderr.decode()
    return json.loads(proc.stdout)


def test_interfaces_as_cloud_init_reads_them():
    ifaces = cloud_init_eni(eni.render(NETWORK))
    assert ifaces["lo"]["method"] == "loopback"
    eth0 = ifaces["eth0"]
    assert (eth0["method"], eth0["address"], eth0["netmask"], eth0["gateway"]) == \
        ("static", "10.0.0.5", "255.255.255.0", "10.0.0.1")
    assert eth0["mtu"] == "9000" and eth0["dns"]["nameservers"] == ["8.8.8.8"]
    assert eth0["post-up"] == ["ip route add 192.168.0.0/16 via 10.0.0.254 || true"]
    v6 = ifaces["eth0:1"]
    assert (v6["family"], v6["address"], v6["gateway"]) == ("inet6", "2001:db8::5/64", "2001:db8::1")
    assert ifaces["eth1"]["bond"] == {"master": "bond0"} == ifaces["eth2"]["bond"]
    assert ifaces["bond0"]["method"] == "auto" and ifaces["bond0"]["bond"]["mode"] == "802.3ad"
    assert ifaces["bond0.101"]["method"] == "dhcp"
    assert all(i["auto"] for i in ifaces.values())


def test_unusable_network_data_is_one_line():
    with pytest.raises(ConfigDriveError, match="network_data: cannot render"):
        eni.render({"links": [{"id": "a"}], "networks": [{"link": "a", "type": "ipv4", "ip_address": "nope"}]})


def test_handler_order():
    assert parse_order(None) == list(DEFAULT_ORDER) == ["debugfs", "loop", "nbd", "guestfs"]
    assert parse_order("loop, guestfs") == ["loop", "guestfs"]
    with pytest.raises(ConfigDriveError, match="unknown handler 'floppy'"):
        parse_order("loop,floppy")


def test_third_party_handler_from_entry_point(tmp_path):
    """A package that declares a handler in the entry-point group is usable by name; this
    one serves a directory holding an unpacked guest tree."""
    site = tmp_path / "site"
    dist = site / "dirhandler-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: dirhandler\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[configdrive.inject.handlers]\ndirectory = dirhandler:DirHandler\n")
    (site / "dirhandler.py").write_text(textwrap.dedent("""
        import os
        from configdrive.inject import Handler
        from configdrive.inject.hostroot import HostDirRoot

        class DirHandler(Handler):
            name = "directory"
            def unusable(self, target):
                return None if os.path.isdir(target.path + ".d") else "no unpacked tree"
            def attach(self, target):
                return HostDirRoot(target.path + ".d")
    """))
    guest = tmp_path / "guest.img.d"
    (guest / "etc").mkdir(parents=True)
    (tmp_path / "guest.img").write_bytes(b"\0" * 512)
    (tmp_path / "motd").write_text("hi\n")
    env = dict(os.environ, PYTHONPATH=str(site))
    exe = Path(sys.executable).with_name("configdrive")
    result = json.loads(out(exe, "inject", tmp_path / "guest.img", "--handlers", "directory",
                            "--file", f"/etc/motd={tmp_path / 'motd'}", "--json", env=env))
    assert result["handler"] == "directory" and result["injected"] == ["files"]
    assert (guest / "etc/motd").read_text() == "hi\n"
    assert oct((guest / "etc/motd").stat().st_mode & 0o777) == oct(0o644)


# -- the guest roots themselves refuse links, whatever a step checks first -----------

def _roots(tmp_path):
    """The same planted tree as a host directory and as an ext4 image for debugfs."""
    from configdrive.inject.debugfs import DebugfsRoot
    from configdrive.inject.hostroot import HostDirRoot
    from inject_images import ext4_image
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret").write_text("host\n")
    tree = tmp_path / "tree"
    (tree / "root").mkdir(parents=True)
    (tree / "root/.ssh").symlink_to(host)
    (tree / "etc").mkdir()
    (tree / "etc/motd").symlink_to(host / "secret")
    (tree / "up").symlink_to("../../../../../../../../" + str(host).lstrip("/"))
    yield "hostdir", HostDirRoot(str(tree)), host
    need_tool("mkfs.ext4", "debugfs")
    img = ext4_image(tmp_path / "planted.img", tree)
    yield "debugfs", DebugfsRoot(str(img)), host


@pytest.mark.parametrize("op", ["write", "read", "mkdir", "set_attrs", "lstat", "append"])
def test_roots_never_follow_a_link(tmp_path, op):
    for kind, root, host in _roots(tmp_path):
        for path in [("root", ".ssh", "authorized_keys"), ("up", "new"), ("etc", "motd")]:
            if op == "lstat" and path == ("etc", "motd"):
                assert root.lstat(path).kind == "symlink"      # reported, not followed
                continue
            call = {
                "write": lambda: root.write(path, b"x", 0o644, 0, 0),
                "read": lambda: root.read(path),
                "mkdir": lambda: root.mkdir(path, 0o755, 0, 0),
                "set_attrs": lambda: root.set_attrs(path, 0o777, 0, 0),
                "lstat": lambda: root.lstat(path),
                "append": lambda: root.append(path, b"x", 0o644, 0, 0),
            }[op]
            with pytest.raises(GuestPathError, match="symbolic link"):
                call()
        assert sorted(p.name for p in host.iterdir()) == ["secret"], kind
        assert (host / "secret").read_text() == "host\n"
        assert oct((host / "secret").stat().st_mode & 0o777) == oct(0o644)
