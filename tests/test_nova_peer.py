"""Side by side with real nova 34.0 (scripts/peers.sh puts it in .peers/nova): its own
ConfigDriveBuilder with mkisofs_cmd = configdrive-mkisofs against genisoimage, its own
InstanceMetadata tree against ours from the same inputs, and a nova-built drive
re-mastered with `build --from`.

nova runs in its own venv (tests/peers/nova_drive.py): its pins would otherwise leak into
.venv, which tests what `pip install .` ships."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import pytest

from configdrive.model.content import Content, InjectedFile
from configdrive.model.layout import build_tree

from conftest import ROOT, cloud_init_read, configdrive, need_tool, run
from test_iso import listing, xorriso_extract
from test_mkisofs import descriptor, rock_ridge_entries

NOVA_PYTHON = ROOT / ".peers/nova/bin/python"
NOVA_DRIVE = ROOT / "tests/peers/nova_drive.py"
MKISOFS = Path(sys.executable).with_name("configdrive-mkisofs")

# One instance, as nova's unit tests make one (nova/tests/unit/test_metadata.py).
INSTANCE = {
    "uuid": "b65cee2f-8c69-4aeb-be2f-f79742548fc2", "project_id": "6f3a0b5c2d1e4f7a8b9c0d1e2f3a4b5c",
    "key_name": "key", "key_data": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBmwX0xJ2 k1@x",
    "launch_index": 0, "reservation_id": "r-3k9x2m1q", "user_data": "#cloud-config\nruncmd: [[echo, hi]]\n",
    "hostname": "node-1", "display_name": "node-1", "availability_zone": "az1", "flavor": "m1.small",
    "ec2_instance_id": "i-00000001", "ami_id": "ami-00000002", "security_groups": ["default", "web"],
    "files": [["/etc/motd", "hello\n"], ["/root/.config/app.ini", "[app]\nx = 1\n"]],
    "vif": {"port_id": "1f0c4a6e-5c1e-4a55-8b5e-0d6b1b3c2f01", "mac": "fa:16:3e:00:00:01",
            "network_id": "9d4c2c16-4bd1-4a6e-9c9b-7f4d2a0c5e11", "cidr": "192.0.2.0/24",
            "fixed_ip": "192.0.2.10", "gateway": "192.0.2.1", "dns": "192.0.2.2", "floating_ip": "198.51.100.7"},
}
NOVA_DHCP_DOMAIN = "novalocal"   # nova appends CONF.dhcp_domain to the hostname

# What nova writes and we do not, and why (docs/nova-and-openstacksdk.md: "Where we differ from nova").
DOCUMENTED_DIFFERENCES = {
    "meta-data.json": {
        "ami-manifest-path": "nova writes the constant placeholder 'FIXME'; no source, so absent",
        "instance-action": "nova writes the constant 'none'; no source, so absent",
    },
}


@pytest.fixture(scope="module")
def nova(tmp_path_factory):
    """nova's tree for INSTANCE, and two images its ConfigDriveBuilder made from one set
    of files: one with genisoimage, one with configdrive-mkisofs as mkisofs_cmd."""
    if not NOVA_PYTHON.exists():
        pytest.skip("nova's venv is missing: run scripts/peers.sh (needs PyPI)")
    need_tool("genisoimage")
    tmp = tmp_path_factory.mktemp("nova")
    spec = tmp / "instance.json"
    spec.write_text(json.dumps(INSTANCE))
    images = {"genisoimage": tmp / "genisoimage.iso", "configdrive-mkisofs": tmp / "ours.iso"}
    proc = run(NOVA_PYTHON, NOVA_DRIVE, spec, "genisoimage", images["genisoimage"],
               MKISOFS, images["configdrive-mkisofs"])
    tree = {p: base64.b64decode(d) for p, d in json.loads(proc.stdout).items()}
    return {"tree": tree, "images": images, "tmp": tmp}


def our_content(nova_network_data: dict) -> Content:
    """The same instance as input to us. network_data is nova's document (nova derives it
    from neutron's ports, which are not ours to read); the ec2 section carries what has a
    source only outside the drive: nova's EC2 ids, flavor, floating IP, security groups."""
    i = INSTANCE
    return Content(
        meta_data={
            "uuid": i["uuid"], "hostname": f"{i['hostname']}.{NOVA_DHCP_DOMAIN}", "name": i["display_name"],
            "launch_index": i["launch_index"], "availability_zone": i["availability_zone"],
            "project_id": i["project_id"], "public_keys": {i["key_name"]: i["key_data"]},
            "keys": [{"name": i["key_name"], "type": "ssh", "data": i["key_data"]}],
            "devices": [], "dedicated_cpus": [],
        },
        user_data=i["user_data"].encode(),
        network_data=nova_network_data,
        vendor_data={},
        vendor_data2={"static": {}},
        files=[InjectedFile(path, data.encode()) for path, data in i["files"]],
        random_seed=True,
        ec2={"instance-id": i["ec2_instance_id"], "ami-id": i["ami_id"], "reservation-id": i["reservation_id"],
             "security-groups": i["security_groups"], "instance-type": i["flavor"],
             "public-ipv4": i["vif"]["floating_ip"], "block-device-mapping": {"ami": "vda", "root": "/dev/vda"}},
    )


