"""Finding the config partition by each of its identities, refusing two, and making one
at the end of the disk without touching the others: checked with sgdisk, sfdisk and
hashes of the partitions' bytes."""

from __future__ import annotations

import hashlib

import pytest

from conftest import need_tool, out, run
from partition.tables.config_partition import create_config_partition, find_config_partition
from partition.errors import PartitionError
from partition.tables import read_table
from test_tables import MiB, sfdisk_dos, sfdisk_json, sgdisk_gpt, sgdisk_verify


def iso_drive(tmp_path, label="config-2") -> bytes:
    need_tool("genisoimage")
    tree = tmp_path / "tree" / "openstack" / "latest"
    tree.mkdir(parents=True, exist_ok=True)
    (tree / "meta_data.json").write_text('{"uuid": "d8e02d56-2648-49a3-bf97-6be8f1204f38"}')
    iso = tmp_path / f"{label}.iso"
    run("genisoimage", "-quiet", "-o", iso, "-V", label, "-R", "-J", tmp_path / "tree")
    return iso.read_bytes()


def vfat_drive(tmp_path, label="CONFIG-2") -> bytes:
    need_tool("mkfs.vfat")
    img = tmp_path / f"{label}.vfat"
    img.unlink(missing_ok=True)
    run("mkfs.vfat", "-C", "-n", label, img, 2048)
    return img.read_bytes()


def put(disk, offset, data):
    with open(disk, "r+b") as fp:
        fp.seek(offset)
        fp.write(data)


def find(disk, mbr_type=0x99):
    with open(disk, "rb") as fp:
        table = read_table(fp, disk.stat().st_size, source=str(disk))
        return find_config_partition(fp, table, mbr_type, source=str(disk))


def partition_hashes(disk) -> dict[str, str]:
    """sha256 of every partition's bytes as sfdisk locates them."""
    theirs = sfdisk_json(disk)
    result = {}
    with open(disk, "rb") as fp:
        for p in theirs.get("partitions", []):
            fp.seek(p["start"] * theirs["sectorsize"])
            result[p["node"]] = hashlib.sha256(fp.read(p["size"] * theirs["sectorsize"])).hexdigest()
    return result


def test_found_by_gpt_name_among_128_entries_not_first(tmp_path):
    need_tool("sgdisk")
    disk = tmp_path / "disk.img"
    sgdisk_gpt(disk, 128 * MiB, "-n", "1:0:+8M", "-c", "1:root", "-n", "7:0:+8M", "-c", "7:config-v2",
               "-n", "128:0:+8M", "-c", "128:data")
    found = find(disk)
    assert found.partition.number == 7
    assert found.identity == "gpt-name:config-v2"
    assert found.partition.start == 9 * MiB        # sgdisk's placement: after #1, 1 MiB aligned


def test_found_by_mbr_type(tmp_path):
    disk = tmp_path / "disk.img"
    sfdisk_dos(disk, 64 * MiB, "label: dos\n,8M,83\n,8M,99\n")
    found = find(disk)
    assert (found.partition.number, found.identity) == (2, "mbr-type:0x99")
    assert find(disk, mbr_type=0x98) is None       # the type id is configurable


@pytest.mark.parametrize("maker,label", [(iso_drive, "config-2"), (vfat_drive, "CONFIG-2")])
def test_found_by_filesystem_label_in_an_unnamed_partition(tmp_path, maker, label):
    """ironic-python-agent's partitions have no name: only the drive's label tells."""
    disk = tmp_path / "disk.img"
    theirs = sgdisk_gpt(disk, 64 * MiB, "-n", "1:0:+8M", "-n", "2:0:+4M")
    put(disk, theirs["partitions"][1]["start"] * 512, maker(tmp_path, label))
    found = find(disk)
    assert (found.partition.number, found.identity) == (2, f"label:{label}")
    assert found.filesystem.type == ("iso9660" if maker is iso_drive else "vfat")


def test_an_ordinary_label_is_not_an_identity(tmp_path):
    disk = tmp_path / "disk.img"
    theirs = sgdisk_gpt(disk, 64 * MiB, "-n", "1:0:+8M")
    put(disk, theirs["partitions"][0]["start"] * 512, iso_drive(tmp_path, "cidata"))
    assert find(disk) is None


