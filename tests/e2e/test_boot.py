"""End to end: a real Debian guest boots under QEMU with what configdrive wrote, and
cloud-init applies it: hostname, root's SSH key, a user-data runcmd, a static address
from network_data.json. Evidence comes from the guest's serial console and from its disk
read back with debugfs after it powered off; disks are laid out and checked with sfdisk
and sgdisk.

Boots come two ways: QEMU's direct kernel boot, and as a bare-metal node boots, through
UEFI firmware (OVMF) from a whole-disk GPT image that `configdrive deploy` wrote, on
512-byte and on 4096-byte-sector (4Kn) disks. Guests: Debian bookworm (cloud-init 22.4)
and trixie (a newer cloud-init), and bookworm with glean (from PyPI) instead of cloud-init. Each boot takes one to two minutes under TCG (guests are
built once and cached, see scripts/e2e-guest.sh and scripts/e2e-guest-uefi.sh). Run
with ``make e2e`` or ``make test``; a plain ``pytest`` leaves these out.

Every boot goes through the public API, as a datasource test author's would: the
``booted_guest`` fixture (configdrive.engines.pytest_plugin) or ``configdrive boot --json``; its
verdict (datasource, source device, hostname, keys, rendered network, read from the
guest's disk with debugfs) is checked beside the guest's own ``E2E key=value`` reports on
its serial console.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import uuid
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from configdrive import ConfigDriveError
from configdrive.engines.qemu import GUEST_MAC, OVMF_CODE
from configdrive.engines.verdict import Verdict
from conftest import configdrive, is_root, out, run
from guestvm import (KERNEL_CMDLINE, Guest, UefiDisks, build_glean_guest, build_guest,
                     build_uefi_disks)

pytestmark = pytest.mark.e2e
pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_KEY = ROOT / "configdrive" / "examples" / "example.pub"
# A boot to poweroff takes one to two minutes under TCG on 2 cores; this only bounds a hang.
BOOT_TIMEOUT = int(os.environ.get("E2E_BOOT_TIMEOUT", 480))
# Each boot's whole serial console, kept past the test's temporary directory (which other
# pytest runs on this machine prune) so that a failed boot can be read afterwards.
KEPT_LOGS = Path(os.environ.get("E2E_LOGS", ROOT / "tests" / ".cache" / "e2e-logs"))
# What each boot proved, printed at the end (tests/conftest.py).
PROVEN: list["Boot"] = []
REPORT_LINE = re.compile(r"^E2E ([\w-]+)(?:=(.*))?$")


def parse_reports(console: str) -> dict[str, list[str]]:
    """The guest's own ``E2E key=value`` lines (its per-boot report script)."""
    reports: dict[str, list[str]] = {}
    for line in console.splitlines():
        m = REPORT_LINE.match(line.strip())
        if m:
            reports.setdefault(m.group(1), []).append((m.group(2) or "").strip())
    return reports


@dataclass
class Boot:
    """One finished boot: the public API's verdict, and what the guest reported on its
    serial console."""

    name: str
    verdict: Verdict
    log: Path
    reports: dict[str, list[str]] = field(default_factory=dict)
    facts: list[str] = field(default_factory=list)

    @property
    def console(self) -> str:
        return self.verdict.console

    def one(self, key: str) -> str:
        values = self.reports.get(key, [])
        assert len(values) == 1, f"guest reported {key!r} {len(values)} times: {values}\n{self.tail()}"
        return values[0]

    def all(self, key: str) -> list[str]:
        return self.reports.get(key, [])

    def console_lines(self) -> list[str]:
        return [line.strip() for line in self.console.splitlines()]

    def tail(self, lines: int = 60) -> str:
        return (f"--- serial console (last lines; all of it in {self.log}) ---\n"
                + "\n".join(self.console.splitlines()[-lines:]))

    def proved(self, *facts: str) -> None:
        """Record, for the run's summary, what this boot showed (call after the asserts)."""
        if not any(booted is self for booted in PROVEN):
            PROVEN.append(self)
        self.facts.extend(facts)

    def summary(self) -> str:
        # The cloud-init guest prints "/usr/bin/cloud-init 22.4.2", the glean guest "1.25.1".
        consumer = "glean" if "glean-version" in self.reports else "cloud-init"
        version = " ".join(self.reports.get(f"{consumer}-version", ["?"])).split()[-1]
        return (f"{self.name} ({self.verdict.how}, {consumer} {version}) {self.verdict.seconds:.0f} s, "
                f"stopped by {self.verdict.stopped}: " + ", ".join(self.facts))


