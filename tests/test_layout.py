"""The config-drive-v2 tree: nova's layout, read back by cloud-init's own reader.

The expected version gates below are transcribed from the spec (nova's metadata code),
not from our layout module, so a wrong gate in the code fails here."""

import base64
import gzip
import json

import pytest

from configdrive.model.content import Content
from configdrive.model.inputs import content_from_files
from configdrive.drives.extract import extract
from configdrive.errors import ConfigDriveError
from configdrive.examples import example_paths
from configdrive.model.layout import build_tree
from conftest import SAMPLE_NETWORK, SAMPLE_UUID, cloud_init_read, sample_content

ALL_VERSIONS = ["2012-08-10", "2013-04-04", "2013-10-17", "2015-10-15", "2016-06-30",
                "2016-10-06", "2017-02-22", "2018-08-27", "2020-10-14", "2025-04-04", "latest"]
# file -> first version directory that carries it (spec section 1)
GATES = {"vendor_data.json": "2013-10-17", "network_data.json": "2015-10-15",
         "vendor_data2.json": "2016-10-06"}

NETWORK = SAMPLE_NETWORK


def full_content(**extra) -> Content:
    return sample_content(**extra)


def test_every_version_directory_carries_what_its_version_allows():
    tree = build_tree(full_content())
    for version in ALL_VERSIONS:
        base = f"openstack/{version}/"
        assert base + "meta_data.json" in tree
        assert tree[base + "user_data"] == b"#cloud-config\nruncmd: [[echo, hi]]\n"
        for name, since in GATES.items():
            assert (base + name in tree) == (version == "latest" or version >= since), base + name
    # EC2: 2009-04-04 and latest, hyphenated names, same user data
    for version in ("2009-04-04", "latest"):
        assert json.loads(tree[f"ec2/{version}/meta-data.json"])["instance-id"]
        assert tree[f"ec2/{version}/user-data"] == b"#cloud-config\nruncmd: [[echo, hi]]\n"
    # one copy of each injected file, referenced from meta_data with a path under openstack/
    assert tree["openstack/content/0000"] == b"hello\n"
    assert tree["openstack/content/0001"] == bytes(range(256))
    meta = json.loads(tree["openstack/latest/meta_data.json"])
    assert meta["files"] == [{"path": "/etc/motd", "content_path": "/content/0000"},
                             {"path": "/root/bin.dat", "content_path": "/content/0001"}]
    assert "password" not in " ".join(tree)


def test_cloud_init_reads_network_and_vendor_data_from_the_directory_it_picks(tmp_path):
    extract(build_tree(full_content()), tmp_path)
    result = cloud_init_read(tmp_path)
    assert result["metadata"]["instance-id"] == SAMPLE_UUID
    assert result["metadata"]["local-hostname"] == "node-1.example.org"
    assert result["metadata"]["public_keys"] == sample_content().meta_data["public_keys"]
    assert result["userdata"] == b"#cloud-config\nruncmd: [[echo, hi]]\n"
    assert result["networkdata"] == NETWORK
    assert result["vendordata"] == sample_content().vendor_data
    assert result["vendordata2"] == sample_content().vendor_data2
    assert result["files"] == {"/etc/motd": b"hello\n", "/root/bin.dat": bytes(range(256))}


def test_openstacksdk_shape_with_versions_option():
    tree = build_tree(full_content(), versions="latest,2012-08-10", ec2=False)
    dirs = {p.split("/")[1] for p in tree if p.startswith("openstack/") and "content" not in p}
    assert dirs == {"2012-08-10", "latest"}
    assert not any(p.startswith("ec2/") for p in tree)
    with pytest.raises(ConfigDriveError, match="2019-01-01"):
        build_tree(full_content(), versions="2019-01-01")


def test_binary_user_data_survives_unchanged(tmp_path):
    payload = gzip.compress(b"#!/bin/sh\necho gz\n", mtime=0) + b"\x00\xff"
    content = full_content()
    content.user_data = payload
    extract(build_tree(content), tmp_path)
    assert cloud_init_read(tmp_path)["userdata"] == payload


def test_random_seed_only_when_asked_and_fresh_per_directory(tmp_path):
    plain = build_tree(full_content())
    assert all("random_seed" not in json.loads(v) for p, v in plain.items() if p.endswith("meta_data.json"))
    seeded = build_tree(full_content(random_seed=True))
    seeds = {v: json.loads(seeded[f"openstack/{v}/meta_data.json"]).get("random_seed") for v in ALL_VERSIONS}
    assert seeds["2012-08-10"] is None          # random_seed arrived in 2013-04-04
    present = [s for v, s in seeds.items() if v != "2012-08-10"]
    assert all(len(base64.b64decode(s)) == 512 for s in present)
    assert len(set(present)) == len(present)
    extract(seeded, tmp_path)
    assert len(cloud_init_read(tmp_path)["metadata"]["random_seed"]) == 512


