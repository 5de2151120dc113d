"""`configdrive build --from DRIVE_OR_DISK`: an existing drive (an image of either format,
a directory, a disk's config partition) with only what the options name replaced; the
result is read back by xorriso, mtools and cloud-init. (A nova-built drive: test_nova_peer.py.)"""

from __future__ import annotations

import json

import pytest

from configdrive.model.layout import build_tree

from conftest import SAMPLE_NETWORK, cloud_init_read, configdrive, sample_content
from conftest import out as out_of
from test_disk_inspect import put
from test_iso import write_dir, xorriso_extract
from test_tables import MiB, sgdisk_gpt


def changed_paths(before: dict, after: dict) -> set[str]:
    return {p for p in set(before) | set(after) if before.get(p) != after.get(p)}


@pytest.mark.parametrize("fmt", ["iso", "vfat"])
def test_user_data_replaced_in_every_copy_and_nothing_else(tmp_path, fmt):
    source = tmp_path / f"given.{fmt}"
    configdrive("build", "--example", "--format", fmt, "-o", source)
    new_user_data = tmp_path / "ud"
    new_user_data.write_bytes(b"#!/bin/sh\necho replaced\n")
    out = tmp_path / "out.iso"
    configdrive("build", "--from", source, "--user-data", new_user_data, "--format", "iso", "-o", out)
    configdrive("extract", source, tmp_path / "before")
    before = {p.relative_to(tmp_path / "before").as_posix(): p.read_bytes()
              for p in (tmp_path / "before").rglob("*") if p.is_file()}
    after = xorriso_extract(out, tmp_path / "after")
    assert changed_paths(before, after) == {p for p in before if p.endswith(("/user_data", "/user-data"))}
    assert cloud_init_read(tmp_path / "after")["userdata"] == b"#!/bin/sh\necho replaced\n"


def test_a_disks_config_partition_is_a_source(tmp_path):
    drive = tmp_path / "drive.iso"
    configdrive("build", "--example", "-o", drive)
    disk = tmp_path / "disk.img"
    table = sgdisk_gpt(disk, 64 * MiB, "-n", "1:0:+16M", "-c", "1:root", "-n", "2:0:+8M", "-c", "2:config-v2")
    put(disk, table["partitions"][1]["start"] * 512, drive)
    out = tmp_path / "out.iso"
    configdrive("build", "--from", disk, "--hostname", "node-9.example.org", "-o", out)
    xorriso_extract(out, tmp_path / "x")
    meta = cloud_init_read(tmp_path / "x")["metadata"]
    assert meta["local-hostname"] == "node-9.example.org"
    latest = json.loads((tmp_path / "x/openstack/latest/meta_data.json").read_text())
    assert latest["name"] == "node-9"     # --hostname alone keeps glean's name in step


def test_network_data_goes_into_every_directory_of_an_sdk_shaped_drive_that_lacks_it(tmp_path):
    content = sample_content()
    content.network_data = None
    source = write_dir(build_tree(content, versions="2012-08-10,latest", ec2=False), tmp_path / "given")
    net = tmp_path / "network_data.json"
    net.write_text(json.dumps(SAMPLE_NETWORK))
    out = tmp_path / "out.iso"
    configdrive("build", "--from", source, "--network-data", net, "-o", out)   # no ec2/: Afterburn warns
    tree = xorriso_extract(out, tmp_path / "x")
    assert {p for p in tree if p.endswith("network_data.json")} == \
        {"openstack/2012-08-10/network_data.json", "openstack/latest/network_data.json"}
    assert cloud_init_read(tmp_path / "x")["networkdata"] == SAMPLE_NETWORK


def test_an_ironic_object_replaces_the_parts_it_has(tmp_path):
    source = write_dir(build_tree(sample_content()), tmp_path / "given")
    ironic = tmp_path / "configdrive.json"
    ironic.write_text(json.dumps({"network_data": SAMPLE_NETWORK | {"services": []},
                                  "vendor_data": {"static": {"x": 1}}}))
    out = tmp_path / "out.iso"
    configdrive("build", "--from", source, "--ironic", ironic, "-o", out)
    before = build_tree(sample_content())
    after = xorriso_extract(out, tmp_path / "x")
    assert changed_paths(before, after) == {p for p in before if p.endswith(("/network_data.json",
                                                                              "/vendor_data2.json"))}


def test_ec2_keys_are_merged_into_the_ec2_tree(tmp_path):
    source = tmp_path / "given.iso"
    configdrive("build", "--example", "-o", source)
    section = tmp_path / "ec2.json"
    section.write_text(json.dumps({"instance-type": "m1.large", "public-ipv4": "198.51.100.9"}))
    out = tmp_path / "out.iso"
    configdrive("build", "--from", source, "--ec2-meta-data", section, "-o", out)
    tree = xorriso_extract(out, tmp_path / "x")
    for version in ("2009-04-04", "latest"):
        doc = json.loads(tree[f"ec2/{version}/meta-data.json"])
        assert (doc["instance-type"], doc["public-ipv4"]) == ("m1.large", "198.51.100.9")
        assert doc["instance-id"]       # the drive's own keys stay


@pytest.mark.parametrize("option", [["--example"], ["--versions", "latest"], ["--no-ec2"]])
def test_options_that_lay_out_a_new_drive_are_refused_with_from(tmp_path, option):
    source = tmp_path / "given.iso"
    configdrive("build", "--example", "-o", source)
    proc = configdrive("build", "--from", source, *option, "-o", tmp_path / "o.iso", check=False)
    assert proc.returncode == 1 and option[0] in proc.stderr.decode()
    assert len(proc.stderr.decode().splitlines()) == 1
    assert not (tmp_path / "o.iso").exists()


