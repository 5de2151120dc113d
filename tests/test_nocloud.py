"""NoCloud seeds (configdrive/model/nocloud.py), read back by tools we did not write: blkid -p,
xorriso / mcopy for the files, cloud-init's own DataSourceNoCloud for what a guest sees,
cloud-localds for what users make today, and cloud-init's own network_data.json converter
for the network config we derive."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from conftest import SYSTEM_PYTHON, configdrive, need_tool, out, run, sample_content

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBmwX0xJ2 k1@x"
NETWORK_V1 = "version: 1\nconfig:\n  - type: physical\n    name: eth9\n    mac_address: '52:54:00:aa:bb:01'\n" \
             "    subnets:\n      - type: static\n        address: 198.51.100.7/24\n        gateway: 198.51.100.1\n"

# A network_data.json with what cloud-init's converter handles: static IPv4 and IPv6 with
# routes, DHCP, a bond of two links, a VLAN on a link, per-network and global DNS.
RICH_NETWORK = {
    "links": [
        {"id": "tap0", "type": "phy", "ethernet_mac_address": "52:54:00:AA:00:01", "mtu": 9000},
        {"id": "tap1", "type": "phy", "ethernet_mac_address": "52:54:00:aa:00:02", "mtu": None},
        {"id": "tap2", "type": "phy", "ethernet_mac_address": "52:54:00:aa:00:03"},
        {"id": "bond-a", "type": "bond", "bond_links": ["tap1", "tap2"], "bond_mode": "802.3ad",
         "bond_miimon": 100, "bond_xmit_hash_policy": "layer3+4", "ethernet_mac_address": "52:54:00:aa:00:02"},
        {"id": "vl", "type": "vlan", "vlan_link": "tap0", "vlan_id": 42, "vlan_mac_address": "52:54:00:aa:00:01"},
    ],
    "networks": [
        {"id": "n0", "link": "tap0", "type": "ipv4", "ip_address": "192.0.2.10", "netmask": "255.255.255.0",
         "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "192.0.2.1"},
                    {"network": "10.9.0.0", "netmask": "255.255.0.0", "gateway": "192.0.2.254"}],
         "services": [{"type": "dns", "address": "192.0.2.53"}]},
        {"id": "n1", "link": "tap0", "type": "ipv6", "ip_address": "2001:db8::10", "netmask": "ffff:ffff:ffff:ffff::",
         "routes": [{"network": "::", "netmask": "::", "gateway": "2001:db8::1"}]},
        {"id": "n2", "link": "bond-a", "type": "ipv4_dhcp"},
        {"id": "n3", "link": "vl", "type": "ipv4", "ip_address": "203.0.113.5", "netmask": "255.255.255.128",
         "routes": []},
    ],
    "services": [{"type": "dns", "address": "198.51.100.53"}],
}

# cloud-init's own NoCloud datasource on a seed directory: no device scan (fs_label None),
# no kernel command line; what a guest's cloud-init would then hold.
NOCLOUD_READER = textwrap.dedent("""
    import json, sys
    from unittest import mock
    from cloudinit import distros, helpers, util
    from cloudinit.sources.DataSourceNoCloud import DataSourceNoCloud
    paths = helpers.Paths({"cloud_dir": sys.argv[2]})
    sys_cfg = {"datasource": {"NoCloud": {"fs_label": None}}}
    ds = DataSourceNoCloud(sys_cfg, distros.fetch("debian")("debian", {}, paths), paths)
    ds.seed_dirs = [sys.argv[1]]
    with mock.patch.object(util, "get_cmdline", return_value=""):
        assert ds.get_data(), "cloud-init found no seed"
    print(json.dumps({
        "instance_id": ds.get_instance_id(),
        "hostname": ds.get_hostname().hostname,
        "keys": ds.get_public_ssh_keys(),
        "metadata": ds.metadata,
        "userdata": ds.get_userdata_raw().decode(),
        "vendordata": (ds.get_vendordata_raw() or b"").decode() or None,
        "network_config": ds.network_config,
    }, default=str))
