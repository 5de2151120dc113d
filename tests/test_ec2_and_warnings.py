"""The ec2 tree from an ec2 section of the input (what Afterburn reads), keys with no
source left out; and the warnings about what consumers would read differently: a name
glean would use that is not cloud-init's hostname, one random_seed in many directories."""

from __future__ import annotations

import json

import pytest

from conftest import cloud_init_read, configdrive
from test_iso import xorriso_extract

UUID = "0b5a2e5c-0f0e-4d7c-9e0e-3f6f7f1d2a11"
# What Afterburn (Fedora CoreOS) takes from ec2/latest/meta-data.json, and the rest.
SECTION = {"instance-id": "i-0000002a", "instance-type": "m1.large", "public-ipv4": "198.51.100.9",
           "ami-id": "ami-00000003", "reservation-id": "r-7", "security-groups": ["default", "ssh"],
           "block-device-mapping": {"ami": "vda", "root": "/dev/vda"}}


def ec2_docs(tmp_path, *args) -> dict[str, dict]:
    out = tmp_path / "d.iso"
    configdrive("build", "--uuid", UUID, *args, "-o", out)
    tree = xorriso_extract(out, tmp_path / "x")
    return {p: json.loads(d) for p, d in tree.items() if p.startswith("ec2/") and p.endswith("meta-data.json")}


def test_the_section_is_written_as_given_into_every_ec2_version(tmp_path):
    section = tmp_path / "ec2.json"
    section.write_text(json.dumps(SECTION))
    docs = ec2_docs(tmp_path, "--ec2-meta-data", section, "--hostname", "node-3")
    assert sorted(docs) == ["ec2/2009-04-04/meta-data.json", "ec2/latest/meta-data.json"]
    for doc in docs.values():
        assert {k: doc[k] for k in SECTION} == SECTION
        assert doc["hostname"] == doc["local-hostname"] == "node-3"


def test_keys_without_a_source_are_absent(tmp_path):
    doc = ec2_docs(tmp_path)["ec2/latest/meta-data.json"]
    assert doc["instance-id"] == UUID
    for key in ("instance-type", "public-ipv4", "ami-id", "reservation-id", "security-groups",
                "block-device-mapping", "local-ipv4", "placement", "hostname", "public-keys"):
        assert key not in doc, key


@pytest.mark.parametrize("section, named", [
    ({"instance_type": "m1"}, "/instance_type: unknown key"),
    ({"public-ipv4": 7}, "/public-ipv4: must be"),
    ({"security-groups": [1]}, "/security-groups/0"),
])
def test_a_wrong_section_is_refused_naming_the_key(tmp_path, section, named):
    path = tmp_path / "ec2.json"
    path.write_text(json.dumps(section))
    proc = configdrive("build", "--ec2-meta-data", path, "-o", tmp_path / "d.iso", check=False)
    assert proc.returncode == 1 and named in proc.stderr.decode(), proc.stderr
    assert not (tmp_path / "d.iso").exists()


def test_a_section_for_a_drive_without_ec2_is_refused(tmp_path):
    path = tmp_path / "ec2.json"
    path.write_text(json.dumps(SECTION))
    proc = configdrive("build", "--ec2-meta-data", path, "--no-ec2", "-o", tmp_path / "d.iso", check=False)
    assert proc.returncode == 1 and b"--no-ec2" in proc.stderr


# -- name and hostname ----------------------------------------------------------------

def test_hostname_alone_keeps_name_in_step_for_glean(tmp_path):
    meta = tmp_path / "meta_data.json"
    meta.write_text(json.dumps({"uuid": UUID, "name": "old", "hostname": "old"}))
    out = tmp_path / "d.iso"
    configdrive("build", "--meta-data", meta, "--hostname", "new.example.org", "--strict", "-o", out)
    xorriso_extract(out, tmp_path / "x")
    latest = json.loads((tmp_path / "x/openstack/latest/meta_data.json").read_text())
    assert (latest["name"], latest["hostname"]) == ("new", "new.example.org")
    assert cloud_init_read(tmp_path / "x")["metadata"]["local-hostname"] == "new.example.org"


def test_validate_warns_when_name_and_hostname_disagree(tmp_path):
    meta = tmp_path / "meta_data.json"
    meta.write_text(json.dumps({"uuid": UUID, "name": "web-1", "hostname": "db-1.example.org"}))
    proc = configdrive("validate", meta)
    assert proc.returncode == 0 and "warning: " in proc.stdout.decode() and "/name:" in proc.stdout.decode()
    assert configdrive("validate", "--strict", meta, check=False).returncode == 1
    out = tmp_path / "d.iso"
    warned = configdrive("build", "--meta-data", meta, "-o", out).stderr.decode()
    assert "warning:" in warned and "/name:" in warned
    assert configdrive("validate", out).stdout.decode().count("/name:") >= 1


# -- random_seed ------------------------------------------------------------------------

def test_a_given_random_seed_copied_into_many_directories_is_warned_about(tmp_path):
    meta = tmp_path / "meta_data.json"
    meta.write_text(json.dumps({"uuid": UUID, "random_seed": "c2VlZCBmb3IgZXZlcnlvbmU="}))
    out = tmp_path / "d.iso"
    warned = configdrive("build", "--meta-data", meta, "-o", out).stderr.decode()
    assert "/random_seed: the same seed in 10 version directories" in warned
    assert configdrive("build", "--meta-data", meta, "--strict", "-o", out, check=False).returncode == 1
    assert "the same seed" in configdrive("validate", out).stdout.decode()
    # drawn per directory instead: nothing to say
    configdrive("build", "--meta-data", meta, "--random-seed", "--strict", "-o", out)
    assert configdrive("validate", "--strict", out).returncode == 0
