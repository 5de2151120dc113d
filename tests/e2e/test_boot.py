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
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import configdrive, is_root, out, run
from guestvm import (GUEST_MAC, OVMF_CODE, Boot, Guest, UefiDisks, boot, build_glean_guest,
                     build_guest, build_uefi_disks, read_guest_file)

pytestmark = pytest.mark.e2e

EXAMPLE_KEY = (Path(__file__).resolve().parents[2] / "configdrive" / "examples" / "example.pub")


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


def assert_cloud_init_applied(result: Boot, sc: Scenario, root_image: Path, root_offset: int,
                              source: str, datasource_name: str = "DataSourceConfigDrive",
                              source_key: str = "source") -> None:
    """What a user checks after first boot, on the console and on the disk."""
    assert re.fullmatch(r"\S*cloud-init \d+\.\d+(\.\d+)?", result.one("cloud-init-version"))
    datasource = result.one("datasource")
    assert datasource.startswith(datasource_name), datasource + "\n" + result.tail()
    assert f"[{source_key}={source}]" in datasource, datasource   # NoCloud says seed=
    assert result.one("hostname") == sc.short_hostname, result.tail()
    assert sc.key in result.all("root-key"), result.tail()
    # The runcmd echoes its marker alone on a line (a quote of the user data would not be).
    assert sc.marker in result.console_lines(), f"user-data runcmd did not run\n{result.tail()}"
    assert f"eth0 {sc.address}/24" in result.all("address"), result.tail()

    hostname = read_guest_file(root_image, "/etc/hostname", root_offset)
    assert hostname is not None and hostname.strip() == sc.short_hostname
    keys = read_guest_file(root_image, "/root/.ssh/authorized_keys", root_offset)
    assert keys is not None and sc.key in keys.splitlines()
    # cloud-init's "eni" renderer (ifupdown), Debian's first choice.
    net = read_guest_file(root_image, "/etc/network/interfaces.d/50-cloud-init", root_offset)
    assert net is not None, "cloud-init rendered no network configuration"
    assert re.search(r"^iface eth0 inet static$", net, re.M), net
    assert re.search(rf"^\s*address {re.escape(sc.address)}(/24)?$", net, re.M), net
    result.proved(f"drive at {source}", "hostname", "root key", "runcmd",
                  f"static {sc.address} (console and ifupdown file)")


def fresh_root_fs(guest: Guest, tmp_path: Path) -> Path:
    """A private copy of the guest's root filesystem (sparse: a boot writes little)."""
    copy = tmp_path / "root.ext4"
    run("cp", "--sparse=always", guest.root_fs, copy)
    return copy


def test_iso_drive_as_cdrom(guest, tmp_path):
    sc = Scenario.make(tmp_path, "iso", "10.0.2.41")
    drive = build_drive(sc, "iso")
    root = fresh_root_fs(guest, tmp_path)
    # An IDE CD-ROM, as nova attaches a config drive on x86 by default.
    result = boot(guest, root, tmp_path / f"console-{sc.name}.log",
                  extra=["-drive", f"file={drive},format=raw,if=ide,media=cdrom,readonly=on"])
    assert_cloud_init_applied(result, sc, root, 0, source="/dev/sr0")


def test_nocloud_seed_as_cdrom(guest, tmp_path):
    """The same content as a NoCloud seed (label cidata, meta-data, user-data, a version 2
    network-config converted from network_data.json), read by cloud-init's NoCloud."""
    sc = Scenario.make(tmp_path, "nocloud", "10.0.2.48")
    drive = build_drive(sc, "nocloud")
    root = fresh_root_fs(guest, tmp_path)
    result = boot(guest, root, tmp_path / f"console-{sc.name}.log",
                  extra=["-drive", f"file={drive},format=raw,if=ide,media=cdrom,readonly=on"])
    assert_cloud_init_applied(result, sc, root, 0, source="/dev/sr0", datasource_name="DataSourceNoCloud",
                            source_key="seed")