def report(write_line) -> None:
    """What each boot proved, for the terminal summary."""
    for booted in PROVEN:
        write_line(f"e2e: {booted.summary()}")


def _kept(name: str, console: Path) -> Path:
    kept = KEPT_LOGS / f"{name}.log"
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_bytes(console.read_bytes() if console.exists() else b"")
    return kept


def _finished(name: str, verdict: Verdict) -> Boot:
    result = Boot(name, verdict, _kept(name, verdict.console_log), parse_reports(verdict.console))
    assert "report-done" in result.reports, ("the guest powered off without its report "
                                             "(cloud-init or glean did not finish)\n" + result.tail())
    print(f"e2e: {name} ({verdict.how}) booted to poweroff in {verdict.seconds:.0f} s, "
          f"stopped by {verdict.stopped}", file=sys.stderr)
    return result


def direct_kernel(guest: Guest) -> dict:
    """The fixture's options for QEMU's direct kernel boot of ``guest``."""
    return {"kernel": guest.kernel, "initrd": guest.initrd, "append": KERNEL_CMDLINE}


def boot(booted_guest, name: str, image: Path, tmp_path: Path, **options) -> Boot:
    """``image`` booted through the ``booted_guest`` fixture (the public API); a boot that
    fails keeps its console in KEPT_LOGS and fails the test with the API's one line."""
    try:
        verdict = booted_guest(image, timeout=BOOT_TIMEOUT, **options)
    except ConfigDriveError as exc:
        consoles = sorted(tmp_path.glob("boot-*/console.log"), key=lambda p: p.stat().st_mtime)
        kept = _kept(name, consoles[-1]) if consoles else None
        raise AssertionError(f"booted_guest: {exc} (console kept in {kept})") from None
    return _finished(name, verdict)


def boot_cli(name: str, image: Path, tmp_path: Path, *options) -> Boot:
    """``image`` booted with ``configdrive boot --json`` (the public command)."""
    work = tmp_path / "boot-cli"
    proc = subprocess.run([str(Path(sys.executable).with_name("configdrive")), "boot", str(image),
                           "--json", "--keep-disks",
                           "--workdir", str(work), "--timeout", str(BOOT_TIMEOUT),
                           *map(str, options)], capture_output=True, text=True)
    if proc.returncode != 0:
        kept = _kept(name, work / "console.log")
        raise AssertionError(f"configdrive boot exited {proc.returncode}: {proc.stderr.strip()} "
                             f"(console kept in {kept})")
    return _finished(name, Verdict.from_json(json.loads(proc.stdout)))


