"""`configdrive boot` refusing and failing in one line, in seconds and without a guest:
missing QEMU (found through PATH), bad command lines, and tiny boot sectors that stand for
images which never boot, never start cloud-init, or finish with a disk we cannot read.
The real boots are in tests/e2e/test_boot.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import configdrive

EXE = Path(sys.executable).with_name("configdrive")


def need_qemu() -> None:
    for tool in ("qemu-system-x86_64", "qemu-img"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/install.sh installs it)")


def boot_sector(path: Path, text: str, then: str) -> Path:
    """A raw disk whose MBR boot code writes ``text`` to the first serial port, then
    resets the machine (``then="reset"``: QEMU exits under -no-reboot, as at a power-off)
    or spins (``then="hang"``)."""
    msg = text.encode() + b"\0"
    code = bytes([0xFC, 0x31, 0xC0, 0x8E, 0xD8,          # cld; ds = 0
                  0xBA, 0xF8, 0x03,                      # dx = 0x3f8 (COM1)
                  0xBE, 0x19, 0x7C,                      # si = the text, at 0x7c19
                  0xAC, 0x84, 0xC0, 0x74, 0x03,          # lodsb; done at NUL
                  0xEE, 0xEB, 0xF8])                     # out dx, al; loop
    code += bytes([0xB0, 0xFE, 0xE6, 0x64]) if then == "reset" else bytes([0x90] * 4)  # 8042 reset
    code += bytes([0xEB, 0xFE])                          # spin
    assert len(code) == 0x19
    sector = (code + msg).ljust(510, b"\0") + b"\x55\xaa"
    with open(path, "wb") as f:
        f.write(sector)
        f.truncate(8 << 20)
    return path


def boot(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(EXE), "boot", *map(str, args)], capture_output=True, text=True, env=env)


def one_line_error(proc: subprocess.CompletedProcess, status: int = 1) -> str:
    assert proc.returncode == status, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


FINISHED = ("Cloud-init v. 99.1 running 'init-local' at Mon, 07 Dec 2026 11:00:48 +0000. Up 1.0 seconds.\r\n"
            "Cloud-init v. 99.1 finished at Mon, 07 Dec 2026 11:01:19 +0000. "
            "Datasource DataSourceNone.  Up 2.00 seconds\r\n")


def test_no_qemu_names_the_package(tmp_path):
    image = tmp_path / "disk.raw"
    image.write_bytes(b"\0" * 4096)
    empty = tmp_path / "bin"
    empty.mkdir()
    line = one_line_error(boot(image, "--hostname", "x", env={**os.environ, "PATH": str(empty)}))
    assert line.startswith("configdrive: error: qemu-img is not installed (Debian package qemu-utils)"), line
    need_qemu()
    (empty / "qemu-img").symlink_to(shutil.which("qemu-img"))
    line = one_line_error(boot(image, "--hostname", "x", env={**os.environ, "PATH": str(empty)}))
    assert "qemu-system-x86_64 is not installed (Debian package qemu-system-x86)" in line, line


@pytest.mark.parametrize("args", [["--attach", "floppy"], ["--sector-size", "1024"], ["--timeout", "0"],
                                  ["--memory", "12M"], []])
def test_bad_command_lines_exit_2(tmp_path, args):
    proc = boot(*(args + [tmp_path / "x.raw"] if args else []))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("args, says", [
    (["--hostname", "x", "--drive", "d.iso"], "--drive is a ready drive: give it or drive content options"),
    ([], "--attach cdrom: give --drive DRIVE or drive content options"),
    (["--attach", "none", "--drive", "d.iso"], "attach none boots the image as it is"),
])
def test_what_the_drive_options_refuse(tmp_path, args, says):
    image = tmp_path / "disk.raw"
    image.write_bytes(b"\0" * 4096)
    (tmp_path / "d.iso").write_bytes(b"\0" * 4096)
    proc = subprocess.run([str(EXE), "boot", str(image), *args], capture_output=True, text=True, cwd=tmp_path)
    assert says in one_line_error(proc)


def test_a_missing_image_and_a_vmdk(tmp_path):
    need_qemu()
    assert "no such image file" in one_line_error(boot(tmp_path / "none.qcow2", "--attach", "none"))
    vmdk = tmp_path / "disk.vmdk"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", vmdk, "16M"], check=True)
    line = one_line_error(boot(vmdk, "--attach", "none"))
    assert "a vmdk image; boot takes qcow2 or raw" in line, line


def test_an_image_that_never_boots_is_cut_at_the_timeout(tmp_path):
    need_qemu()
    image = boot_sector(tmp_path / "disk.raw", "stuck in the boot loader", "hang")
    # a work directory longer than a Unix socket's path may be (QMP's socket lives elsewhere)
    work = tmp_path / ("w" * 120)
    line = one_line_error(boot(image, "--attach", "none", "--accel", "tcg", "--timeout", "4",
                               "--workdir", work))
    assert "no boot: cloud-init never started within 4 s" in line, line
    assert line.endswith("its last lines: stuck in the boot loader"), line
    assert (work / "console.log").read_text() == "stuck in the boot loader"
    assert image.read_bytes()[510:512] == b"\x55\xaa"


def test_a_guest_that_stops_before_cloud_init(tmp_path):
    need_qemu()
    image = boot_sector(tmp_path / "disk.raw", "no cloud-init in this image\r\n", "reset")
    line = one_line_error(boot(image, "--attach", "none", "--accel", "tcg", "--timeout", "60"))
    assert "cloud-init never started: the guest powered off" in line, line
    assert line.endswith("its last lines: no cloud-init in this image"), line


def test_cloud_init_that_never_finishes(tmp_path):
    need_qemu()
    image = boot_sector(tmp_path / "disk.raw", FINISHED.split("\r\n")[0] + "\r\n", "hang")
    line = one_line_error(boot(image, "--attach", "none", "--accel", "tcg", "--timeout", "4"))
    assert "cloud-init started but did not finish within 4 s" in line, line


def test_a_root_filesystem_we_cannot_read_is_named(tmp_path):
    """The guest says cloud-init finished, but its disk holds no ext filesystem: the
    verdict has what the console said and names the root filesystem as unread."""
    need_qemu()
    image = boot_sector(tmp_path / "disk.raw", FINISHED, "reset")
    before = image.read_bytes()
    proc = boot(image, "--attach", "none", "--accel", "tcg", "--timeout", "60", "--json")
    assert proc.returncode == 0, proc.stderr
    verdict = json.loads(proc.stdout)
    assert verdict["cloud_init_version"] == "99.1"
    assert verdict["datasource"] == "DataSourceNone"
    assert verdict["stopped"] == "poweroff" and verdict["accel"] == "tcg"
    assert "no ext2/3/4 filesystem on the disk" in verdict["unread"]["root filesystem"]
    assert verdict["hostname"] is None and verdict["status"] is None
    assert Path(verdict["console_log"]).read_text().startswith("Cloud-init v. 99.1 running")
    assert verdict["disk"] is None   # removed without --keep-disks
    assert image.read_bytes() == before, "the image itself was written"


def test_a_drive_cloud_init_did_not_take_is_refused(tmp_path):
    """cloud-init finished on DataSource None with a config drive attached: refused in one
    line, naming what it chose and where its log is (here: none could be read)."""
    need_qemu()
    image = boot_sector(tmp_path / "disk.raw", FINISHED, "reset")
    line = one_line_error(boot(image, "--hostname", "node-7", "--accel", "tcg", "--timeout", "60"))
    assert ("cloud-init did not take the drive: it chose DataSourceNone, not DataSourceConfigDrive"
            in line), line


def test_the_help_shows_examples():
    out = configdrive("boot", "--help").stdout.decode()
    assert "configdrive boot debian-12-genericcloud-amd64.qcow2" in out and "--attach" in out


def test_the_verdict_as_printed(tmp_path):
    """Without --json: a line for the boot, then one per finding, the unread named."""
    need_qemu()
    image = boot_sector(tmp_path / "disk.raw", FINISHED, "reset")
    proc = boot(image, "--attach", "none", "--accel", "tcg", "--timeout", "60", "--workdir", tmp_path / "w")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"booted {image} (BIOS, 512-byte sectors, drive none, tcg) in ")
    assert lines[0].endswith("stopped by poweroff, cloud-init 99.1"), lines[0]
    assert "datasource: DataSourceNone" in lines and "hostname: -" in lines, lines
    assert f"console: {tmp_path / 'w' / 'console.log'}" in lines, lines
    assert any(line.startswith("unread: root filesystem: no ext2/3/4 filesystem") for line in lines), lines


def test_a_guest_disk_with_many_homes_costs_a_bounded_number_of_reads(tmp_path):
    """Every home is one debugfs run, and the guest's disk decides how many there are: the
    first MAX_NAMES are read, the count is named in unread. The disk is an ext4 made by
    mkfs.ext4 -d (e2fsprogs), as a guest's root would be."""
    from configdrive.engines.verdict import MAX_NAMES, Verdict, read_guest
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text("ID=debian\n")
    (root / "etc" / "hostname").write_text("node-7\n")
    for n in range(MAX_NAMES + 36):
        (root / "home" / f"user{n:03d}" / ".ssh").mkdir(parents=True)
        (root / "home" / f"user{n:03d}" / ".ssh" / "authorized_keys").write_text(f"ssh-ed25519 AAAA{n} u\n")
    disk = tmp_path / "root.ext4"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", root, disk, "16M"], check=True)
    console = tmp_path / "console.log"
    console.write_text("")
    verdict = Verdict(console_log=console, seconds=0.0, accel="tcg", stopped="poweroff", how="test")
    read_guest(verdict, disk, None, journal=False)
    assert verdict.hostname == "node-7"
    assert len(verdict.keys) == MAX_NAMES
    assert verdict.keys["/home/user000/.ssh/authorized_keys"] == ["ssh-ed25519 AAAA0 u"]
    assert verdict.unread["/home"].startswith(f"{MAX_NAMES + 36} entries")


def test_the_console_is_read_once_as_it_grows(tmp_path):
    """The console is read from where the last poll stopped, the tail kept for the error
    lines is bounded, and cloud-init's final line cut between two polls is still found."""
    from configdrive.engines.qemu import FINISHED, _Growing
    console = tmp_path / "console.log"
    growing = _Growing(console)
    assert growing.poll() == ("", "")                      # QEMU has not made it yet
    with open(console, "ab", buffering=0) as fp:
        fp.write(b"x" * (200 << 10) + b"\r\n")
        tail, new = growing.poll()
        assert len(tail) == _Growing.TAIL and len(new) == (200 << 10) + 1
        fp.write(b"Cloud-init v. 22.4.2 finished at Mon, 07 Dec 2026 10:00:00 +0000. Data")
        assert FINISHED.search(growing.poll()[1]) is None
        fp.write(b"source DataSourceConfigDrive [net,ver=2][source=/dev/sr0].  Up 9.50 seconds\n")
        tail, new = growing.poll()
        assert len(new) < _Growing.TAIL + 200                 # the tail and the new line, not the file
        assert FINISHED.search(new).group(2).startswith("DataSourceConfigDrive")
    growing.close()
