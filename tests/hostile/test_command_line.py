"""The command line as a whole: values the parser must range-check (exit 2 with argparse's
usage line, before anything is read or written), a closed stdout (the command ends as cat
does: killed by SIGPIPE, nothing on stderr), and secrets that must stay off the command
line (--admin-pass-file)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import configdrive, need_tool, run
from harness import EXE, digest, refused, run_measured

UUID = "83679162-1378-4288-a2d4-70e13ec132aa"

BAD_SIZES = ["inf", "-inf", "Infinity", "nan", "-1", "0", "0.5", "1e999", "-1M", "1.5", "3G", "1T", "1e30",
             "512K", "", " ", "M", "0x10", "1,5M", "64MiBB", "9" * 400]


def assert_usage_error(outcome, option: str) -> None:
    """argparse's refusal: exit 2, the usage line first, the option named last."""
    lines = outcome.stderr.splitlines()
    assert outcome.returncode == 2, outcome.stderr
    assert "Traceback" not in outcome.stderr
    assert lines[0].startswith("usage: configdrive"), lines
    assert lines[-1].startswith("configdrive ") and f"error: argument {option}" in lines[-1], lines
    assert all(line.isprintable() for line in lines)


@pytest.fixture
def disk(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(os.urandom(1 << 16) * 64)
    return path


@pytest.mark.parametrize("value", BAD_SIZES, ids=range(len(BAD_SIZES)))
def test_sizes_are_range_checked_by_the_parser(tmp_path, disk, value):
    out = tmp_path / "d.img"
    before = digest(disk)
    assert_usage_error(run_measured("build", "--format", "vfat", "-o", out, "--example", "--size", value), "--size")
    assert not out.exists()
    assert_usage_error(run_measured("deploy", "--device", disk, "--example", "--config-size", value),
                       "--config-size")
    assert_usage_error(run_measured("deploy", "--device", disk, "--example", "--size", value), "--size")
    assert digest(disk) == before


@pytest.mark.parametrize("value", ["1M", "1MiB", "1048576", "64M", "2G", "1.5M"])
def test_sizes_in_range_are_taken(tmp_path, value):
    out = tmp_path / "d.iso"
    configdrive("build", "--example", "-o", out, "--size", value)     # ISO 9660 ignores --size
    if value in ("1M", "1.5M"):
        need_tool("fsck.fat")
        vfat = tmp_path / "d.img"
        configdrive("build", "--example", "--format", "vfat", "-o", vfat, "--size", value)
        assert vfat.stat().st_size == int(float(value[:-1]) * (1 << 20))
        run("fsck.fat", "-n", vfat)


@pytest.mark.parametrize("value", ["0", "513", "-512", "4096.0", "inf", "8192", "0x200", ""])
def test_sector_size_is_one_of_four(tmp_path, value):
    out = tmp_path / "d.img"
    assert_usage_error(run_measured("build", "--format", "vfat", "-o", out, "--example", "--sector-size", value),
                       "--sector-size")
    assert not out.exists()


@pytest.mark.parametrize("spec", ["foo", "=x", "/etc/motd=", "", "=", "/etc/motd"])
@pytest.mark.parametrize("command", ["build", "inject", "deploy"])
def test_malformed_file_specs_are_usage_errors(tmp_path, disk, spec, command):
    before = digest(disk)
    target = {"build": ["-o", tmp_path / "d.iso"], "inject": [disk], "deploy": ["--device", disk]}[command]
    assert_usage_error(run_measured(command, *target, "--example", "--file", spec), "--file")
    assert digest(disk) == before
    assert not (tmp_path / "d.iso").exists()


# -- a closed stdout ----------------------------------------------------------------------

def _with_closed_stdout(argv) -> tuple[int, bytes]:
    """Run with stdout a pipe whose reader has already gone: the first write fails."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(argv, stdout=write_end, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                              timeout=60)
    finally:
        os.close(write_end)
    return proc.returncode, proc.stderr


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    path = tmp_path_factory.mktemp("drive") / "drive.iso"
    configdrive("build", "--example", "-o", path)
    return path


@pytest.mark.parametrize("args", [["inspect", "DRIVE"], ["inspect", "--json", "DRIVE"],
                                  ["build", "--example", "-o", "-"],
                                  ["build", "--example", "--format", "vfat", "-o", "-"],
                                  ["pack", "DRIVE"], ["unpack", "PACKED", "-o", "-"]],
                         ids=lambda a: " ".join(a))
def test_closed_stdout_ends_the_command_as_cat_ends(tmp_path, drive, args):
    packed = tmp_path / "packed.txt"
    packed.write_bytes(configdrive("pack", drive).stdout)
    argv = [EXE, *(str(drive) if a == "DRIVE" else str(packed) if a == "PACKED" else a for a in args)]
    status, stderr = _with_closed_stdout(argv)
    cat_status, cat_stderr = _with_closed_stdout(["cat", str(drive)])
    assert cat_status == -13 and status == cat_status, (status, stderr)
    assert stderr == b""


def test_head_reads_the_first_line_quietly(drive):
    proc = subprocess.run(["bash", "-c", f'"{EXE}" inspect "{drive}" | head -1; '
                                         f'"{EXE}" build --example -o - | head -c1 | wc -c; '
                                         'echo "${PIPESTATUS[@]}"'],
                          capture_output=True, timeout=60)
    lines = proc.stdout.decode().splitlines()
    assert lines[0] == f"source:    {drive}"
    assert lines[1] == "1"
    assert lines[2].split()[0] in ("0", "141")      # 141: killed by SIGPIPE, as cat would be
    assert proc.stderr == b""


# -- the admin password -------------------------------------------------------------------

def _admin_pass_on(image) -> str:
    need_tool("isoinfo")
    text = run("isoinfo", "-R", "-i", image, "-x", "/openstack/latest/meta_data.json").stdout
    return json.loads(text)["admin_pass"]


@pytest.mark.parametrize("content, password", [("s3cret\n", "s3cret"), ("s3cret", "s3cret"),
                                               ("with space \"q\"\r\nsecond line\n", 'with space "q"'),
                                               ("p\u00e4ss\n", "p\u00e4ss")], ids=range(4))
def test_admin_pass_file_and_stdin(tmp_path, content, password):
    passfile = tmp_path / "pass"
    passfile.write_text(content)
    image = tmp_path / "d.iso"
    proc = configdrive("build", "--uuid", UUID, "--admin-pass-file", passfile, "-o", image)
    assert _admin_pass_on(image) == password
    assert "warning" not in proc.stderr.decode()
    configdrive("build", "--uuid", UUID, "--admin-pass-file", "-", "-o", image, input=content.encode())
    assert _admin_pass_on(image) == password


def test_old_admin_pass_flag_works_and_warns(tmp_path):
    image = tmp_path / "d.iso"
    proc = configdrive("build", "--uuid", UUID, "--admin-pass", "s3cret", "-o", image)
    assert _admin_pass_on(image) == "s3cret"
    warning = [line for line in proc.stderr.decode().splitlines() if line.startswith("configdrive: warning:")]
    assert len(warning) == 1 and "--admin-pass" in warning[0] and "ps" in warning[0]


@pytest.mark.parametrize("content, names", [("", "no admin password"), ("\nsecond\n", "no admin password"),
                                            ("x" * 5000, "larger than 4096 bytes")], ids=range(3))
def test_unusable_admin_pass_files_are_refused(tmp_path, content, names):
    passfile = tmp_path / "pass"
    passfile.write_text(content)
    out = tmp_path / "d.iso"
    refused("build", "--uuid", UUID, "--admin-pass-file", passfile, "-o", out, names=f"{passfile}: ")
    assert names in refused("build", "--uuid", UUID, "--admin-pass-file", passfile, "-o", out)
    assert not out.exists()


@pytest.mark.parametrize("options", [["--meta-data", "-", "--admin-pass-file", "-"],
                                     ["--user-data", "-", "--ironic", "-"],
                                     ["--ssh-key", "-", "--network-data", "-"],
                                     ["--file", "/etc/x=-", "--user-data", "-"]], ids=range(4))
def test_only_one_input_reads_stdin(tmp_path, options):
    out = tmp_path / "d.iso"
    line = refused("build", "--uuid", UUID, *options, "-o", out, input=b"{}", names="only one input")
    assert options[0] in line and options[2] in line
    assert not out.exists()


def test_admin_pass_and_its_file_exclude_each_other(tmp_path):
    passfile = tmp_path / "pass"
    passfile.write_text("a\n")
    out = tmp_path / "d.iso"
    assert_usage_error(run_measured("build", "--uuid", UUID, "--admin-pass", "b", "--admin-pass-file", passfile,
                                    "-o", out), "--admin-pass-file")
    assert not out.exists()