def need_tools(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            pytest.skip(f"{tool} is not installed (scripts/install.sh installs it)")


@functools.cache
def built_guest(suite: str) -> Guest:
    if not is_root():
        pytest.skip("building the guest needs root (debootstrap, chroot)")
    need_tools("qemu-system-x86_64", "debootstrap", "debugfs", "sfdisk", "qemu-img")
    return build_guest(suite)


@pytest.fixture(scope="session")
def guest() -> Guest:
    return built_guest("bookworm")


# The Debian releases a scenario may run on, and the prefix of their boots' names
# (bookworm's boots keep their plain names).
SUITES = {"bookworm": "", "trixie": "trixie-"}


@functools.cache
def uefi_disks_of(guest: Guest, sector_size: int) -> UefiDisks:
    need_tools("grub-mkstandalone", "mkfs.fat", "mcopy", "sgdisk", "losetup")
    if not OVMF_CODE.exists():
        pytest.skip(f"{OVMF_CODE} is missing (scripts/install.sh installs ovmf)")
    return build_uefi_disks(guest, sector_size)


@dataclass
class Scenario:
    """One boot's drive content, distinct per scenario so that what the guest shows can
    only have come from this drive (the address is not the one QEMU's DHCP would give)."""

    name: str
    dir: Path
    hostname: str
    address: str
    key: str
    marker: str

    @classmethod
    def make(cls, tmp_path: Path, name: str, address: str) -> "Scenario":
        key_body = EXAMPLE_KEY.read_text().split()[:2]
        sc = cls(name=name, dir=tmp_path, hostname=f"e2e-{name}.example.test", address=address,
                 key=" ".join(key_body + [f"e2e-{name}@configdrive"]),
                 marker=f"CONFIGDRIVE-E2E-RUNCMD-{name}")
        (tmp_path / "meta_data.json").write_text(json.dumps({
            "uuid": str(uuid.uuid5(uuid.NAMESPACE_DNS, sc.hostname)),
            "name": f"e2e-{name}", "hostname": sc.hostname,
        }))
        (tmp_path / "key.pub").write_text(sc.key + "\n")
        (tmp_path / "user_data").write_text(
            "#cloud-config\nruncmd:\n"
            f"  - [sh, -c, 'echo {sc.marker} > /dev/console']\n")
        (tmp_path / "network_data.json").write_text(json.dumps({
            "links": [{"id": "eth0", "type": "phy", "ethernet_mac_address": GUEST_MAC}],
            "networks": [{"id": "net0", "link": "eth0", "type": "ipv4", "ip_address": address,
                          "netmask": "255.255.255.0",
                          "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0",
                                      "gateway": "10.0.2.2"}]}],
            "services": [],
        }))
        return sc

    @property
    def content_options(self) -> list:
        """The drive content as `configdrive build` (and deploy) options."""
        return ["--meta-data", self.dir / "meta_data.json", "--user-data", self.dir / "user_data",
                "--network-data", self.dir / "network_data.json", "--ssh-key", self.dir / "key.pub"]

    @property
    def content(self) -> dict:
        """The same drive content as the fixture's keywords."""
        return {"meta_data": json.loads((self.dir / "meta_data.json").read_text()),
                "user_data": (self.dir / "user_data").read_text(),
                "network_data": json.loads((self.dir / "network_data.json").read_text()),
                "ssh_keys": [self.key]}

    @property
    def short_hostname(self) -> str:
        return self.hostname.split(".")[0]


