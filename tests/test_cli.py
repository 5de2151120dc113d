"""The `configdrive` command as users run it: build, inspect, extract, pack, unpack, and
the error contract (exit 1 with one line, exit 2 for a bad command line)."""

import json
import os
import shlex
import sys
import tomllib
from pathlib import Path

import pytest

from configdrive.cli import make_parser
from conftest import ROOT, cloud_init_read, configdrive, need_tool, out, run

EPOCH_ENV = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}


def blkid(path) -> dict:
    need_tool("blkid")
    text = out("blkid", "-p", "-o", "export", path)
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


@pytest.mark.parametrize("fmt, fstype", [("iso", "iso9660"), ("vfat", "vfat")])
def test_build_example_then_inspect_extract_and_cloud_init_reads_it(tmp_path, fmt, fstype):
    image = tmp_path / f"drive.{fmt}"
    motd = tmp_path / "motd"
    motd.write_bytes(b"welcome\n")
    configdrive("build", "--example", "--format", fmt, "-o", image, "--file", f"/etc/motd={motd}")
    ids = blkid(image)
    assert ids["LABEL"] == "config-2" and ids["TYPE"] == fstype

    summary = json.loads(configdrive("inspect", "--json", image).stdout)
    assert summary["format"] == fstype and summary["label"] == "config-2"
    assert summary["uuid"] == "83679162-1378-4288-a2d4-70e13ec132aa"
    assert summary["hostname"] == "example-node.example.org"
    assert summary["public_keys"] == ["example@configdrive"]
    assert (summary["links"], summary["networks"]) == (1, 1)
    assert "latest" in summary["versions"] and "2018-08-27" in summary["versions"]

    dest = tmp_path / "out"
    configdrive("extract", image, dest)
    result = cloud_init_read(dest)
    assert result["metadata"]["instance-id"] == "83679162-1378-4288-a2d4-70e13ec132aa"
    assert result["metadata"]["local-hostname"] == "example-node.example.org"
    assert b"CONFIGDRIVE-EXAMPLE-RAN" in result["userdata"]
    assert result["networkdata"]["networks"][0]["ip_address"] == "10.0.2.15"
    assert result["files"] == {"/etc/motd": b"welcome\n"}


@pytest.mark.parametrize("fmt", ["iso", "vfat"])
def test_same_inputs_with_source_date_epoch_give_identical_bytes(tmp_path, fmt):
    a, b = tmp_path / "a", tmp_path / "b"
    configdrive("build", "--example", "--format", fmt, "-o", a, env=EPOCH_ENV)
    configdrive("build", "--example", "--format", fmt, "-o", b, env=EPOCH_ENV)
    assert a.read_bytes() == b.read_bytes()


def test_stdin_and_stdout_and_label(tmp_path):
    proc = configdrive("build", "--uuid", "5d0c1e0a-7a0b-4b0c-8d0e-0f1a2b3c4d5e", "--user-data", "-",
                       "--label", "CONFIG-2", "-o", "-", input=b"#!/bin/sh\necho from-stdin\n")
    image = tmp_path / "d.iso"
    image.write_bytes(proc.stdout)
    assert blkid(image)["LABEL"] == "CONFIG-2"
    dest = tmp_path / "x"
    configdrive("extract", image, dest)
    assert (dest / "openstack/latest/user_data").read_bytes() == b"#!/bin/sh\necho from-stdin\n"


