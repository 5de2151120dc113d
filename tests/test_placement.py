"""Placing a drive on a disk that already holds an OS: checked with sgdisk, sfdisk,
blkid at the partition's offset (or on its node), xorriso/mtools extraction and
cloud-init's own reader; refusals leave the disk byte-for-byte as it was."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from conftest import add_partitions, cloud_init_read, loop_device, need_tool, out, run
from configdrive.formats.pack import pack
from configdrive.deploy.placement import place_config_drive
from partition.errors import PartitionError
from test_tables import MiB, sfdisk_dos, sfdisk_json, sgdisk_gpt, sgdisk_verify

UUID = "83679162-1378-4288-a2d4-70e13ec132aa"


def drive_tree(tmp_path):
    tree = tmp_path / "tree"
    latest = tree / "openstack" / "latest"
    latest.mkdir(parents=True, exist_ok=True)
    (latest / "meta_data.json").write_text(json.dumps({"uuid": UUID, "hostname": "node-7"}))
    (latest / "user_data").write_text("#cloud-config\n{}\n")
    return tree


def iso_drive(tmp_path, label="config-2"):
    need_tool("genisoimage")
    iso = tmp_path / "drive.iso"
    run("genisoimage", "-quiet", "-o", iso, "-V", label, "-R", "-J", drive_tree(tmp_path))
    return iso


def vfat_drive(tmp_path, sector_size=512):
    need_tool("mkfs.vfat", "mcopy")
    img = tmp_path / "drive.vfat"
    run("mkfs.vfat", "-C", "-S", sector_size, "-n", "CONFIG-2", img, 4096)
    run("mcopy", "-s", "-i", img, drive_tree(tmp_path) / "openstack", "::/")
    return img


def blkid_at(disk, offset) -> dict:
    text = out("blkid", "-p", "-o", "export", "-O", offset, disk)
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def cloud_init_sees_our_drive(tmp_path, disk, offset, fs_type):
    """Extract with tools we did not write and hand the tree to cloud-init's reader."""
    dest = tmp_path / "extracted"
    dest.mkdir()
    if fs_type == "iso9660":
        part = tmp_path / "part.bin"
        with open(disk, "rb") as src:
            src.seek(offset)
            part.write_bytes(src.read(8 * MiB))
        run("xorriso", "-osirrox", "on", "-indev", part, "-extract", "/", dest)
    else:
        run("mcopy", "-s", "-i", f"{disk}@@{offset}", "::/openstack", dest)
    result = cloud_init_read(dest)
    assert result["metadata"]["uuid"] == UUID
    assert result["userdata"] == b"#cloud-config\n{}\n"


def hashes(disk) -> dict:
    theirs = sfdisk_json(disk)
    found = {}
    with open(disk, "rb") as fp:
        for p in theirs.get("partitions", []):
            fp.seek(p["start"] * theirs["sectorsize"])
            found[p["node"]] = hashlib.sha256(fp.read(p["size"] * theirs["sectorsize"])).hexdigest()
    return found