def build_drive(sc: Scenario, fmt: str) -> Path:
    drive = sc.dir / f"drive.{fmt}"
    configdrive("build", "--format", fmt, "-o", drive, *sc.content_options,
                env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"})
    return drive


def partitions(disk: Path) -> list[dict]:
    """The disk's partition table as sfdisk reads it (start and size in sectors)."""
    return json.loads(out("sfdisk", "--json", disk))["partitiontable"]["partitions"]


def partition_named(disk: Path, name: str) -> tuple[int, dict]:
    for part in partitions(disk):
        if part.get("name") == name:
            return int(re.search(r"(\d+)$", part["node"]).group(1)), part
    raise AssertionError(f"{disk} has no partition named {name}: {partitions(disk)}")


def virtual_size(image: Path) -> int:
    return json.loads(out("qemu-img", "info", "--output=json", image))["virtual-size"]


def blank_disk_larger_than(image: Path, path: Path, extra_bytes: int = 256 << 20) -> Path:
    with open(path, "wb") as f:
        f.truncate(virtual_size(image) + extra_bytes)
    return path


def assert_cloud_init_applied(result: Boot, sc: Scenario, source: str, root_offset: int,
                              datasource_name: str = "DataSourceConfigDrive",
                              source_key: str = "source") -> None:
    """What a user checks after first boot: on the console (the guest's own report), and
    in the verdict the public API read from the guest's disk with debugfs."""
    reported_version = result.one("cloud-init-version")
    assert re.fullmatch(r"\S*cloud-init \d+\.\d+(\.\d+)?", reported_version)
    datasource = result.one("datasource")
    assert datasource.startswith(datasource_name), datasource + "\n" + result.tail()
    assert f"[{source_key}={source}]" in datasource, datasource   # NoCloud says seed=
    assert result.one("hostname") == sc.short_hostname, result.tail()
    assert sc.key in result.all("root-key"), result.tail()
    # The runcmd echoes its marker alone on a line (a quote of the user data would not be).
    assert sc.marker in result.console_lines(), f"user-data runcmd did not run\n{result.tail()}"
    assert f"eth0 {sc.address}/24" in result.all("address"), result.tail()

    # The verdict agrees with the guest's own report, and read the files from its disk.
    v = result.verdict
    assert v.cloud_init_version == reported_version.split()[-1], (v.cloud_init_version, reported_version)
    assert v.datasource == datasource and v.source == source, (v.datasource, v.source)
    assert v.status["v1"]["datasource"] == datasource, v.status
    assert v.root_offset == root_offset, (v.root_offset, v.unread)
    assert v.hostname == sc.short_hostname, v.hostname
    assert sc.key in v.keys["/root/.ssh/authorized_keys"], v.keys
    # cloud-init's "eni" renderer (ifupdown), Debian's first choice.
    net = v.network.get("/etc/network/interfaces.d/50-cloud-init")
    assert net is not None, f"cloud-init rendered no network configuration: {sorted(v.network)}"
    assert re.search(r"^iface eth0 inet static$", net, re.M), net
    assert re.search(rf"^\s*address {re.escape(sc.address)}(/24)?$", net, re.M), net
    result.proved(f"drive at {source}", "hostname", "root key", "runcmd",
                  f"static {sc.address} (console and ifupdown file)")


def test_iso_drive_as_cdrom(guest, tmp_path):
    """`configdrive boot --attach cdrom`: an IDE CD-ROM, as nova attaches a config drive
    on x86 by default (the ISO built by `configdrive build`)."""
    sc = Scenario.make(tmp_path, "iso", "10.0.2.41")
    drive = build_drive(sc, "iso")
    result = boot_cli(sc.name, guest.root_fs, tmp_path, "--drive", drive, "--attach", "cdrom",
                      "--kernel", guest.kernel, "--initrd", guest.initrd, "--append", KERNEL_CMDLINE)
    assert_cloud_init_applied(result, sc, "/dev/sr0", 0)


def test_nocloud_seed_as_cdrom(guest, booted_guest, tmp_path):
    """The same content as a NoCloud seed (label cidata, meta-data, user-data, a version 2
    network-config converted from network_data.json), read by cloud-init's NoCloud."""
    sc = Scenario.make(tmp_path, "nocloud", "10.0.2.48")
    result = boot(booted_guest, sc.name, guest.root_fs, tmp_path, attach="nocloud",
                  **sc.content, **direct_kernel(guest))
    assert_cloud_init_applied(result, sc, "/dev/sr0", 0, datasource_name="DataSourceNoCloud",
                              source_key="seed")


def test_vfat_drive_as_disk(guest, booted_guest, tmp_path):
    sc = Scenario.make(tmp_path, "vfat", "10.0.2.42")
    result = boot(booted_guest, sc.name, guest.root_fs, tmp_path, attach="disk", format="vfat",
                  **sc.content, **direct_kernel(guest))
    assert_cloud_init_applied(result, sc, "/dev/vdb", 0)


def test_deploy_fills_the_config_v2_partition(guest, booted_guest, tmp_path):
    """attach config-partition: the image deployed by `configdrive deploy`'s own code onto
    a scratch disk, the drive into the image's config-v2 partition."""
    sc = Scenario.make(tmp_path, "deploy", "10.0.2.43")
    result = boot(booted_guest, sc.name, guest.disk_with_config_partition, tmp_path,
                  attach="config-partition", **sc.content, **direct_kernel(guest))
    disk = result.verdict.disk
    number, _ = partition_named(disk, "config-v2")
    assert number == 2, "deploy must use the image's own config-v2 partition"
    assert_cloud_init_applied(result, sc, f"/dev/vda{number}", partitions(disk)[0]["start"] * 512)


def test_deploy_makes_a_config_partition_at_the_end(guest, tmp_path):
    """`configdrive boot --attach config-partition` of an image without one: deploy makes
    it at the end of the scratch disk."""
    sc = Scenario.make(tmp_path, "deploy-new", "10.0.2.44")
    result = boot_cli(sc.name, guest.disk_without_config_partition, tmp_path,
                      "--attach", "config-partition", *sc.content_options,
                      "--kernel", guest.kernel, "--initrd", guest.initrd, "--append", KERNEL_CMDLINE)
    target = result.verdict.disk
    parts = partitions(target)
    number, config = partition_named(target, "config-v2")
    assert config == parts[-1], parts
    disk_sectors = target.stat().st_size // 512
    # At the end: nothing but the backup GPT (33 sectors) and alignment after it.
    assert config["start"] + config["size"] > disk_sectors - 2048 - 34, (config, disk_sectors)
    assert_cloud_init_applied(result, sc, f"/dev/vda{number}", parts[0]["start"] * 512)


def test_legacy_injection(guest, booted_guest, tmp_path):
    image = tmp_path / "guest.raw"
    run("qemu-img", "convert", "-f", "qcow2", "-O", "raw", guest.disk_without_config_partition, image)
    key = "ssh-ed25519 " + EXAMPLE_KEY.read_text().split()[1] + " e2e-inject@configdrive"
    (tmp_path / "key.pub").write_text(key + "\n")
    (tmp_path / "injected.txt").write_text("injected by configdrive inject\n")
    configdrive("inject", image, "--ssh-key", tmp_path / "key.pub",
                "--file", f"/etc/configdrive-e2e/injected.txt={tmp_path / 'injected.txt'}")
    # No config drive at all (attach none): cloud-init falls back to DataSource None, and
    # what the guest shows can only have come from the injection.
    result = boot(booted_guest, "inject", image, tmp_path, attach="none", **direct_kernel(guest))
    assert result.one("datasource").startswith("DataSourceNone"), result.tail()
    assert result.verdict.datasource.startswith("DataSourceNone"), result.verdict.datasource
    assert key in result.all("root-key"), result.tail()
    assert "/etc/configdrive-e2e/injected.txt injected by configdrive inject" in result.all("file")
    assert result.verdict.root_offset == partitions(image)[0]["start"] * 512
    assert key in result.verdict.keys["/root/.ssh/authorized_keys"], result.verdict.keys
    result.proved("no drive: DataSourceNone", "injected root key (console and disk)", "injected file")


# --- Booted as bare metal boots: UEFI firmware, whole-disk GPT images, 4Kn disks ---------

@contextlib.contextmanager
def attached(disk: Path, sector_size: int):
    """``disk`` as a loop device with ``sector_size``-byte logical sectors: what the kernel
    (and so deploy, sfdisk and sgdisk) sees of a disk with such sectors."""
    loop = out("losetup", "--show", "-f", "--sector-size", str(sector_size), disk).strip()
    try:
        yield loop
    finally:
        run("losetup", "-d", loop)


def gpt_tail(disk: Path, sector_size: int) -> bytes:
    """The backup GPT: the partition entries (32 sectors' worth at 512, 4 at 4096) and the
    header in the disk's last sector."""
    size = disk.stat().st_size
    with open(disk, "rb") as f:
        f.seek(size - 16384 - sector_size)
        return f.read()


def assert_booted_by_firmware(result: Boot) -> None:
    """The line our GRUB prints: the firmware found the EFI system partition in the GPT and
    ran \\EFI\\BOOT\\BOOTX64.EFI from it, and GRUB found the root ext4 by its UUID."""
    # (GRUB's console output comes wrapped in terminal colour codes: search, not match.)
    roots = re.findall(r"E2E-GRUB root=(\S+)", result.console)
    assert roots == ["hd0,gpt2"], f"GRUB from the EFI system partition did not run\n{result.tail()}"


def deploy_uefi(disks: UefiDisks, sc: Scenario, image: Path, target: Path) -> tuple[int, dict, dict]:
    """Deploy ``image`` onto ``target`` through a loop device with the disks' sector size
    (deploy takes the sector size from the kernel, as on a real disk). Returns the config
    partition's number and sfdisk's entries for it and for root (in those sectors)."""
    with attached(target, disks.sector_size) as device:
        configdrive("deploy", "--device", device, "--image", image, *sc.content_options)
        verify = out("sgdisk", "-v", device)
        assert "No problems found" in verify, verify
        number, config = partition_named(Path(device), "config-v2")
        _, root = partition_named(Path(device), "root")
    return number, config, root


def boot_uefi(booted_guest, disks: UefiDisks, sc: Scenario, image: Path, number: int | None,
              root_offset: int | None, **options) -> Boot:
    """Boot ``image`` alone through OVMF (its drive already in it, or deployed by the
    fixture with ``attach="config-partition"``) and check what cloud-init did; ``number``
    and ``root_offset`` None: read from the disk the boot deployed."""
    options.setdefault("attach", "none")
    result = boot(booted_guest, sc.name, image, sc.dir, uefi=True, sector_size=disks.sector_size,
                  **options)
    assert_booted_by_firmware(result)
    if number is None:
        number, _ = partition_named(result.verdict.disk, "config-v2")
        root_offset = partition_named(result.verdict.disk, "root")[1]["start"] * disks.sector_size
    assert_cloud_init_applied(result, sc, f"/dev/vda{number}", root_offset)
    return result


# trixie boots this one only: its ISO 9660 drive in a partition is the drive deploy writes,
# and one more boot of it (~2 minutes under load) would take make test past 30 minutes.
@pytest.mark.parametrize("suite, address", [("bookworm", "10.0.2.45"), ("trixie", "10.0.2.52")])
def test_uefi_deploy_fills_the_config_v2_partition(suite, address, booted_guest, tmp_path):
    """The fixture's attach="config-partition" under UEFI, as ironic leaves a node: the
    whole-disk image deployed onto a scratch disk, the drive into its own config-v2."""
    guest = built_guest(suite)
    disks = uefi_disks_of(guest, 512)
    sc = Scenario.make(tmp_path, SUITES[suite] + "uefi", address)
    result = boot_uefi(booted_guest, disks, sc, disks.with_config_partition, None, None,
                       attach="config-partition", **sc.content)
    target = result.verdict.disk
    number, config = partition_named(target, "config-v2")
    assert number == 3, "deploy must use the image's own config-v2 partition"
    verify = out("sgdisk", "-v", target)
    assert "No problems found" in verify, verify
    fs = out("blkid", "-p", "-O", str(config["start"] * 512), "-o", "value", "-s", "TYPE", target)
    assert fs.strip() == "iso9660", fs
    result.proved("OVMF booted GRUB from the image's EFI system partition")


def test_uefi_firmware_accepts_the_moved_backup_gpt(guest, booted_guest, tmp_path):
    """A target 1 GiB and 1.5 MiB larger than the image (not a whole number of MiB): deploy
    moves the backup GPT to the target's end and makes config-v2 before it. OVMF checks the
    backup header and entries against the primary at every boot and rewrites them when they
    are wrong (edk2 PartitionDxe), so a tail the boot left byte-identical, sgdisk finding
    no problem, is a tail the firmware accepted."""
    sc = Scenario.make(tmp_path, "uefi-resized", "10.0.2.46")
    uefi_disks = uefi_disks_of(guest, 512)
    image = uefi_disks.without_config_partition
    target = blank_disk_larger_than(image, tmp_path / "target.raw", (1 << 30) + (3 << 19))
    number, config, root = deploy_uefi(uefi_disks, sc, image, target)
    last_lba = target.stat().st_size // 512 - 1
    assert config["start"] + config["size"] - 1 <= last_lba - 33, (config, last_lba)
    assert config["start"] + config["size"] > last_lba - 33 - 2048, "config-v2 is not at the end"
    tail = gpt_tail(target, 512)
    result = boot_uefi(booted_guest, uefi_disks, sc, target, number, root["start"] * 512)
    # The guest ran on an overlay of the target: the verdict's disk is what it left.
    after = result.verdict.disk
    assert after.stat().st_size == target.stat().st_size
    assert gpt_tail(after, 512) == tail, "the firmware rewrote the backup GPT deploy wrote"
    verify = out("sgdisk", "-v", after)
    assert "No problems found" in verify, verify
    result.proved(f"config-v2 made at the end of a {target.stat().st_size}-byte disk",
                  "backup GPT at its last LBA, left as written by the firmware")


def test_4kn_uefi_deploy_makes_a_vfat_config_partition(guest, booted_guest, tmp_path):
    """The image built for 4096-byte sectors, deployed onto a 4Kn disk: deploy makes the
    config partition and writes a vfat drive with 4096-byte sectors (ISO 9660 cannot be
    mounted there); the guest sees the disk as 4Kn, firmware and kernel alike. The GPT
    header is at byte 4096 only: a reader assuming 512-byte sectors finds no partition, so
    GRUB finding the root partition and the kernel mounting it show both read 4Kn."""
    sc = Scenario.make(tmp_path, "uefi-4kn", "10.0.2.47")
    uefi_disks_4kn = uefi_disks_of(guest, 4096)
    image = uefi_disks_4kn.without_config_partition
    target = blank_disk_larger_than(image, tmp_path / "target.raw")
    number, config, root = deploy_uefi(uefi_disks_4kn, sc, image, target)
    # What deploy wrote, read by dosfstools and mtools: a clean FAT with 4096-byte sectors.
    drive = tmp_path / "config-partition.img"
    with open(target, "rb") as src, open(drive, "wb") as dst:
        src.seek(config["start"] * 4096)
        dst.write(src.read(config["size"] * 4096))
    fsck = out("fsck.fat", "-n", "-v", drive)
    assert re.search(r"^\s*4096 bytes per logical sector$", fsck, re.M), fsck
    assert "META_DATA.JSON" in out("mdir", "-i", drive, "::/openstack/latest").upper()
    result = boot_uefi(booted_guest, uefi_disks_4kn, sc, target, number, root["start"] * 4096)
    result.proved("4Kn disk (firmware, GRUB, kernel)", "vfat drive with 4096-byte sectors")


# --- glean instead of cloud-init ---------------------------------------------------------

@pytest.fixture(scope="session")
def glean_guest(guest) -> Guest:
    return build_glean_guest(guest)


def test_glean_reads_the_deployed_config_v2_partition(glean_guest, booted_guest, tmp_path):
    """glean, the other consumer of config drives (diskimage-builder's simple-init images
    use it instead of cloud-init), set up by its own glean-install: the image deployed
    into its own config-v2 partition, as on bare metal (deploy writes ISO 9660 there).
    At boot glean-early.service finds the drive by its label config-2 with blkid, mounts
    it on /mnt/config, names the host and writes root's keys from meta_data.json; glean's
    udev rule starts glean@eth0, which writes /etc/network/interfaces.d/eth0.cfg from
    network_data.json and brings eth0 up with ifup. The guest has no cloud-init, and the
    address is not the one QEMU's DHCP would give, so what it shows is glean's doing."""
    sc = Scenario.make(tmp_path, "glean", "10.0.2.49")
    # No cloud-init to wait for: the guest powers off after its report (wait="poweroff").
    result = boot(booted_guest, "glean", glean_guest.disk_with_config_partition, tmp_path,
                  attach="config-partition", wait="poweroff", **sc.content,
                  **direct_kernel(glean_guest))
    target = result.verdict.disk
    number, _ = partition_named(target, "config-v2")
    assert number == 2, "deploy must use the image's own config-v2 partition"
    assert result.verdict.root_offset == partitions(target)[0]["start"] * 512

    assert "cloud-init-present" not in result.reports, result.all("cloud-init-present")
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?", result.one("glean-version")), result.tail()
    assert result.all("unit") == ["glean-early.service active success",
                                  "glean@eth0.service active success"], result.tail()
    assert result.one("config-mount") == f"/dev/vda{number} iso9660", result.tail()
    # glean names the host from meta_data.json's "name" (cloud-init from "hostname"); the
    # scenario's name is its short hostname.
    assert result.one("hostname") == sc.short_hostname, result.tail()
    assert sc.key in result.all("root-key"), result.tail()
    # The only address: the static one (no DHCP fallback), with the route's gateway.
    assert result.all("address") == [f"eth0 {sc.address}/24"], result.tail()
    assert result.one("default-route").startswith("default via 10.0.2.2 dev eth0"), result.tail()

    assert result.verdict.hostname == sc.short_hostname, result.verdict.hostname
    assert result.verdict.cloud_init_version is None and "status.json" in result.verdict.unread
    net = result.verdict.read_file("/etc/network/interfaces.d/eth0.cfg")
    assert net is not None, "glean wrote no /etc/network/interfaces.d/eth0.cfg"
    assert re.search(r"^iface eth0 inet static$", net, re.M), net
    assert re.search(rf"^\s*address {re.escape(sc.address)}$", net, re.M), net
    assert re.search(r"^\s*netmask 255\.255\.255\.0$", net, re.M), net
    assert re.search(r"^\s*gateway 10\.0\.2\.2$", net, re.M), net
    result.proved(f"glean-early mounted config-2 at /dev/vda{number} (iso9660)",
                  "hostname from name", "root key", "no cloud-init",
                  f"static {sc.address} and default route on eth0 (ip and glean's ifupdown file)")


# --- The datasource author's test file of docs/testing.md ---------------------------------

def boot_page_test_source() -> str:
    """The complete booted_guest test file docs/testing.md shows datasource authors."""
    text = (ROOT / "docs/testing.md").read_text()
    return re.search(r"A complete test file, as a datasource author writes it.*?\n\n```python\n(.*?)```",
                     text, re.S).group(1)


def test_the_testing_page_boot_file_passes(guest, pytester, monkeypatch):
    """The file as its author runs it: pytest in a separate process, the fixture from the
    installed plugin, the image from CONFIGDRIVE_BOOT_IMAGE (the suite's bookworm UEFI
    whole-disk image, which boots by itself as a cloud image does)."""
    image = uefi_disks_of(guest, 512).without_config_partition
    pytester.makepyfile(test_my_datasource=boot_page_test_source())
    monkeypatch.setenv("CONFIGDRIVE_BOOT_IMAGE", str(image))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v", "-rs")
    result.assert_outcomes(passed=2)