def test_vfat_drive_as_disk(guest, tmp_path):
    sc = Scenario.make(tmp_path, "vfat", "10.0.2.42")
    drive = build_drive(sc, "vfat")
    root = fresh_root_fs(guest, tmp_path)
    result = boot(guest, root, tmp_path / "console-vfat.log",
                  extra=["-drive", f"file={drive},format=raw,if=virtio"])
    assert_cloud_init_applied(result, sc, root, 0, source="/dev/vdb")


def test_deploy_fills_the_config_v2_partition(guest, tmp_path):
    sc = Scenario.make(tmp_path, "deploy", "10.0.2.43")
    target = blank_disk_larger_than(guest.disk_with_config_partition, tmp_path / "target.raw")
    configdrive("deploy", "--device", target, "--image", guest.disk_with_config_partition,
                *sc.content_options)
    number, _ = partition_named(target, "config-v2")
    assert number == 2, "deploy must use the image's own config-v2 partition"
    root = partitions(target)[0]
    result = boot(guest, target, tmp_path / "console-deploy.log")
    assert_cloud_init_applied(result, sc, target, root["start"] * 512, source=f"/dev/vda{number}")


def test_deploy_makes_a_config_partition_at_the_end(guest, tmp_path):
    sc = Scenario.make(tmp_path, "deploy-new", "10.0.2.44")
    target = blank_disk_larger_than(guest.disk_without_config_partition, tmp_path / "target.raw")
    configdrive("deploy", "--device", target, "--image", guest.disk_without_config_partition,
                *sc.content_options)
    parts = partitions(target)
    number, config = partition_named(target, "config-v2")
    assert config == parts[-1], parts
    disk_sectors = target.stat().st_size // 512
    # At the end: nothing but the backup GPT (33 sectors) and alignment after it.
    assert config["start"] + config["size"] > disk_sectors - 2048 - 34, (config, disk_sectors)
    result = boot(guest, target, tmp_path / "console-deploy-new.log")
    assert_cloud_init_applied(result, sc, target, parts[0]["start"] * 512,
                              source=f"/dev/vda{number}")


def test_legacy_injection(guest, tmp_path):
    image = tmp_path / "guest.raw"
    run("qemu-img", "convert", "-f", "qcow2", "-O", "raw", guest.disk_without_config_partition, image)
    key = "ssh-ed25519 " + EXAMPLE_KEY.read_text().split()[1] + " e2e-inject@configdrive"
    (tmp_path / "key.pub").write_text(key + "\n")
    (tmp_path / "injected.txt").write_text("injected by configdrive inject\n")
    configdrive("inject", image, "--ssh-key", tmp_path / "key.pub",
                "--file", f"/etc/configdrive-e2e/injected.txt={tmp_path / 'injected.txt'}")
    # No config drive at all: cloud-init falls back to DataSource None, and what the
    # guest shows can only have come from the injection.
    result = boot(guest, image, tmp_path / "console-inject.log")
    assert result.one("datasource").startswith("DataSourceNone"), result.tail()
    assert key in result.all("root-key"), result.tail()
    assert "/etc/configdrive-e2e/injected.txt injected by configdrive inject" in result.all("file")
    root_offset = partitions(image)[0]["start"] * 512
    keys = read_guest_file(image, "/root/.ssh/authorized_keys", root_offset)
    assert keys is not None and key in keys.splitlines()
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


def boot_uefi(guest: Guest, disks: UefiDisks, sc: Scenario, target: Path, number: int,
              root: dict) -> Boot:
    """Boot ``target`` alone through OVMF and check what cloud-init did."""
    result = boot(guest, target, sc.dir / f"console-{sc.name}.log", uefi=True,
                  sector_size=disks.sector_size)
    assert_booted_by_firmware(result)
    assert_cloud_init_applied(result, sc, target, root["start"] * disks.sector_size,
                              source=f"/dev/vda{number}")
    return result


