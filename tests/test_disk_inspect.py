"""``configdrive inspect DISK`` / ``extract DISK DIR`` on whole disks made by sgdisk and
sfdisk with drives made by genisoimage and mkfs.vfat+mcopy; the extracted tree is read by
cloud-init's own reader. And ``deploy`` followed by ``inspect``/``extract``."""

from __future__ import annotations

import json
import re

import pytest

from conftest import add_partitions, cloud_init_read, configdrive, loop_device, need_tool, run
from test_placement import UUID, iso_drive, vfat_drive
from test_tables import MiB, sfdisk_dos, sfdisk_json, sgdisk_gpt


def put(disk, offset, path):
    with open(disk, "r+b") as fp:
        fp.seek(offset)
        fp.write(path.read_bytes())


def inspect_json(target) -> dict:
    return json.loads(configdrive("inspect", "--json", target).stdout)


def test_gpt_disk_with_an_iso_drive_in_config_v2(tmp_path):
    disk = tmp_path / "disk.img"
    theirs = sgdisk_gpt(disk, 96 * MiB, "-n", "1:0:+16M", "-c", "1:root", "-n", "2:0:+8M",
                        "-c", "2:config-v2", "-n", "3:0:+8M")
    part = theirs["partitions"][1]
    put(disk, part["start"] * 512, iso_drive(tmp_path))
    summary = inspect_json(disk)
    assert summary["format"] == "iso9660" and summary["label"] == "config-2"
    assert summary["uuid"] == UUID
    p = summary["partition"]
    assert (p["number"], p["start"], p["size"]) == (2, part["start"] * 512, part["size"] * 512)
    assert p["identity"] == "gpt-name:config-v2,label:config-2" and p["uuid"].upper() == part["uuid"]
    dest = tmp_path / "out"
    configdrive("extract", disk, dest)
    assert cloud_init_read(dest)["metadata"]["uuid"] == UUID


def test_mbr_disk_with_a_vfat_drive_in_a_0x99_partition(tmp_path):
    disk = tmp_path / "mbr.img"
    theirs = sfdisk_dos(disk, 64 * MiB, "label: dos\n,16M,83\n,8M,99\n")
    put(disk, theirs["partitions"][1]["start"] * 512, vfat_drive(tmp_path))
    summary = inspect_json(disk)
    assert (summary["format"], summary["label"], summary["uuid"]) == ("vfat", "CONFIG-2", UUID)
    assert summary["partition"]["identity"] == "mbr-type:0x99,label:CONFIG-2"
    dest = tmp_path / "out"
    configdrive("extract", disk, dest)
    assert cloud_init_read(dest)["metadata"]["uuid"] == UUID


def test_disk_without_a_config_partition_is_one_clear_error(tmp_path):
    disk = tmp_path / "disk.img"
    sgdisk_gpt(disk, 32 * MiB, "-n", "1:0:+8M", "-c", "1:root")
    proc = configdrive("inspect", disk, check=False)
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert err.count("\n") == 1 and "no config partition" in err and str(disk) in err


def test_4096_byte_sector_loop_device(tmp_path):
    disk = tmp_path / "disk4k.img"
    sgdisk_gpt(disk, 64 * MiB, "-n", "1:0:+16M", "-n", "2:0:+16M", "-c", "2:config-v2", sector_size=4096)
    with loop_device(disk, sector_size=4096) as dev:
        start = sfdisk_json(dev)["partitions"][1]["start"] * 4096
        put(disk, start, vfat_drive(tmp_path, sector_size=4096))
        run("blockdev", "--flushbufs", dev, check=False)
        summary = inspect_json(dev)
    assert summary["partition"]["start"] == start and summary["uuid"] == UUID


