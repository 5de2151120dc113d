"""`--versions` means what openstacksdk and ironic mean (every file the content has, in
every listed directory), and `build --strict` passes exactly when `validate --strict`
passes on the drive that build writes."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from configdrive.drives.builder import build
from configdrive.drives.extract import extract
from configdrive.model.layout import build_tree
from configdrive.drives.buildcheck import validate_build
from configdrive.drives.pathcheck import validate_paths

from conftest import SAMPLE_NETWORK, cloud_init_read, configdrive, sample_content

ALL = ["2012-08-10", "2013-04-04", "2013-10-17", "2015-10-15", "2016-06-30",
       "2016-10-06", "2017-02-22", "2018-08-27", "2020-10-14", "2025-04-04", "latest"]


@pytest.mark.parametrize("versions", ["2012-08-10,latest", "2013-04-04,2016-06-30", "latest", "2012-08-10"])
def test_every_file_the_content_has_goes_into_every_listed_directory(versions):
    content = sample_content()
    tree = build_tree(content, versions=versions)
    listed = versions.split(",")
    for version in listed:
        names = {p.rsplit("/", 1)[1] for p in tree if p.startswith(f"openstack/{version}/")}
        assert names == {"meta_data.json", "user_data", "network_data.json", "vendor_data.json",
                         "vendor_data2.json"}, version
        assert json.loads(tree[f"openstack/{version}/network_data.json"]) == content.network_data
        assert json.loads(tree[f"openstack/{version}/vendor_data2.json"]) == content.vendor_data2
    assert {p.split("/")[1] for p in tree if p.startswith("openstack/")} == set(listed) | {"content"}


def test_files_the_content_lacks_are_absent_as_in_openstacksdk():
    content = sample_content()
    content.vendor_data = content.vendor_data2 = content.network_data = None
    tree = build_tree(content, versions="2012-08-10,latest", ec2=False)
    for version in ("2012-08-10", "latest"):
        assert {p.rsplit("/", 1)[1] for p in tree if p.startswith(f"openstack/{version}/")} == \
            {"meta_data.json", "user_data"}


def test_cloud_init_reads_network_data_from_a_2012_08_10_latest_drive(tmp_path):
    image = tmp_path / "d.iso"
    configdrive("build", "--example", "--versions", "2012-08-10,latest", "--strict", "-o", image)
    configdrive("extract", image, tmp_path / "x")
    seen = cloud_init_read(tmp_path / "x")
    assert seen["networkdata"] == json.loads((tmp_path / "x/openstack/latest/network_data.json").read_bytes())
    assert seen["networkdata"]["links"]
    assert configdrive("validate", "--strict", image).returncode == 0


def test_random_seed_is_drawn_per_directory_even_in_2012_08_10(tmp_path):
    content = sample_content(random_seed=True)
    tree = build_tree(content, versions="2012-08-10,latest")
    seeds = {json.loads(tree[f"openstack/{v}/meta_data.json"])["random_seed"] for v in ("2012-08-10", "latest")}
    assert len(seeds) == 2
    tree = build_tree(content)    # nova's layout: no seed before 2013-04-04, a new one in each after
    all_seeds = [json.loads(tree[f"openstack/{v}/meta_data.json"]).get("random_seed") for v in ALL]
    assert all_seeds[0] is None and len(set(all_seeds[1:])) == len(ALL) - 1


# -- agreement, over many shapes of content -------------------------------------------

BAD_NETWORK = {"links": [{"id": "e", "type": "phy", "ethernet_mac_address": "fa:16:3e:00:00:01"}],
               "networks": [{"id": "n", "link": "e", "type": "ipv4", "ip_address": "10.0.0.3",
                             "netmask": "255.0.255.0"}], "services": []}
VERSION_SETS = st.lists(st.sampled_from(ALL), min_size=1, max_size=4, unique=True).map(",".join)


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(versions=st.one_of(st.none(), VERSION_SETS), ec2=st.booleans(),
       label=st.sampled_from(["config-2", "CONFIG-2", "cidata"]),
       user_data=st.booleans(), network=st.sampled_from([None, SAMPLE_NETWORK, BAD_NETWORK]),
       vendor=st.booleans(), vendor2=st.booleans(), random_seed=st.booleans(),
       meta=st.sampled_from([{}, {"name": "other"}, {"random_seed": "c2VlZA=="}, {"random_seed": "!!"}]))
def test_build_strict_passes_exactly_when_validate_strict_passes(tmp_path_factory, versions, ec2, label,
                                                                  user_data, network, vendor, vendor2,
                                                                  random_seed, meta):
    content = sample_content(random_seed=random_seed)
    content.meta_data.update(meta)
    content.user_data = content.user_data if user_data else None
    content.network_data = json.loads(json.dumps(network)) if network else None
    content.vendor_data = content.vendor_data if vendor else None
    content.vendor_data2 = content.vendor_data2 if vendor2 else None
    tree = build_tree(content, versions=versions, ec2=ec2)
    build_problems = validate_build(content, tree, label=label, versions=versions, ec2=ec2)

    image = tmp_path_factory.mktemp("agree") / "drive.iso"
    build(content, image, label=label, versions=versions, ec2=ec2, validate=False)
    drive_problems = validate_paths([str(image)])
    assert bool(build_problems) == bool(drive_problems), (build_problems, drive_problems)
    assert any(p.severity == "error" for p in build_problems) == \
        any(p.severity == "error" for p in drive_problems), (build_problems, drive_problems)


def test_the_command_line_agrees_on_a_drive_cloud_init_would_misread(tmp_path):
    # a drive whose only dated directory lacks what latest has: written by hand, as an
    # older configdrive or another tool would have
    tree = build_tree(sample_content(), versions="2012-08-10,latest")
    del tree["openstack/2012-08-10/network_data.json"]
    extract(tree, tmp_path / "d")
    assert configdrive("validate", tmp_path / "d", check=False).returncode == 1
    proc = configdrive("build", "--from", tmp_path / "d", "-o", tmp_path / "x.iso", "--strict", check=False)
    assert proc.returncode == 1 and b"only in latest/" in proc.stderr
    assert not (tmp_path / "x.iso").exists()