""")


def nocloud_read(seed_dir: Path, tmp_path: Path) -> dict:
    if not Path(SYSTEM_PYTHON).exists():
        pytest.skip("system python3 with cloud-init is not installed")
    cloud_dir = tmp_path / f"cloud-{seed_dir.name}"
    cloud_dir.mkdir()
    return json.loads(out(SYSTEM_PYTHON, "-c", NOCLOUD_READER, seed_dir, cloud_dir))


def extract_with_foreign_tool(image: Path, dest: Path, fs: str) -> Path:
    """The seed's files as xorriso (ISO) or mcopy (vfat) extract them."""
    dest.mkdir()
    if fs == "iso":
        need_tool("xorriso")
        run("xorriso", "-osirrox", "on", "-indev", image, "-extract", "/", dest)
    else:
        need_tool("mcopy")
        run("mcopy", "-s", "-n", "-i", image, "::/", dest)
    for path in dest.iterdir():   # xorriso keeps the ISO's read-only modes
        path.chmod(0o644)
    return dest


def write_inputs(tmp_path: Path, content) -> dict[str, Path]:
    """The content as files a user hands to the command line."""
    files = {"meta": tmp_path / "meta_data.json", "user": tmp_path / "user-data",
             "net": tmp_path / "network_data.json", "vendor": tmp_path / "vendor_data.json",
             "key": tmp_path / "k1.pub"}
    files["meta"].write_text(json.dumps(content.meta_data))
    files["user"].write_bytes(content.user_data)
    files["net"].write_text(json.dumps(content.network_data))
    files["vendor"].write_text(json.dumps(content.vendor_data))
    files["key"].write_text(KEY + "\n")
    return files


@pytest.mark.parametrize("fmt,fs,blkid_type", [("nocloud", "iso", "iso9660"), ("nocloud-vfat", "vfat", "vfat")])
def test_cloud_init_reads_our_seed(tmp_path, fmt, fs, blkid_type):
    content = sample_content()
    files = write_inputs(tmp_path, content)
    seed = tmp_path / f"seed.{fs}"
    configdrive("build", "-o", seed, "--format", fmt, "--meta-data", files["meta"], "--user-data", files["user"],
                "--network-data", files["net"], "--vendor-data", files["vendor"], "--ssh-key", files["key"])

    need_tool("blkid")
    probe = out("blkid", "-p", "-o", "export", seed)
    assert "LABEL=cidata" in probe.splitlines() and f"TYPE={blkid_type}" in probe.splitlines()

    got = nocloud_read(extract_with_foreign_tool(seed, tmp_path / "x", fs), tmp_path)
    assert got["instance_id"] == content.uuid
    assert got["hostname"] == content.hostname.split(".")[0]
    assert got["metadata"]["local-hostname"] == content.hostname
    assert sorted(got["keys"]) == sorted({k for _n, k in content.ssh_keys()} | {KEY})
    assert got["userdata"] == content.user_data.decode()
    assert got["vendordata"] == content.vendor_data["cloud-init"]
    assert got["network_config"]["version"] == 2
    ethernets = got["network_config"]["ethernets"]
    assert ethernets["eth0"]["match"]["macaddress"] == content.network_data["links"][0]["ethernet_mac_address"]
    assert ethernets["eth0"]["addresses"] == ["192.0.2.10/24"]


@pytest.mark.parametrize("fs", ["iso", "vfat"])
def test_cloud_localds_and_ours_read_identically(tmp_path, fs):
    """The same user-data, meta-data values, network-config and vendor-data through
    cloud-localds and through us: cloud-init holds the same for both."""
    need_tool("cloud-localds")
    content = sample_content()
    files = write_inputs(tmp_path, content)
    (tmp_path / "network-config").write_text(NETWORK_V1)
    (tmp_path / "vendor-data").write_text(content.vendor_data["cloud-init"])
    keys = [key for _name, key in content.ssh_keys()]
    # What a user writes by hand for cloud-localds (JSON is YAML).
    (tmp_path / "meta-data").write_text(json.dumps(
        {"instance-id": content.uuid, "local-hostname": content.hostname, "public-keys": keys}))
    theirs = tmp_path / f"localds.{fs}"
    run("cloud-localds", "-f", fs, "-N", tmp_path / "network-config", "-V", tmp_path / "vendor-data",
        theirs, files["user"], tmp_path / "meta-data")
    ours = tmp_path / f"ours.{fs}"
    configdrive("build", "-o", ours, "--format", "nocloud" if fs == "iso" else "nocloud-vfat",
                "--meta-data", files["meta"], "--user-data", files["user"], "--vendor-data", files["vendor"],
                "--network-config", tmp_path / "network-config")

    read_theirs = nocloud_read(extract_with_foreign_tool(theirs, tmp_path / "theirs", fs), tmp_path)
    read_ours = nocloud_read(extract_with_foreign_tool(ours, tmp_path / "ours", fs), tmp_path)
    assert read_theirs["instance_id"] == content.uuid
    assert read_theirs["network_config"]["config"][0]["name"] == "eth9"
    assert read_ours == read_theirs
    assert sorted(p.name for p in (tmp_path / "ours").iterdir()) == sorted(p.name for p in (tmp_path / "theirs").iterdir())


