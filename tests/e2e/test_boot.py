"""End to end: a real Debian guest boots under QEMU with what configdrive wrote, and
cloud-init applies it: hostname, root's SSH key, a user-data runcmd, a static address
from network_data.json. Evidence comes from the guest's serial console and from its disk
read back with debugfs after it powered off; disks are laid out and checked with sfdisk.

Each boot takes about a minute under TCG (the guest is built once and cached, see
scripts/e2e-guest.sh). Run with ``make e2e``; ``make test`` leaves these out.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import configdrive, is_root, out, run
from guestvm import GUEST_MAC, Boot, Guest, boot, build_guest, read_guest_file

pytestmark = pytest.mark.e2e

EXAMPLE_KEY = (Path(__file__).resolve().parents[2] / "configdrive" / "examples" / "example.pub")


@pytest.fixture(scope="session")
def guest() -> Guest:
    if not is_root():
        pytest.skip("building the guest needs root (debootstrap, chroot)")
    for tool in ("qemu-system-x86_64", "debootstrap", "debugfs", "sfdisk", "qemu-img"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            pytest.skip(f"{tool} is not installed (scripts/install.sh installs it)")
    return build_guest()


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


def blank_disk_larger_than(image: Path, path: Path, extra_mib: int = 256) -> Path:
    size = json.loads(out("qemu-img", "info", "--output=json", image))["virtual-size"]
    with open(path, "wb") as f:
        f.truncate(size + extra_mib * 1024 * 1024)
    return path


def assert_cloud_init_applied(result: Boot, sc: Scenario, root_image: Path, root_offset: int,
                              source: str) -> None:
    """What a user checks after first boot, on the console and on the disk."""
    datasource = result.one("datasource")
    assert datasource.startswith("DataSourceConfigDrive"), datasource + "\n" + result.tail()
    assert f"[source={source}]" in datasource, datasource
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
    result = boot(guest, root, tmp_path / "console-iso.log",
                  extra=["-drive", f"file={drive},format=raw,if=ide,media=cdrom,readonly=on"])
    assert_cloud_init_applied(result, sc, root, 0, source="/dev/sr0")


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