@pytest.mark.parametrize("sector_size", [512, 4096])
def test_deploy_built_drive_then_inspect_and_extract(tmp_path, sector_size):
    """The whole path with our own writer: OS image, deploy with content options, then
    independent readers: blkid on the partition node, cloud-init on the extracted tree."""
    need_tool("sgdisk", "blkid")
    image = tmp_path / "os.img"
    sgdisk_gpt(image, 48 * MiB, "-n", "1:0:+16M", "-c", "1:root", sector_size=sector_size)
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as fp:
        fp.truncate(256 * MiB)
    with loop_device(disk, sector_size=sector_size) as dev:
        result = json.loads(configdrive("deploy", "--device", dev, "--image", image, "--example",
                                        "--uuid", UUID, "--json").stdout)["config_drive"]
        want = "vfat" if sector_size == 4096 else "iso9660"
        assert result["drive"] == {**result["drive"], "format": want, "label": "config-2"}
        assert (sector_size == 4096) == any("cannot be mounted" in n for n in result["notes"])
        node = result["partition"]["node"]
        found = dict(line.split("=", 1) for line in
                     run("blkid", "-p", "-o", "export", node).stdout.decode().splitlines())
        assert (found["TYPE"], found["LABEL"]) == (want, "config-2")
        assert found["PART_ENTRY_NAME"] == "config-v2"
        dest = tmp_path / "out"
        configdrive("extract", dev, dest)
    assert cloud_init_read(dest)["metadata"]["uuid"] == UUID


def test_iso_drive_given_for_a_4096_byte_sector_disk_is_converted_to_vfat(tmp_path):
    need_tool("sgdisk", "blkid", "genisoimage")
    disk = tmp_path / "disk4k.img"
    sgdisk_gpt(disk, 128 * MiB, "-n", "1:0:+16M", "-c", "1:root", sector_size=4096)
    with loop_device(disk, sector_size=4096) as dev:
        result = json.loads(configdrive("deploy", "--device", dev, "--config-drive", iso_drive(tmp_path),
                                        "--json").stdout)["config_drive"]
        assert result["drive"]["format"] == "vfat" and result["drive"]["label"] == "config-2"
        assert any("converted to vfat" in n for n in result["notes"])
        found = dict(line.split("=", 1) for line in
                     run("blkid", "-p", "-o", "export", result["partition"]["node"]).stdout.decode().splitlines())
        assert (found["TYPE"], found["LABEL"], found["BLOCK_SIZE"]) == ("vfat", "config-2", "4096")
        dest = tmp_path / "out"
        configdrive("extract", dev, dest)
    assert cloud_init_read(dest)["metadata"]["uuid"] == UUID


def fsck_sector_size(node: str) -> int:
    """fsck.fat's read-only check of the FAT on ``node`` (exit 0), and its logical sector size."""
    proc = run("fsck.fat", "-n", "-v", node, check=False)
    text = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, text
    return int(re.search(r"(\d+) bytes per logical sector", text).group(1))


@pytest.mark.parametrize("given", ["content", "vfat-512"])
def test_vfat_drive_on_a_4096_byte_sector_disk_has_4096_byte_fat_sectors(tmp_path, given):
    """Linux mounts a FAT only from a device whose sectors are no larger than the FAT's:
    a drive built for, or given to, a 4Kn disk ends up with 4096-byte FAT sectors."""
    need_tool("sgdisk", "blkid", "fsck.fat", "partx")
    disk = tmp_path / "disk4k.img"
    sgdisk_gpt(disk, 128 * MiB, "-n", "1:0:+16M", "-c", "1:root", sector_size=4096)
    source = ["--example", "--uuid", UUID] if given == "content" else ["--config-drive", vfat_drive(tmp_path)]
    with loop_device(disk, sector_size=4096) as dev:
        result = json.loads(configdrive("deploy", "--device", dev, *source, "--json").stdout)["config_drive"]
        if given == "vfat-512":
            assert any("512-byte sectors" in n and "rewritten" in n for n in result["notes"]), result["notes"]
        add_partitions(dev)
        node = f"{dev}p{result['partition']['number']}"
        found = dict(line.split("=", 1) for line in run("blkid", "-p", "-o", "export", node).stdout.decode().splitlines())
        assert (found["TYPE"], found["BLOCK_SIZE"]) == ("vfat", "4096")
        assert found["LABEL"] == ("config-2" if given == "content" else "CONFIG-2")
        assert fsck_sector_size(node) == 4096
        dest = tmp_path / "out"
        configdrive("extract", dev, dest)
    assert cloud_init_read(dest)["metadata"]["uuid"] == UUID