# -- nova's ConfigDriveBuilder with mkisofs_cmd = configdrive-mkisofs ----------------

def test_novas_builder_with_our_mkisofs_gives_genisoimages_names(nova):
    theirs, ours = nova["images"]["genisoimage"], nova["images"]["configdrive-mkisofs"]
    for flags in ((), ("-J",), ("-R",)):
        assert listing(ours, *flags) == listing(theirs, *flags), flags
    assert rock_ridge_entries(ours) == rock_ridge_entries(theirs)
    assert descriptor(ours)["Publisher id"] == descriptor(theirs)["Publisher id"] == "OpenStack Nova 34.0.0"
    assert descriptor(ours)["Volume id"] == "config-2"


def test_cloud_init_reads_both_of_novas_images_identically(nova):
    tmp = nova["tmp"]
    theirs = xorriso_extract(nova["images"]["genisoimage"], tmp / "theirs")
    ours = xorriso_extract(nova["images"]["configdrive-mkisofs"], tmp / "ours")
    assert ours == theirs
    seen = cloud_init_read(tmp / "ours")
    assert seen == cloud_init_read(tmp / "theirs")
    assert seen["metadata"]["uuid"] == INSTANCE["uuid"]
    assert seen["files"] == {path: data.encode() for path, data in INSTANCE["files"]}
    assert seen["networkdata"]["networks"][0]["ip_address"] == INSTANCE["vif"]["fixed_ip"]


# -- nova's InstanceMetadata tree against ours ---------------------------------------

def test_every_path_and_key_per_version_directory_equals_novas(nova):
    theirs = nova["tree"]
    ours = build_tree(our_content(json.loads(theirs["openstack/latest/network_data.json"])))
    assert sorted(ours) == sorted(theirs)
    for path in sorted(theirs):
        if not path.endswith(".json"):
            assert ours[path] == theirs[path], path
            continue
        mine, nova_doc = json.loads(ours[path]), json.loads(theirs[path])
        documented = DOCUMENTED_DIFFERENCES.get(path.rsplit("/", 1)[1], {})
        assert set(nova_doc) - set(mine) == set(documented), path
        assert set(mine) <= set(nova_doc), path
        for key in mine:
            if key == "random_seed":   # drawn anew per directory, by both
                assert len(base64.b64decode(mine[key])) == len(base64.b64decode(nova_doc[key])) == 512
                continue
            assert mine[key] == nova_doc[key], (path, key)


def test_random_seed_is_in_the_same_directories_and_differs_between_them(nova):
    theirs = nova["tree"]
    ours = build_tree(our_content(json.loads(theirs["openstack/latest/network_data.json"])))

    def seeds(tree):
        return {p: json.loads(d).get("random_seed") for p, d in tree.items() if p.endswith("/meta_data.json")}
    mine, novas = seeds(ours), seeds(theirs)
    assert {p for p, s in mine.items() if s} == {p for p, s in novas.items() if s}
    drawn = [s for s in mine.values() if s]
    assert len(set(drawn)) == len(drawn) > 1