def test_the_output_may_be_the_source(tmp_path):
    image = tmp_path / "drive.iso"
    configdrive("build", "--example", "-o", image)
    configdrive("build", "--from", image, "--name", "renamed", "--hostname", "renamed", "-o", image)
    xorriso_extract(image, tmp_path / "x")
    assert json.loads((tmp_path / "x/openstack/latest/meta_data.json").read_text())["name"] == "renamed"


def test_novas_meta_data_json_alone_brings_its_files_along(tmp_path):
    content = sample_content()
    drive = write_dir(build_tree(content), tmp_path / "nova-drive")
    out = tmp_path / "out.iso"
    configdrive("build", "--meta-data", drive / "openstack/latest/meta_data.json",
                "--user-data", drive / "openstack/latest/user_data", "--strict", "-o", out)
    xorriso_extract(out, tmp_path / "x")
    assert cloud_init_read(tmp_path / "x")["files"] == {f.path: f.data for f in content.files}


@pytest.mark.parametrize("content_path", ["/content/../../../secret", "/content/0000/../../../secret",
                                          "/../secret", "/content/00000", "/content/000"])
def test_only_novas_content_paths_are_followed(tmp_path, content_path):
    (tmp_path / "secret").write_bytes(b"host secret\n")
    meta = tmp_path / "d/openstack/latest/meta_data.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"uuid": "0b5a2e5c-0f0e-4d7c-9e0e-3f6f7f1d2a11",
                                "files": [{"path": "/etc/x", "content_path": content_path}]}))
    proc = configdrive("build", "--meta-data", meta, "-o", tmp_path / "o.iso", check=False)
    assert proc.returncode == 1 and b"/files/0/content_path" in proc.stderr
    assert not (tmp_path / "o.iso").exists()


def test_a_symlinked_content_file_is_not_followed(tmp_path):
    (tmp_path / "secret").write_bytes(b"host secret\n")
    meta = tmp_path / "d/openstack/latest/meta_data.json"
    meta.parent.mkdir(parents=True)
    (tmp_path / "d/openstack/content").mkdir()
    (tmp_path / "d/openstack/content/0000").symlink_to(tmp_path / "secret")
    meta.write_text(json.dumps({"uuid": "0b5a2e5c-0f0e-4d7c-9e0e-3f6f7f1d2a11",
                                "files": [{"path": "/etc/x", "content_path": "/content/0000"}]}))
    proc = configdrive("build", "--meta-data", meta, "-o", tmp_path / "o.iso", check=False)
    assert proc.returncode == 1 and b"/files/0/content_path" in proc.stderr


def test_a_symlinked_content_directory_is_not_followed(tmp_path):
    """openstack/content itself a link to a host directory holding a file 0000: nothing of
    it reaches the drive (the entry stays, and validation reports it)."""
    (tmp_path / "host").mkdir()
    (tmp_path / "host/0000").write_bytes(b"host secret\n")
    meta = tmp_path / "d/openstack/latest/meta_data.json"
    meta.parent.mkdir(parents=True)
    (tmp_path / "d/openstack/content").symlink_to(tmp_path / "host")
    meta.write_text(json.dumps({"uuid": "0b5a2e5c-0f0e-4d7c-9e0e-3f6f7f1d2a11",
                                "files": [{"path": "/etc/x", "content_path": "/content/0000"}]}))
    proc = configdrive("build", "--meta-data", meta, "-o", tmp_path / "o.iso", check=False)
    assert proc.returncode == 1 and b"/files/0/content_path" in proc.stderr
    assert not (tmp_path / "o.iso").exists()


def test_a_vfat_drive_stays_vfat_unless_told(tmp_path):
    source = tmp_path / "given.img"
    configdrive("build", "--example", "--format", "vfat", "-o", source)
    for extra, fs in (([], "vfat"), (["--format", "iso"], "iso9660")):
        out = tmp_path / f"out-{fs}"
        configdrive("build", "--from", source, "--name", "x", "--hostname", "x", *extra, "-o", out)
        assert out_of("blkid", "-p", "-s", "TYPE", "-o", "value", out).strip() == fs


def test_files_added_to_a_drive_whose_directories_disagree_get_one_number(tmp_path):
    tree = build_tree(sample_content())
    odd = json.loads(tree["openstack/2012-08-10/meta_data.json"])
    odd["files"] = odd["files"] + [{"path": "/etc/old", "content_path": "/content/0007"}]
    tree["openstack/2012-08-10/meta_data.json"] = json.dumps(odd).encode()
    tree["openstack/content/0007"] = b"old\n"
    source = write_dir(tree, tmp_path / "given")
    extra = tmp_path / "extra"
    extra.write_bytes(b"new\n")
    out = tmp_path / "o.iso"
    configdrive("build", "--from", source, "--file", f"/etc/new={extra}", "--random-seed", "-o", out)
    after = xorriso_extract(out, tmp_path / "x")
    refs = set()
    seeds = set()
    for path, data in after.items():
        if path.endswith("/meta_data.json"):
            doc = json.loads(data)
            refs |= {e["content_path"] for e in doc["files"] if e["path"] == "/etc/new"}
            seeds.add(doc["random_seed"])
    assert len(refs) == 1 and after["openstack" + refs.pop()] == b"new\n"
    assert len(seeds) == len([p for p in after if p.endswith("/meta_data.json")])