# trixie boots this one only: its ISO 9660 drive in a partition is the drive deploy writes,
# and one more boot of it (~2 minutes under load) would take make test past 30 minutes.
@pytest.mark.parametrize("suite, address", [("bookworm", "10.0.2.45"), ("trixie", "10.0.2.52")])
def test_uefi_deploy_fills_the_config_v2_partition(suite, address, tmp_path):
    guest = built_guest(suite)
    disks = uefi_disks_of(guest, 512)
    sc = Scenario.make(tmp_path, SUITES[suite] + "uefi", address)
    image = disks.with_config_partition
    target = blank_disk_larger_than(image, tmp_path / "target.raw")
    number, config, root = deploy_uefi(disks, sc, image, target)
    assert number == 3, "deploy must use the image's own config-v2 partition"
    fs = out("blkid", "-p", "-O", str(config["start"] * 512), "-o", "value", "-s", "TYPE", target)
    assert fs.strip() == "iso9660", fs
    boot_uefi(guest, disks, sc, target, number, root).proved(
        "OVMF booted GRUB from the image's EFI system partition")


def test_uefi_firmware_accepts_the_moved_backup_gpt(guest, tmp_path):
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
    result = boot_uefi(guest, uefi_disks, sc, target, number, root)
    assert gpt_tail(target, 512) == tail, "the firmware rewrote the backup GPT deploy wrote"
    verify = out("sgdisk", "-v", target)
    assert "No problems found" in verify, verify
    result.proved(f"config-v2 made at the end of a {target.stat().st_size}-byte disk",
                  "backup GPT at its last LBA, left as written by the firmware")


def test_4kn_uefi_deploy_makes_a_vfat_config_partition(guest, tmp_path):
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
    result = boot_uefi(guest, uefi_disks_4kn, sc, target, number, root)
    result.proved("4Kn disk (firmware, GRUB, kernel)", "vfat drive with 4096-byte sectors")


# --- glean instead of cloud-init ---------------------------------------------------------

@pytest.fixture(scope="session")
def glean_guest(guest) -> Guest:
    return build_glean_guest(guest)


def test_glean_reads_the_deployed_config_v2_partition(glean_guest, tmp_path):
    """glean, the other consumer of config drives (diskimage-builder's simple-init images
    use it instead of cloud-init), set up by its own glean-install: the image deployed
    into its own config-v2 partition, as on bare metal (deploy writes ISO 9660 there).
    At boot glean-early.service finds the drive by its label config-2 with blkid, mounts
    it on /mnt/config, names the host and writes root's keys from meta_data.json; glean's
    udev rule starts glean@eth0, which writes /etc/network/interfaces.d/eth0.cfg from
    network_data.json and brings eth0 up with ifup. The guest has no cloud-init, and the
    address is not the one QEMU's DHCP would give, so what it shows is glean's doing."""
    sc = Scenario.make(tmp_path, "glean", "10.0.2.49")
    image = glean_guest.disk_with_config_partition
    target = blank_disk_larger_than(image, tmp_path / "target.raw")
    configdrive("deploy", "--device", target, "--image", image, *sc.content_options)
    number, _ = partition_named(target, "config-v2")
    assert number == 2, "deploy must use the image's own config-v2 partition"
    root_offset = partitions(target)[0]["start"] * 512
    result = boot(glean_guest, target, tmp_path / "console-glean.log")

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

    hostname = read_guest_file(target, "/etc/hostname", root_offset)
    assert hostname is not None and hostname.strip() == sc.short_hostname
    net = read_guest_file(target, "/etc/network/interfaces.d/eth0.cfg", root_offset)
    assert net is not None, "glean wrote no /etc/network/interfaces.d/eth0.cfg"
    assert re.search(r"^iface eth0 inet static$", net, re.M), net
    assert re.search(rf"^\s*address {re.escape(sc.address)}$", net, re.M), net
    assert re.search(r"^\s*netmask 255\.255\.255\.0$", net, re.M), net
    assert re.search(r"^\s*gateway 10\.0\.2\.2$", net, re.M), net
    result.proved(f"glean-early mounted config-2 at /dev/vda{number} (iso9660)",
                  "hostname from name", "root key", "no cloud-init",
                  f"static {sc.address} and default route on eth0 (ip and glean's ifupdown file)")