# cloud-init's own converter (sources/helpers/openstack.py convert_net_json, v1) and our
# v2, both through cloud-init's network_state parser, reduced to what a guest gets per
# device (by name): addresses, DHCP, MTU, bond master and mode, VLAN, routes, DNS.
NETWORK_STATE_COMPARE = textwrap.dedent("""
    import json, sys
    from unittest import mock
    from cloudinit.net import network_state
    from cloudinit.sources.helpers.openstack import convert_net_json
    network_data, ours = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
    macs = {l["ethernet_mac_address"].lower(): l["id"] for l in network_data["links"] if l["type"] == "phy"}
    def view(cfg):
        with mock.patch("cloudinit.net.network_state.get_interfaces_by_mac", return_value={}):
            state = network_state.parse_net_config_data(cfg)
        devices = {}
        for iface in state.iter_interfaces():
            subnets = iface.get("subnets") or []
            devices[iface["name"]] = {
                "type": iface["type"],
                "mtu": iface.get("mtu"),
                "addresses": sorted(s["address"] + "/" + str(s.get("prefix")) for s in subnets if s.get("address")),
                "dhcp": sorted(s["type"] for s in subnets if s["type"].startswith("dhcp")),
                "bond_master": iface.get("bond-master"),
                "bond_mode": (iface.get("bond-mode") or iface.get("bond_mode")) if iface["type"] == "bond" else None,
                "vlan": [iface.get("vlan_id"), iface.get("vlan-raw-device")] if iface["type"] == "vlan" else None,
                "dns": sorted({a for s in subnets for a in s.get("dns_nameservers") or []}),
            }
        routes = sorted((r["network"], r["prefix"], r["gateway"]) for r in state.iter_routes())
        subnet_routes = sorted((r["network"], int(r["prefix"]), r["gateway"])
                               for i in state.iter_interfaces() for s in i.get("subnets") or []
                               for r in s.get("routes") or [])
        return {"devices": devices, "routes": sorted(routes + subnet_routes),
                "dns": sorted(state.dns_nameservers)}
    theirs = convert_net_json(network_data, known_macs=macs)
    print(json.dumps({"theirs": view(theirs), "ours": view(ours)}, default=str))
""")


def test_network_config_v2_equals_cloud_inits_own_conversion(tmp_path):
    from configdrive import Content
    from configdrive.model.nocloud import seed_tree
    import yaml
    if not Path(SYSTEM_PYTHON).exists():
        pytest.skip("system python3 with cloud-init is not installed")
    content = Content(meta_data={"uuid": "u"}, network_data=RICH_NETWORK)
    ours = yaml.safe_load(seed_tree(content)["network-config"])
    assert ours["version"] == 2
    (tmp_path / "nd.json").write_text(json.dumps(RICH_NETWORK))
    (tmp_path / "ours.json").write_text(json.dumps(ours))
    views = json.loads(out(SYSTEM_PYTHON, "-c", NETWORK_STATE_COMPARE, tmp_path / "nd.json", tmp_path / "ours.json"))
    theirs, mine = views["theirs"], views["ours"]
    # Global DNS: cloud-init's v1 keeps it global, v2 has no global DNS, so ours carries it
    # on each device with a static address.
    assert set(theirs["dns"]) <= {a for d in mine["devices"].values() for a in d["dns"]} | set(mine["dns"])
    for name, device in theirs["devices"].items():
        device = dict(device, dns=None)
        assert dict(mine["devices"][name], dns=None) == device, name
    # cloud-init 22.4's v2 parser normalizes a route twice and the second pass drops the
    # prefix 0 of ``to: ::/0`` as falsy, then defaults IPv6 to /64 (net/network_state.py
    # _normalize_net_keys): ENI/sysconfig renderers get ::/64 where the YAML says ::/0;
    # netplan takes the v2 as written. Every other route is equal.
    assert ["::", 0, "2001:db8::1"] in theirs["routes"]
    assert mine["routes"] == [["::", 64, r[2]] if r[:2] == ["::", 0] else r for r in theirs["routes"]]
    assert {"to": "::/0", "via": "2001:db8::1"} in ours["ethernets"]["tap0"]["routes"]
    assert len(theirs["devices"]) == 5 and theirs["devices"]["tap1"]["bond_master"] == "bond0"