def test_vfat_with_4096_byte_sectors_for_4kn_disks(tmp_path):
    need_tool("fsck.fat", "mcopy")
    image = tmp_path / "drive.vfat"
    configdrive("build", "--example", "--format", "vfat", "--sector-size", "4096", "-o", image)
    ids = blkid(image)
    assert (ids["TYPE"], ids["LABEL"], ids["BLOCK_SIZE"]) == ("vfat", "config-2", "4096")
    assert "4096 bytes per logical sector" in out("fsck.fat", "-n", "-v", image)
    dest = tmp_path / "out"
    dest.mkdir()
    run("mcopy", "-s", "-i", image, "::/openstack", dest)
    assert cloud_init_read(dest)["metadata"]["instance-id"] == "83679162-1378-4288-a2d4-70e13ec132aa"

    proc = configdrive("build", "--example", "--sector-size", "4096", "-o", tmp_path / "x.iso", check=False)
    assert proc.returncode == 1 and proc.stderr.decode().count("\n") == 1
    assert "--sector-size" in proc.stderr.decode() and not (tmp_path / "x.iso").exists()
    proc = configdrive("build", "--example", "--format", "vfat", "--sector-size", "3000", "-o", tmp_path / "y",
                       check=False)
    assert proc.returncode == 2


def test_pack_unpack_round_trip_through_the_command(tmp_path):
    image = tmp_path / "d.iso"
    configdrive("build", "--example", "-o", image)
    packed = tmp_path / "packed.txt"
    packed.write_bytes(configdrive("pack", image).stdout)
    assert run("sh", "-c", f"base64 -d {packed} | gzip -dc").stdout == image.read_bytes()
    configdrive("unpack", packed, "-o", tmp_path / "back.iso")
    assert (tmp_path / "back.iso").read_bytes() == image.read_bytes()


def test_inspect_reads_a_drive_made_by_genisoimage_as_nova_does(tmp_path):
    need_tool("genisoimage")
    tree = tmp_path / "tree"
    configdrive("build", "--example", "-o", tmp_path / "ours.iso")
    configdrive("extract", tmp_path / "ours.iso", tree)
    nova = tmp_path / "nova.iso"
    run("genisoimage", "-o", nova, "-ldots", "-allow-lowercase", "-allow-multidot", "-l",
        "-publisher", "test", "-quiet", "-J", "-r", "-V", "config-2", tree)
    summary = json.loads(configdrive("inspect", "--json", nova).stdout)
    assert summary["uuid"] == "83679162-1378-4288-a2d4-70e13ec132aa"
    assert {f["path"] for f in summary["files"]} == {
        p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file()}


def test_errors_are_one_line_with_exit_1_and_bad_usage_exits_2(tmp_path):
    proc = configdrive("build", "-o", tmp_path / "x.iso", "--meta-data", tmp_path / "missing.json", check=False)
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert err.startswith("configdrive: error: ") and "missing.json" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "x.iso").exists()

    bad = tmp_path / "meta.json"
    bad.write_text("{\"uuid\": ")
    proc = configdrive("build", "-o", tmp_path / "x.iso", "--meta-data", bad, check=False)
    assert proc.returncode == 1 and "meta.json: line 1 column 10: invalid JSON" in proc.stderr.decode()

    proc = configdrive("inspect", tmp_path / "meta.json", check=False)
    assert proc.returncode == 1 and proc.stderr.decode().startswith("configdrive: error: ")

    proc = configdrive("build", "--format", "udf", "-o", "x", check=False)
    assert proc.returncode == 2
    proc = configdrive("frobnicate", check=False)
    assert proc.returncode == 2


def test_debug_shows_the_traceback(tmp_path):
    proc = configdrive("--debug", "build", "-o", tmp_path / "x.iso", "--meta-data", tmp_path / "nope", check=False)
    assert proc.returncode != 0 and "Traceback" in proc.stderr.decode()