def test_version_gated_meta_data_keys_and_device_fields():
    content = full_content()
    content.meta_data.update(
        project_id="p1", dedicated_cpus=[2, 3],
        devices=[{"type": "nic", "bus": "pci", "address": "0000:00:02.0", "mac": "52:54:00:aa:bb:cc",
                  "tags": ["trusted"], "vlan": 100, "vf_trusted": True},
                 {"type": "share", "share_id": "s1", "tag": "data", "tags": []}])
    tree = build_tree(content)

    def meta(v):
        return json.loads(tree[f"openstack/{v}/meta_data.json"])
    assert "project_id" not in meta("2013-10-17") and meta("2015-10-15")["project_id"] == "p1"
    assert "devices" not in meta("2015-10-15")
    assert meta("2016-06-30")["devices"] == [{"type": "nic", "bus": "pci", "address": "0000:00:02.0",
                                             "mac": "52:54:00:aa:bb:cc", "tags": ["trusted"]}]
    assert "vlan" in meta("2017-02-22")["devices"][0] and "vf_trusted" not in meta("2017-02-22")["devices"][0]
    assert meta("2018-08-27")["devices"][0]["vf_trusted"] is True
    assert len(meta("2020-10-14")["devices"]) == 1 and len(meta("2025-04-04")["devices"]) == 2
    assert "dedicated_cpus" not in meta("2018-08-27") and meta("2020-10-14")["dedicated_cpus"] == [2, 3]
    assert meta("latest")["devices"] == meta("2025-04-04")["devices"]


def test_nothing_given_still_makes_a_drive_cloud_init_accepts(tmp_path):
    content = content_from_files()
    tree = build_tree(content)
    # nova writes {} for absent network and vendor data, and no user_data file at all
    assert tree["openstack/latest/network_data.json"] == b"{}"
    assert tree["openstack/latest/vendor_data.json"] == b"{}"
    assert "openstack/latest/user_data" not in tree
    extract(tree, tmp_path)
    result = cloud_init_read(tmp_path)
    assert result["metadata"]["instance-id"] == content.uuid
    # the derived uuid is stable for the same content (reproducible builds)
    assert content_from_files().uuid == content.uuid
    assert content_from_files(hostname="other").uuid != content.uuid


def test_ironic_object_is_read_like_ironic(tmp_path):
    path = tmp_path / "ironic.json"
    path.write_text(json.dumps({"meta_data": {"uuid": "1c3f0f1e-8e0c-4f3a-9a55-5a3b1f9d7e21", "name": "bm-7"},
                                "user_data": {"runcmd": [["touch", "/x"]]},
                                "network_data": NETWORK, "vendor_data": {"static": {"k": "v"}}}))
    content = content_from_files(ironic=str(path))
    assert json.loads(content.user_data) == {"runcmd": [["touch", "/x"]]}
    assert content.vendor_data2 == {"static": {"k": "v"}} and content.vendor_data is None
    assert content.meta_data["hostname"] == "bm-7"
    path.write_text(json.dumps({"meta_data": {}, "extra": 1}))
    with pytest.raises(ConfigDriveError, match=r"/extra: unknown key"):
        content_from_files(ironic=str(path))
    path.write_text(json.dumps({"user_data": 5}))
    with pytest.raises(ConfigDriveError, match=r"/user_data: must be"):
        content_from_files(ironic=str(path))


def test_input_errors_name_the_file_and_position(tmp_path):
    bad = tmp_path / "meta.json"
    bad.write_text('{"uuid": "x",\n "name": }')
    with pytest.raises(ConfigDriveError, match=r"meta.json: line 2 column 10: invalid JSON"):
        content_from_files(meta_data=str(bad))
    with pytest.raises(ConfigDriveError, match=r"nope.json: cannot read meta_data"):
        content_from_files(meta_data=str(tmp_path / "nope.json"))
    key = tmp_path / "id.pub"
    key.write_text("# comment\nnot-a-key AAAA\n")
    with pytest.raises(ConfigDriveError, match=r"id.pub: line 2: not an OpenSSH public key"):
        content_from_files(ssh_keys=[str(key)])


def test_ssh_keys_go_into_public_keys_and_keys_with_unique_names(tmp_path):
    key = tmp_path / "keys.pub"
    key.write_text("ssh-ed25519 AAAA1 ops\nssh-rsa AAAA2 ops\n\nssh-ed25519 AAAA1 ops\n")
    md = content_from_files(ssh_keys=[str(key), example_paths()["ssh_keys"][0]]).meta_data
    assert md["public_keys"] == {"ops": "ssh-ed25519 AAAA1 ops", "ops-2": "ssh-rsa AAAA2 ops",
                                 "example@configdrive": open(example_paths()["ssh_keys"][0]).read().strip()}
    assert [k["name"] for k in md["keys"]] == ["ops", "ops-2", "example@configdrive"]
    assert all(k["type"] == "ssh" for k in md["keys"])