def file_hash(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fp:
        for block in iter(lambda: fp.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def os_disk(tmp_path, image_size=48 * MiB, disk_size=256 * MiB, *extra):
    """An OS image made by sgdisk (root and data), dd'ed onto a larger disk."""
    need_tool("sgdisk", "sfdisk", "blkid")
    disk = tmp_path / "disk.img"
    sgdisk_gpt(disk, image_size, "-n", "1:0:+16M", "-c", "1:root", "-n", "2:0:+8M", "-c", "2:data", *extra)
    with open(disk, "r+b") as fp:
        fp.seek(1 * MiB)
        fp.write(os.urandom(1 * MiB))
        fp.truncate(disk_size)
    return disk


def test_gpt_disk_gets_a_config_v2_partition_with_the_drive(tmp_path):
    disk = os_disk(tmp_path)
    before = hashes(disk)
    result = place_config_drive(str(disk), str(iso_drive(tmp_path)))
    sgdisk_verify(disk)
    table = sfdisk_json(disk)
    new = table["partitions"][-1]
    assert new["name"] == "config-v2" and new["size"] * 512 == 64 * MiB
    assert table["lastlba"] == 256 * MiB // 512 - 34        # backup GPT moved to the end
    assert {k: v for k, v in hashes(disk).items() if k in before} == before
    part = result["partition"]
    assert (part["number"], part["start"], part["size"]) == (3, new["start"] * 512, new["size"] * 512)
    assert part["identity"] == "gpt-name:config-v2" and part["created"] is True
    assert part["uuid"].upper() == new["uuid"].upper()
    assert result["drive"] == {"format": "iso9660", "label": "config-2",
                               "bytes": os.path.getsize(tmp_path / "drive.iso")}
    found = blkid_at(disk, part["start"])
    assert (found["TYPE"], found["LABEL"]) == ("iso9660", "config-2")
    cloud_init_sees_our_drive(tmp_path, disk, part["start"], "iso9660")


def test_existing_config_v2_partition_is_reused_and_old_signatures_wiped(tmp_path):
    need_tool("mkfs.ext4")
    disk = os_disk(tmp_path, 48 * MiB, 48 * MiB, "-n", "3:0:+12M", "-c", "3:config-v2")
    start = sfdisk_json(disk)["partitions"][2]["start"] * 512
    old = tmp_path / "old.ext4"
    run("mkfs.ext4", "-q", "-F", old, "12M")
    with open(disk, "r+b") as fp:
        fp.seek(start)
        fp.write(old.read_bytes())
    assert blkid_at(disk, start)["TYPE"] == "ext4"
    result = place_config_drive(str(disk), str(iso_drive(tmp_path)))
    assert result["partition"]["created"] is False and result["partition"]["number"] == 3
    assert len(sfdisk_json(disk)["partitions"]) == 3
    # blkid -p fails with "ambivalent result" when two signatures remain.
    assert blkid_at(disk, start)["TYPE"] == "iso9660"


def test_found_by_label_in_an_unnamed_partition_and_packed_drive_accepted(tmp_path):
    """ironic's own layout: an unnamed partition holding a config-2 filesystem; the
    drive arrives as the API's gzip+base64 string."""
    disk = os_disk(tmp_path, 64 * MiB, 64 * MiB, "-n", "3:0:+8M")
    vfat = vfat_drive(tmp_path)
    start = sfdisk_json(disk)["partitions"][2]["start"] * 512
    with open(disk, "r+b") as fp:
        fp.seek(start)
        fp.write(vfat.read_bytes())
    packed = tmp_path / "drive.b64"
    packed.write_text(pack(iso_drive(tmp_path).read_bytes()))
    result = place_config_drive(str(disk), str(packed))
    assert result["partition"]["identity"] == "label:CONFIG-2"
    assert result["drive"]["format"] == "iso9660"
    cloud_init_sees_our_drive(tmp_path, disk, start, "iso9660")


@pytest.mark.parametrize("primaries", [0, 2, 3])
def test_mbr_disk_gets_a_primary_of_type_0x99(tmp_path, primaries):
    need_tool("sfdisk", "blkid")
    disk = tmp_path / "mbr.img"
    sfdisk_dos(disk, 128 * MiB, "label: dos\n" + ",16M,83\n" * primaries)
    before = hashes(disk)
    result = place_config_drive(str(disk), str(vfat_drive(tmp_path)), config_size=16 * MiB)
    parts = sfdisk_json(disk)["partitions"]
    assert len(parts) == primaries + 1 and parts[-1]["type"] == "99"
    assert parts[-1]["start"] * 512 == result["partition"]["start"] == 112 * MiB
    assert result["partition"]["identity"] == "mbr-type:0x99"
    assert {k: v for k, v in hashes(disk).items() if k in before} == before
    found = blkid_at(disk, result["partition"]["start"])
    assert (found["TYPE"], found["LABEL"]) == ("vfat", "CONFIG-2")
    cloud_init_sees_our_drive(tmp_path, disk, result["partition"]["start"], "vfat")


def test_refusals_leave_the_disk_unchanged(tmp_path):
    iso = str(iso_drive(tmp_path))
    # two config partitions
    disk = os_disk(tmp_path, 64 * MiB, 64 * MiB, "-n", "3:0:+4M", "-c", "3:config-v2",
                   "-n", "4:0:+4M", "-c", "4:config-v2")
    image = file_hash(disk)
    with pytest.raises(PartitionError, match="2 config partitions"):
        place_config_drive(str(disk), iso)
    assert file_hash(disk) == image
    # a config partition smaller than the drive
    disk.unlink()
    disk = os_disk(tmp_path, 48 * MiB, 128 * MiB, "-n", "3:0:+100K", "-c", "3:config-v2")
    image = file_hash(disk)
    with pytest.raises(PartitionError, match="larger than the config partition"):
        place_config_drive(str(disk), iso)
    assert file_hash(disk) == image
    # a disk with no table at all
    blank = tmp_path / "blank.img"
    with open(blank, "wb") as fp:
        fp.truncate(64 * MiB)
    with pytest.raises(PartitionError, match="no partition table"):
        place_config_drive(str(blank), iso)
    assert file_hash(blank) == hashlib.sha256(bytes(64 * MiB)).hexdigest()


def test_interrupted_write_never_leaves_a_recognisable_drive(tmp_path, monkeypatch):
    """The head (first 64 KiB) goes last: stop before it and blkid finds nothing."""
    disk = os_disk(tmp_path, 48 * MiB, 128 * MiB)
    from partition.writing.device import Target
    real = Target.pwrite
    calls = []

    def crash_on_head(self, data, offset):
        calls.append(offset)
        if len(calls) == 2:
            raise PartitionError("simulated power cut")
        return real(self, data, offset)
    monkeypatch.setattr(Target, "pwrite", crash_on_head)
    with pytest.raises(PartitionError, match="power cut"):
        place_config_drive(str(disk), str(iso_drive(tmp_path)))
    start = sfdisk_json(disk)["partitions"][-1]["start"] * 512
    assert calls[1] == start                       # the second write was the head
    proc = run("blkid", "-p", "-O", start, disk, check=False)
    assert proc.returncode == 2, proc.stdout      # 2: nothing recognised


def test_loop_device_partition_node_is_added_and_readable(tmp_path):
    disk = os_disk(tmp_path, 48 * MiB, 128 * MiB)
    with loop_device(disk) as dev:
        result = place_config_drive(dev, str(iso_drive(tmp_path)))
        node = result["partition"]["node"]
        assert node == f"{dev}p3"
        found = dict(line.split("=", 1) for line in out("blkid", "-p", "-o", "export", node).splitlines())
        assert (found["TYPE"], found["LABEL"]) == ("iso9660", "config-2")
        sgdisk_verify(dev)


def test_4096_byte_sector_loop_device_takes_a_vfat_drive(tmp_path):
    need_tool("sgdisk", "mkfs.vfat")
    disk = tmp_path / "disk4k.img"
    sgdisk_gpt(disk, 64 * MiB, "-n", "1:0:+16M", "-c", "1:root", sector_size=4096)
    with open(disk, "r+b") as fp:
        fp.truncate(128 * MiB)
    with loop_device(disk, sector_size=4096) as dev:
        result = place_config_drive(dev, str(vfat_drive(tmp_path, sector_size=4096)))
        sgdisk_verify(dev)
        table = sfdisk_json(dev)
        assert table["sectorsize"] == 4096 and table["partitions"][-1]["name"] == "config-v2"
        assert result["sector_size"] == 4096 and result["drive"]["format"] == "vfat"
        found = dict(line.split("=", 1) for line in
                     out("blkid", "-p", "-o", "export", result["partition"]["node"]).splitlines())
        assert (found["TYPE"], found["LABEL"]) == ("vfat", "CONFIG-2")


def test_mounted_partition_makes_the_deploy_refuse_with_its_name(tmp_path):
    need_tool("mkfs.ext4", "sgdisk")
    disk = os_disk(tmp_path, 48 * MiB, 128 * MiB)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with loop_device(disk) as dev:
        add_partitions(dev)
        run("mkfs.ext4", "-q", f"{dev}p1")
        proc = run("mount", f"{dev}p1", mnt, check=False)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount ext4 here: {proc.stderr.decode().strip()}")
        try:
            image = file_hash(disk)
            with pytest.raises(PartitionError, match=f"{dev}p1 is mounted on {mnt}"):
                place_config_drive(dev, str(iso_drive(tmp_path)))
            assert file_hash(disk) == image
        finally:
            run("umount", mnt)


def test_deploy_command_writes_image_then_drive(tmp_path):
    """``configdrive deploy --image --config-drive --json`` on a disk image file: the OS
    image's table is fixed for the larger disk and the drive is in config-v2."""
    from conftest import configdrive
    need_tool("sgdisk", "blkid")
    image = tmp_path / "os.img"
    sgdisk_gpt(image, 40 * MiB, "-n", "1:0:+16M", "-c", "1:root")
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as fp:
        fp.truncate(200 * MiB)
    proc = configdrive("deploy", "--device", disk, "--image", image, "--config-drive",
                       iso_drive(tmp_path), "--config-size", "32M", "--json")
    result = json.loads(proc.stdout)["config_drive"]
    sgdisk_verify(disk)
    new = sfdisk_json(disk)["partitions"][-1]
    assert (new["name"], new["size"] * 512, new["start"] * 512) == \
        ("config-v2", 32 * MiB, result["partition"]["start"])
    assert blkid_at(disk, new["start"] * 512)["LABEL"] == "config-2"
    # A second deploy finds the partition it made instead of making another.
    again = json.loads(configdrive("deploy", "--device", disk, "--config-drive",
                                   tmp_path / "drive.iso", "--json").stdout)["config_drive"]
    assert again["partition"]["created"] is False and again["partition"]["number"] == 2
    assert len(sfdisk_json(disk)["partitions"]) == 2


def test_deploy_command_refusal_is_one_line(tmp_path):
    from conftest import configdrive
    disk = os_disk(tmp_path, 48 * MiB, 48 * MiB, "-n", "3:0:+4M", "-c", "3:config-v2",
                   "-n", "4:0:+4M", "-c", "4:config-v2")
    proc = configdrive("deploy", "--device", disk, "--config-drive", iso_drive(tmp_path), check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and err.count("\n") == 1
    assert err.startswith("configdrive: error: ") and "partition 3 'config-v2'" in err \
        and "partition 4 'config-v2'" in err


def test_deploy_image_alone_moves_the_backup_gpt_to_the_disk_end(tmp_path):
    from conftest import configdrive
    need_tool("sgdisk")
    image = tmp_path / "os.img"
    sgdisk_gpt(image, 40 * MiB, "-n", "1:0:+16M", "-c", "1:root")
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as fp:
        fp.truncate(200 * MiB)
    result = json.loads(configdrive("deploy", "--device", disk, "--image", image, "--json").stdout)
    assert result["table"]["gpt_fixed"] is True and result["config_drive"] is None
    sgdisk_verify(disk)
    assert sfdisk_json(disk)["lastlba"] == 200 * MiB // 512 - 34


def test_drive_fetched_from_a_url_as_a_packed_string(tmp_path):
    import functools
    import http.server
    import threading
    serve = tmp_path / "www"
    serve.mkdir()
    (serve / "drive").write_text(pack(iso_drive(tmp_path).read_bytes()))

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass
    handler = functools.partial(Quiet, directory=str(serve))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        disk = os_disk(tmp_path, 48 * MiB, 128 * MiB)
        result = place_config_drive(str(disk), f"http://127.0.0.1:{server.server_port}/drive")
    finally:
        server.shutdown()
    assert result["drive"]["format"] == "iso9660"
    cloud_init_sees_our_drive(tmp_path, disk, result["partition"]["start"], "iso9660")