@pytest.mark.parametrize("args, cause", [
    (["build", "-o", "{tmp}/x.iso", "--meta-data", "{tmp}/nope"], "FileNotFoundError"),   # inputs.py
    (["inspect", "{tmp}/nope"], "FileNotFoundError"),                                     # reader.py
    (["build", "-o", "{tmp}/x.iso", "--meta-data", "{tmp}/bad.json"], "JSONDecodeError"),  # jsondoc.py
])
def test_debug_shows_the_cause_and_the_plain_error_stays_one_line(tmp_path, args, cause):
    """--debug shows the whole chain: the OSError or parser error our one-line refusal was
    raised from, not only the refusal; without it the user sees that one line alone."""
    (tmp_path / "bad.json").write_text('{"uuid": }')
    argv = [a.format(tmp=tmp_path) for a in args]
    plain = configdrive(*argv, check=False)
    assert plain.returncode == 1 and plain.stderr.decode().count("\n") == 1
    assert plain.stderr.decode().startswith("configdrive: error: ")
    debug = configdrive("--debug", *argv, check=False).stderr.decode()
    assert cause in debug and "The above exception was the direct cause" in debug
    assert "ConfigDriveError" in debug


def test_inspect_a_directory_and_the_openstacksdk_shape(tmp_path):
    image = tmp_path / "sdk.iso"
    configdrive("build", "--example", "--versions", "2012-08-10,latest", "--no-ec2", "-o", image)
    need_tool("isoinfo")
    listing = out("isoinfo", "-R", "-f", "-i", image)
    assert "/openstack/2012-08-10/meta_data.json" in listing and "/ec2" not in listing
    assert "/openstack/2015-10-15" not in listing
    configdrive("extract", image, tmp_path / "tree")
    summary = json.loads(configdrive("inspect", "--json", tmp_path / "tree").stdout)
    assert summary["format"] == "directory" and summary["versions"] == ["2012-08-10", "latest"]
    assert summary["ec2_versions"] == []


# -- what a user reaches for first: the version and the examples ---------------------

def installed_version() -> str:
    """The version pyproject.toml gives: the one a release ships and a user reads."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_version_is_the_packages():
    proc = configdrive("--version")
    assert proc.stdout.decode() == f"configdrive {installed_version()}\n"


def test_json_summaries_carry_the_version(tmp_path):
    image = tmp_path / "drive.iso"
    configdrive("build", "--example", "-o", image)
    assert json.loads(configdrive("inspect", "--json", image).stdout)["configdrive_version"] == installed_version()
    raw = tmp_path / "os.raw"
    raw.write_bytes(os.urandom(2 << 20))
    deployed = configdrive("deploy", "--quiet", "--create", "--device", tmp_path / "disk.img", "--image", raw,
                           "--image-format", "raw", "--json")
    assert json.loads(deployed.stdout)["configdrive_version"] == installed_version()


def test_mkisofs_names_itself_and_its_version_in_the_application_id(tmp_path):
    need_tool("isoinfo")
    (tmp_path / "src").mkdir()
    (tmp_path / "src/meta_data.json").write_text("{}")
    mkisofs = Path(sys.executable).with_name("configdrive-mkisofs")    # as nova runs it
    run(mkisofs, "-o", tmp_path / "nova.iso", "-ldots", "-allow-lowercase", "-allow-multidot", "-l",
        "-publisher", "OpenStack Nova 34.0.0", "-quiet", "-J", "-r", "-V", "config-2", tmp_path / "src")
    described = out("isoinfo", "-d", "-i", tmp_path / "nova.iso")
    assert f"Application id: configdrive-mkisofs {installed_version()}" in described
    assert "Publisher id: OpenStack Nova 34.0.0" in described


SUBCOMMANDS = ["build", "inspect", "extract", "validate", "pack", "unpack", "deploy", "inject"]


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_ends_with_examples_that_parse(command):
    """Each --help ends with one or two example command lines, and each is a command line
    this very command accepts (parsed, not run: they name disks and URLs)."""
    text = configdrive(command, "--help").stdout.decode()
    examples = text.rstrip("\n").split("\nexamples:\n")[1]
    lines = examples.replace("\\\n", " ").splitlines()
    assert 1 <= len(lines) <= 2, examples
    for line in lines:
        argv = shlex.split(line.split(">")[0])
        assert argv[:2] == ["configdrive", command], line
        args = make_parser().parse_args(argv[1:])
        assert args.command == command