# -- re-mastering a nova drive ---------------------------------------------------------

def test_a_nova_drive_remastered_with_new_network_data_changes_nothing_else(nova, tmp_path):
    source = nova["images"]["genisoimage"]
    before = xorriso_extract(source, tmp_path / "before")
    network = json.loads(before["openstack/latest/network_data.json"])
    network["networks"][0]["ip_address"] = "192.0.2.99"
    patch = tmp_path / "network_data.json"
    patch.write_text(json.dumps(network))

    out = tmp_path / "remastered.iso"
    configdrive("build", "--from", source, "--network-data", patch, "-o", out)
    after = xorriso_extract(out, tmp_path / "after")

    changed = {p for p in after if after[p] != before.get(p)}
    assert sorted(after) == sorted(before)
    assert changed == {p for p in before if p.endswith("/network_data.json")}
    assert all(json.loads(after[p]) == network for p in changed)
    seen = cloud_init_read(tmp_path / "after")
    assert seen["networkdata"] == network
    assert seen["files"] == {path: data.encode() for path, data in INSTANCE["files"]}
    assert seen["metadata"]["uuid"] == INSTANCE["uuid"]
    # primary names stay what ironic's conductor reads
    assert "/openstack/latest/network_data.json;1" in listing(out)


def test_novas_meta_data_with_files_is_accepted_and_its_files_carried_over(nova, tmp_path):
    before = xorriso_extract(nova["images"]["genisoimage"], tmp_path / "nova")
    extra = tmp_path / "extra.txt"
    extra.write_bytes(b"added later\n")
    out = tmp_path / "more.iso"
    configdrive("build", "--from", tmp_path / "nova", "--file", f"/etc/extra={extra}",
                "--hostname", "node-2.example.org", "-o", out)
    configdrive("extract", out, tmp_path / "x")
    seen = cloud_init_read(tmp_path / "x")
    assert seen["files"] == {**{path: data.encode() for path, data in INSTANCE["files"]},
                             "/etc/extra": b"added later\n"}
    meta = json.loads((tmp_path / "x/openstack/latest/meta_data.json").read_text())
    assert (meta["hostname"], meta["name"]) == ("node-2.example.org", "node-2")
    assert configdrive("validate", "--strict", out).returncode == 0
    # nova's own content/NNNN stay as they were; the new one is numbered after them
    assert {p: d for p, d in before.items() if p.startswith("openstack/content/")}.items() <= \
        {p: (tmp_path / "x" / p).read_bytes() for p in before if p.startswith("openstack/content/")}.items()


def test_novas_own_meta_data_json_is_accepted_as_input_with_its_files(nova, tmp_path):
    xorriso_extract(nova["images"]["genisoimage"], tmp_path / "nova")
    out = tmp_path / "rebuilt.iso"
    given = ["--meta-data", tmp_path / "nova/openstack/latest/meta_data.json",
             "--network-data", tmp_path / "nova/openstack/latest/network_data.json", "-o", out]
    # nova's document carries the seed nova drew for latest/: copied, it is warned about
    warned = configdrive("build", *given).stderr.decode()
    assert "warning:" in warned and "/random_seed: the same seed in 10 version directories" in warned
    # drawn anew per directory, as nova draws it, nothing is left to warn about
    configdrive("build", *given, "--random-seed", "--strict")
    xorriso_extract(out, tmp_path / "x")
    seen = cloud_init_read(tmp_path / "x")
    assert seen["files"] == {path: data.encode() for path, data in INSTANCE["files"]}
    assert seen["metadata"]["uuid"] == INSTANCE["uuid"]
    seeds = {json.loads((tmp_path / "x/openstack" / v / "meta_data.json").read_text())["random_seed"]
             for v in ("2013-04-04", "latest")}
    assert len(seeds) == 2