def test_two_candidates_are_refused_naming_both(tmp_path):
    disk = tmp_path / "disk.img"
    theirs = sgdisk_gpt(disk, 64 * MiB, "-n", "1:0:+8M", "-c", "1:config-v2", "-n", "2:0:+4M")
    put(disk, theirs["partitions"][1]["start"] * 512, iso_drive(tmp_path))
    with pytest.raises(PartitionError) as err:
        find(disk)
    assert "partition 1 'config-v2'" in str(err.value) and "partition 2 at byte" in str(err.value)
    assert "label:config-2" in str(err.value)


def create(disk, size=64 * MiB, mbr_type=0x99):
    with open(disk, "r+b") as fp:
        table = read_table(fp, disk.stat().st_size, source=str(disk))
        return create_config_partition(fp, table, size, mbr_type, source=str(disk))


def test_created_at_the_end_of_a_gpt_disk_larger_than_its_image(tmp_path):
    need_tool("sgdisk", "sfdisk")
    disk = tmp_path / "disk.img"
    sgdisk_gpt(disk, 48 * MiB, "-n", "1:0:+16M", "-c", "1:root", "-n", "2:0:0", "-c", "2:data")
    put(disk, 1 * MiB, b"root" * 4096)
    before = partition_hashes(disk)
    with open(disk, "r+b") as fp:
        fp.truncate(512 * MiB)
    made = create(disk)
    sgdisk_verify(disk)
    after = sfdisk_json(disk)
    new = after["partitions"][-1]
    assert (new["name"], new["size"] * 512) == ("config-v2", 64 * MiB)
    assert new["start"] * 512 % MiB == 0
    # At the end: nothing but the alignment slack and the backup GPT after it.
    assert after["lastlba"] - (new["start"] + new["size"] - 1) < MiB // 512
    assert made.partition.start == new["start"] * 512 and made.partition.number == 3
    assert {k: v for k, v in partition_hashes(disk).items() if k in before} == before
    assert "config-v2" in out("sgdisk", "-p", disk)


@pytest.mark.parametrize("primaries", [0, 1, 2, 3])
def test_created_as_mbr_primary_of_type_0x99(tmp_path, primaries):
    disk = tmp_path / "disk.img"
    sfdisk_dos(disk, 256 * MiB, "label: dos\n" + ",16M,83\n" * primaries)
    before = partition_hashes(disk)
    made = create(disk, size=32 * MiB)
    after = sfdisk_json(disk)
    assert len(after["partitions"]) == primaries + 1
    new = after["partitions"][-1]
    assert (new["type"], new["start"] * 512, new["size"] * 512) == ("99", 224 * MiB, 32 * MiB)
    assert made.partition.number == primaries + 1
    assert {k: v for k, v in partition_hashes(disk).items() if k in before} == before


def test_mbr_with_four_primaries_is_refused_and_unchanged(tmp_path):
    disk = tmp_path / "disk.img"
    sfdisk_dos(disk, 256 * MiB, "label: dos\n" + ",16M,83\n" * 4)
    image = disk.read_bytes()
    with pytest.raises(PartitionError, match="all 4 MBR primary slots are in use"):
        create(disk)
    assert disk.read_bytes() == image


def test_mbr_on_a_disk_over_2tib_is_placed_under_the_limit(tmp_path):
    disk = tmp_path / "disk.img"
    sfdisk_dos(disk, 3 << 40, "label: dos\n,16M,83\n")
    create(disk)
    new = sfdisk_json(disk)["partitions"][-1]
    assert (new["start"] + new["size"]) * 512 <= 2 << 40
    assert (new["start"] + new["size"]) * 512 > (2 << 40) - 2 * MiB


def test_no_room_after_the_last_partition_is_refused_and_unchanged(tmp_path):
    need_tool("sgdisk")
    disk = tmp_path / "disk.img"
    sgdisk_gpt(disk, 128 * MiB, "-n", "1:0:+16M", "-n", "2:0:0")
    image = disk.read_bytes()
    with pytest.raises(PartitionError, match="no room for a 67108864-byte config partition after partition 2"):
        create(disk)
    assert disk.read_bytes() == image