def test_inspect_extract_validate_read_seeds(tmp_path):
    content = sample_content()
    files = write_inputs(tmp_path, content)
    seed = tmp_path / "seed.img"
    configdrive("build", "-o", seed, "--format", "nocloud-vfat", "--meta-data", files["meta"],
                "--user-data", files["user"], "--network-config", _write(tmp_path / "nc", NETWORK_V1))
    summary = json.loads(configdrive("inspect", "--json", seed).stdout)
    assert (summary["datasource"], summary["label"], summary["uuid"], summary["hostname"]) == \
        ("nocloud", "cidata", content.uuid, content.hostname)
    assert summary["public_keys"] == ["k1@x"]
    configdrive("extract", seed, tmp_path / "x")
    assert (tmp_path / "x" / "network-config").read_text() == NETWORK_V1
    assert configdrive("validate", seed).returncode == 0
    assert configdrive("validate", tmp_path / "x").returncode == 0


@pytest.mark.parametrize("breakage,names", [
    (lambda d: (d / "network-config").write_text("version: 3\n"), "network-config: /version"),
    (lambda d: (d / "network-config").write_text("network: {version: 7}\n"), "network-config: /network/version"),
    (lambda d: (d / "network-config").write_text("- a\n- b\n"), "network-config"),
    (lambda d: (d / "meta-data").write_text("instance-id: [\n"), "meta-data: /: line 2"),
    (lambda d: (d / "user-data").unlink(), "user-data: /: missing"),
])
def test_validate_names_what_cloud_init_would_refuse(tmp_path, breakage, names):
    seed = tmp_path / "seed"
    configdrive("build", "-o", tmp_path / "s.iso", "--format", "nocloud", "--hostname", "h1")
    configdrive("extract", tmp_path / "s.iso", seed)
    (seed / "network-config").write_text(NETWORK_V1)
    assert configdrive("validate", seed).returncode == 0
    breakage(seed)
    result = configdrive("validate", seed, check=False)
    assert result.returncode == 1 and names in result.stderr.decode()


def test_config_drive_consumer_lints_do_not_apply_to_seeds(tmp_path):
    """name vs hostname (glean) and a missing ec2 tree (Afterburn) concern config drives:
    a NoCloud seed carries neither, so --strict builds it."""
    args = ("--name", "web", "--hostname", "node-1", "--no-ec2", "--strict")
    assert configdrive("build", "-o", tmp_path / "d.iso", *args, check=False).returncode == 1
    configdrive("build", "-o", tmp_path / "s.iso", "--format", "nocloud", *args)
    assert configdrive("validate", "--strict", tmp_path / "s.iso").returncode == 0


def test_missing_instance_id_warns_and_strict_refuses(tmp_path):
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "meta-data").write_text("local-hostname: h1\n")
    (seed / "user-data").write_text("")
    result = configdrive("validate", seed)
    assert "meta-data: /instance-id: missing" in result.stdout.decode()
    assert configdrive("validate", "--strict", seed, check=False).returncode == 1


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_nocloud_vfat_for_a_4kn_disk(tmp_path):
    """--sector-size applies to NoCloud vfat seeds as to vfat drives; fsck.fat and mtools
    read the seed, blkid shows its label."""
    need_tool("fsck.fat", "mcopy")
    seed = tmp_path / "seed.img"
    configdrive("build", "-o", seed, "--format", "nocloud-vfat", "--sector-size", "4096", "--hostname", "h4k")
    run("fsck.fat", "-n", seed)
    assert "LABEL=cidata" in out("blkid", "-p", "-o", "export", seed).splitlines()
    assert "local-hostname: h4k" in out("mtype", "-i", seed, "::/meta-data")
    refused = configdrive("build", "-o", tmp_path / "s.iso", "--format", "nocloud", "--sector-size", "4096",
                          check=False)
    assert refused.returncode == 1 and "--sector-size" in refused.stderr.decode()
