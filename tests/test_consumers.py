"""Consumer lints (configdrive/documents/consumers.py): each is shown against the consumer it names.
glean is the real one from PyPI (scripts/peers.sh, .peers/glean) run on the extracted
drive; cloud-init is Debian's; for Afterburn and ironic-python-agent, which are not
installable here, the lint cites their source line."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from conftest import ROOT, cloud_init_read, configdrive, run

GLEAN_PYTHON = ROOT / ".peers" / "glean" / "bin" / "python"
MAC = "fa:16:3e:12:34:56"

# glean's own network code on a drive extracted under ROOT/mnt/config, with a fake /sys
# (MAC -> interface name) and the Debian writer, which returns the files instead of
# writing them: the seam between reading the drive and touching the system.
GLEAN_NETWORK = textwrap.dedent("""
    import argparse, json, sys
    from glean import cmd
    args = argparse.Namespace(root=sys.argv[1], distro="debian", no_dhcp_fallback=True,
                              skip_dns=True, interface=None, noop=True)
    interfaces = cmd.get_config_drive_interfaces(cmd.get_network_info(args))
    print(json.dumps(cmd.write_debian_interfaces(interfaces, json.loads(sys.argv[2]), args)))
""")


def dual_stack(ipv6_routes: bool) -> dict:
    """An IPv4 network with routes and an IPv6 network on the same link, the IPv6 one
    with or without its ``routes`` key."""
    ipv6 = {"id": "n6", "link": "tap0", "type": "ipv6", "ip_address": "2001:db8::10",
            "netmask": "ffff:ffff:ffff:ffff::", "network_id": "net6"}
    if ipv6_routes:
        ipv6["routes"] = []
    return {
        "links": [{"id": "tap0", "type": "phy", "ethernet_mac_address": MAC, "mtu": 1500}],
        "networks": [
            {"id": "n4", "link": "tap0", "type": "ipv4", "ip_address": "192.0.2.10", "netmask": "255.255.255.0",
             "network_id": "net4", "routes": [
                 {"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "192.0.2.1"},
                 {"network": "10.9.0.0", "netmask": "255.255.0.0", "gateway": "192.0.2.254"}]},
            ipv6,
        ],
        "services": [],
    }


def glean_network(drive: Path, tmp_path: Path):
    if not GLEAN_PYTHON.exists():
        pytest.skip("glean's peer venv is missing (bash scripts/peers.sh makes it)")
    root = tmp_path / f"root-{drive.stem}"
    configdrive("extract", drive, root / "mnt" / "config")
    return run(GLEAN_PYTHON, "-c", GLEAN_NETWORK, root, json.dumps({MAC: "eth0"}), check=False)


def build(tmp_path: Path, name: str, *args: str, network=None, check=True):
    out = tmp_path / name
    extra = []
    if network is not None:
        (tmp_path / f"{name}.network_data.json").write_text(json.dumps(network))
        extra = ["--network-data", str(tmp_path / f"{name}.network_data.json")]
    result = configdrive("build", "-o", out, "--hostname", "node-1", *extra, *args, check=check)
    return out, result


def test_glean_crashes_on_a_network_without_routes_and_the_lint_names_it(tmp_path):
    broken, built = build(tmp_path, "broken.iso", network=dual_stack(ipv6_routes=False))
    assert "warning: network_data: /networks/1/routes: glean: missing" in built.stderr.decode()
    crashed = glean_network(broken, tmp_path)
    assert crashed.returncode != 0 and b"Bad Netmask" in crashed.stderr

    lint = configdrive("validate", broken).stdout.decode()
    assert f"{broken}/openstack/latest/network_data.json: /networks/1/routes: glean: missing" in lint
    refused = configdrive("validate", "--strict", broken, check=False)
    assert refused.returncode == 1 and b"/networks/1/routes: glean" in refused.stderr
    strict = build(tmp_path, "strict.iso", "--strict", network=dual_stack(ipv6_routes=False), check=False)[1]
    assert strict.returncode == 1 and not (tmp_path / "strict.iso").exists()
    assert strict.stderr.decode().splitlines()[-1].startswith("configdrive: error: network_data: /networks/1/routes")

    fixed, built = build(tmp_path, "fixed.iso", "--strict", network=dual_stack(ipv6_routes=True))
    assert b"glean:" not in built.stderr
    ran = glean_network(fixed, tmp_path)
    assert ran.returncode == 0, ran.stderr.decode()
    eth0 = json.loads(ran.stdout)["/etc/network/interfaces.d/eth0.cfg"]
    assert "iface eth0 inet6 static" in eth0 and "address 2001:db8::10" in eth0
    assert eth0.count("gateway") == 1     # the IPv4 gateway only, in the inet stanza


def test_hostname_and_name_disagreeing(tmp_path):
    """cloud-init takes hostname, glean takes name (glean/cmd.py
    set_hostname_from_config_drive reads meta_data['name'])."""
    drive, built = build(tmp_path, "names.iso", "--name", "web")
    assert "meta_data: /name: glean: glean names the host \"web\"" in built.stderr.decode()
    configdrive("extract", drive, tmp_path / "x")
    meta = json.loads((tmp_path / "x/openstack/latest/meta_data.json").read_text())
    assert cloud_init_read(tmp_path / "x")["metadata"]["local-hostname"] == meta["hostname"] == "node-1"
    assert meta["name"] == "web"
    assert build(tmp_path, "strict.iso", "--name", "web", "--strict", check=False)[1].returncode == 1
    # the first label of the hostname is what nova writes as name: no lint
    assert b"glean:" not in build(tmp_path, "same.iso", "--hostname", "node-1.example.org", "--strict")[1].stderr


def test_afterburn_lints(tmp_path):
    """Afterburn (src/providers/openstack/configdrive.rs) mounts by-label/config-2 as
    iso9660 and reads OPENSTACK_INSTANCE_ID from ec2/latest/meta-data.json."""
    drive, built = build(tmp_path, "no-ec2.iso", "--no-ec2")
    assert "ec2/latest/meta-data.json: /: Afterburn: missing" in built.stderr.decode()
    assert "ec2/latest/meta-data.json: /: Afterburn: missing" in configdrive("validate", drive).stdout.decode()
    assert build(tmp_path, "strict.iso", "--no-ec2", "--strict", check=False)[1].returncode == 1

    configdrive("extract", build(tmp_path, "ec2.iso")[0], tmp_path / "x")
    assert configdrive("validate", "--strict", tmp_path / "x").returncode == 0
    meta = tmp_path / "x/ec2/latest/meta-data.json"
    meta.write_text(json.dumps({k: v for k, v in json.loads(meta.read_text()).items() if k != "instance-id"}))
    assert "meta-data.json: /instance-id: Afterburn: missing" in configdrive("validate", tmp_path / "x").stdout.decode()

    vfat = build(tmp_path, "drive.img", "--format", "vfat")[0]
    assert "Afterburn: a vfat drive" in configdrive("validate", vfat).stdout.decode()
    upper = build(tmp_path, "upper.iso", "--label", "CONFIG-2")[0]
    assert "Afterburn: volume label 'CONFIG-2'" in configdrive("validate", upper).stdout.decode()


def test_ipa_size_cap(tmp_path):
    """ironic_python_agent/partition_utils.py: MAX_CONFIG_DRIVE_SIZE_MB = 64."""
    big = build(tmp_path, "big.img", "--format", "vfat", "--size", "65M")[0]
    lint = configdrive("validate", big).stdout.decode()
    assert f"{big}: /: ironic-python-agent: {65 << 20} bytes" in lint
    fits = build(tmp_path, "fits.img", "--format", "vfat", "--size", "64M")[0]
    assert "ironic-python-agent" not in configdrive("validate", fits).stdout.decode()
