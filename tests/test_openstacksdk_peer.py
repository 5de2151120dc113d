"""Side by side with real openstacksdk 4.22 (scripts/peers.sh puts it in .peers/sdk):
`openstack.baremetal.configdrive.build` (what ironic's conductor runs for JSON config
drives) with configdrive-mkisofs first on PATH as a symlink named genisoimage, and its
genisoimage-built drive against `configdrive build --versions 2012-08-10,latest` from the
same ironic-style input."""

from __future__ import annotations

import base64
import gzip
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from conftest import ROOT, SAMPLE_NETWORK, cloud_init_read, configdrive, need_tool, run
from test_iso import listing, xorriso_extract
from test_mkisofs import descriptor, rock_ridge_entries

SDK_PYTHON = ROOT / ".peers/sdk/bin/python"
SDK_DRIVE = ROOT / "tests/peers/sdk_drive.py"
MKISOFS = Path(sys.executable).with_name("configdrive-mkisofs")

# What a user hands ironic as `configdrive` (its JSON form).
IRONIC = {
    "meta_data": {"uuid": "0b5a2e5c-0f0e-4d7c-9e0e-3f6f7f1d2a11", "name": "node-7",
                  "hostname": "node-7.example.org",
                  "public_keys": {"ops": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBmwX0xJ2 ops@x"}},
    "user_data": "#cloud-config\nruncmd: [[touch, /ran]]\n",
    "network_data": SAMPLE_NETWORK,
    "vendor_data": {"static": {"rack": "r12"}},
}
# Keys we add to meta_data where the input has none, as nova always writes them (docs/nova-and-openstacksdk.md).
FILLED_IN = {"launch_index": 0}


def sdk_build(tmp: Path, path_dirs: list[Path], versions=None) -> Path:
    """The SDK's drive, built with the first genisoimage on ``path_dirs``; unpacked to an image."""
    if not SDK_PYTHON.exists():
        pytest.skip("openstacksdk's venv is missing: run scripts/peers.sh (needs PyPI)")
    spec = tmp / "ironic.json"
    spec.write_text(json.dumps({**IRONIC, "versions": versions}))
    env = {**os.environ, "PATH": os.pathsep.join(map(str, path_dirs))}
    packed = run(SDK_PYTHON, SDK_DRIVE, spec, env=env).stdout
    image = tmp / f"sdk-{path_dirs[0].name}.iso"
    image.write_bytes(gzip.decompress(base64.b64decode(packed)))
    return image


def genisoimage_dir() -> Path:
    need_tool("genisoimage")
    return Path(shutil.which("genisoimage")).parent


def drop_in_dir(tmp: Path) -> Path:
    """A directory whose genisoimage is configdrive-mkisofs, as the README and
    docs/nova-and-openstacksdk.md tell operators."""
    where = tmp / "drop-in"
    where.mkdir(exist_ok=True)
    (where / "genisoimage").symlink_to(MKISOFS)
    return where


def test_the_sdk_with_our_drop_in_makes_genisoimages_names_and_files(tmp_path):
    ours = sdk_build(tmp_path, [drop_in_dir(tmp_path), genisoimage_dir()])
    theirs = sdk_build(tmp_path, [genisoimage_dir()])
    assert descriptor(ours)["Application id"] != descriptor(theirs)["Application id"]   # ours did build it
    for flags in ((), ("-J",), ("-R",)):
        assert listing(ours, *flags) == listing(theirs, *flags), flags
    assert rock_ridge_entries(ours) == rock_ridge_entries(theirs)
    assert descriptor(ours)["Publisher id"] == descriptor(theirs)["Publisher id"] == "metalsmith"
    assert xorriso_extract(ours, tmp_path / "a") == xorriso_extract(theirs, tmp_path / "b")


def test_a_failing_drop_in_fails_the_sdk(tmp_path):
    # the SDK trusts the exit status: a drop-in that refused must not leave it an image
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "genisoimage").write_text(f"#!/bin/sh\nexec {MKISOFS} -udf \"$@\"\n")
    (bad / "genisoimage").chmod(0o755)
    with pytest.raises(AssertionError, match="-udf"):
        sdk_build(tmp_path, [bad])


@pytest.mark.parametrize("versions", [None, ["2012-08-10", "latest"], ["2015-10-15", "2018-08-27", "latest"]],
                         ids=["default", "sdk-default-spelled-out", "three"])
def test_same_files_in_every_directory_as_the_sdk(tmp_path, versions):
    sdk_image = sdk_build(tmp_path, [genisoimage_dir()], versions=versions)
    listed = ",".join(versions or ["2012-08-10", "latest"])
    ironic = tmp_path / "configdrive.json"
    ironic.write_text(json.dumps(IRONIC))
    ours_image = tmp_path / "ours.iso"
    configdrive("build", "--ironic", ironic, "--versions", listed, "--strict", "-o", ours_image)

    theirs = xorriso_extract(sdk_image, tmp_path / "theirs")
    ours = xorriso_extract(ours_image, tmp_path / "ours")
    openstack_ours = {p: d for p, d in ours.items() if p.startswith("openstack/")}
    assert sorted(openstack_ours) == sorted(theirs)
    for path, data in theirs.items():
        if path.endswith("/meta_data.json"):
            assert json.loads(openstack_ours[path]) == {**json.loads(data), **FILLED_IN}, path
        elif path.endswith(".json"):
            assert json.loads(openstack_ours[path]) == json.loads(data), path
        else:
            assert openstack_ours[path] == data, path
    # what we add: nova's ec2 tree, which the SDK does not write
    assert {p.split("/")[0] for p in ours} == {"openstack", "ec2"}

    for tree_dir in (tmp_path / "theirs", tmp_path / "ours"):
        seen = cloud_init_read(tree_dir)
        assert seen["networkdata"] == SAMPLE_NETWORK, tree_dir
        assert seen["userdata"] == IRONIC["user_data"].encode()
        assert seen["vendordata2"] == IRONIC["vendor_data"]


def test_validate_passes_the_sdks_drive_and_ours_alike(tmp_path):
    sdk_image = sdk_build(tmp_path, [genisoimage_dir()])
    proc = configdrive("validate", sdk_image)
    assert proc.returncode == 0
    # The one thing to say of the SDK's drive: it has no ec2/ tree, which Afterburn reads.
    said = [line for line in (proc.stdout + proc.stderr).decode().splitlines() if line.strip()]
    assert said and all("Afterburn" in line for line in said if line.startswith("warning:")), said
    assert not [line for line in said if line.startswith("error:")], said
