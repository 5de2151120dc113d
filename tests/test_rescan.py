"""Redeploys: the kernel still shows the old disk's partitions (this kernel does not scan
loop devices by itself; ``partx -a`` makes the stale nodes, as a disk that was partitioned
before would have them). The kernel's view is read back with lsblk and blkid."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from conftest import add_partitions, loop_device, make_gpt_disk, need_tool, out, run, sample_content
from configdrive.deploy import deploy
from partition.errors import PartitionError
from partition.writing.rescan import held_partitions, refuse_held_partitions

MiB = 1 << 20
pytestmark = pytest.mark.root


def old_disk(path: Path, layout: list[str]) -> Path:
    """A 96 MiB disk partitioned by sgdisk (``-n`` arguments in ``layout``)."""
    need_tool("sgdisk", "partx", "lsblk")
    with open(path, "wb") as fp:
        fp.truncate(96 * MiB)
    args = []
    for spec in layout:
        args += ["-n", spec]
    run("sgdisk", *args, path)
    return path


def kernel_view(dev: str) -> dict[int, tuple[int, int]]:
    """{partition number: (start byte, size)} as the kernel shows them (lsblk reads sysfs)."""
    listing = json.loads(out("lsblk", "--json", "-b", "-o", "NAME,START,SIZE,TYPE", dev))
    found = {}
    for child in listing["blockdevices"][0].get("children", []):
        number = int(child["name"].rsplit("p", 1)[1])
        found[number] = (int(child["start"]) * 512, int(child["size"]))
    return found


def table_on_disk(dev: str) -> dict[int, tuple[int, int]]:
    """{number: (start byte, size)} from the table itself, by sfdisk."""
    table = json.loads(out("sfdisk", "--json", dev))["partitiontable"]
    return {int(p["node"].rsplit("p", 1)[1]): (p["start"] * 512, p["size"] * 512)
            for p in table["partitions"]}


@pytest.mark.parametrize("old_layout", [
    ["1:2048:+40M", "2:0:+40M"],                 # two big partitions where the new ones go
    ["1:2048:+2M", "2:0:+2M", "3:0:+2M", "4:0:+60M"],   # more partitions than the new table
    ["2:40M:+30M"],                              # only a partition 2, overlapping the new 2
])
def test_stale_partitions_are_replaced_by_the_new_tables(tmp_path, old_layout):
    need_tool("sfdisk", "blkid")
    image = make_gpt_disk(tmp_path / "new.raw", "6f0b4a1e-9a55-4b4a-8c1e-2d7f3b9c0a11", seed=3)
    with loop_device(old_disk(tmp_path / "disk", old_layout)) as dev:
        add_partitions(dev)
        assert kernel_view(dev) == table_on_disk(dev)            # the old OS's view
        summary = deploy(dev, str(image), drive=sample_content())
        assert kernel_view(dev) == table_on_disk(dev), summary
        node = summary["config_drive"]["partition"]["node"]
        assert node and Path(node).exists(), summary
        assert "config-2" in out("blkid", "-p", "-o", "export", node)
        assert not [n for n in summary["config_drive"]["notes"] if "BLKPG" in n or "stale" in n]


def test_held_partition_is_named_before_anything_is_written(tmp_path):
    with loop_device(old_disk(tmp_path / "disk", ["1:2048:+8M", "2:0:+8M"])) as dev:
        add_partitions(dev)
        assert held_partitions(dev) == []
        holder = subprocess.Popen(["sh", "-c", f"exec 3<{dev}p2; echo ready; exec sleep 60"],
                                  stdout=subprocess.PIPE)
        try:
            assert holder.stdout.readline() == b"ready\n"
            with pytest.raises(PartitionError) as caught:
                refuse_held_partitions(dev)
            message = str(caught.value)
            # Named by pid and command name: the holder is "sh" until it has exec'd "sleep".
            assert re.search(rf"{dev}p2 is open in process {holder.pid} \((sh|sleep)\)", message), message
            assert f"{dev}p1" not in message
            assert "\n" not in message
        finally:
            holder.kill()
            holder.wait()
        assert held_partitions(dev) == []


def test_deploy_onto_a_disk_with_a_held_partition_is_refused_untouched(tmp_path):
    """The same refusal through the command, before the image's first byte: the disk is
    byte-identical afterwards."""
    import sys
    sys.path.insert(0, str(Path(__file__).parent / "hostile"))
    from harness import digest, refused
    image = make_gpt_disk(tmp_path / "image.raw", "1B2C3D4E-0000-4000-8000-00000000000A", seed=5)
    with loop_device(old_disk(tmp_path / "disk", ["1:2048:+8M", "2:0:+8M"])) as dev:
        add_partitions(dev)
        holder = subprocess.Popen(["sh", "-c", f"exec 3<{dev}p1; echo ready; exec sleep 60"],
                                  stdout=subprocess.PIPE)
        try:
            assert holder.stdout.readline() == b"ready\n"
            before = digest(dev)
            line = refused("deploy", "--device", dev, "--image", image, watch=[dev],
                           names=f"{dev}p1 is open in process {holder.pid}")
            assert "old partitions are in use" in line
            assert digest(dev) == before
        finally:
            holder.kill()
            holder.wait()


def partitions_shown(dev: str) -> list[str]:
    """The partitions the kernel shows for this loop device, read where the kernel keeps
    them (/sys/dev/block/MAJ:MIN/*/partition), by the device's own number."""
    rdev = os.stat(dev).st_rdev
    sysdir = Path(f"/sys/dev/block/{os.major(rdev)}:{os.minor(rdev)}")
    return sorted(p.parent.name for p in sysdir.glob("*/partition"))


@pytest.mark.parametrize("partscan", [True, False], ids=["losetup -P", "no partscan"])
@pytest.mark.parametrize("failure", ["checksum", "drive"])
def test_a_wiped_disk_shows_the_kernel_no_partitions(tmp_path, partscan, failure):
    """Issue 21: a deploy that fails (a streamed raw image whose checksum is wrong, found
    once it is written; a drive that is no drive, after the image) leaves an empty table,
    and the kernel must not go on showing partitions that are no longer there (one with
    the old root's label would still be mounted by label). The partitions are added by
    partx (this kernel reads no table itself); on a loop device with partition scanning
    (losetup -P) BLKRRPART empties the kernel's view, on one without it refuses (EINVAL)
    and each partition is deleted with BLKPG."""
    import sys
    sys.path.insert(0, str(Path(__file__).parent / "hostile"))
    from harness import assert_refused, run_measured
    image = make_gpt_disk(tmp_path / "image.raw", "1B2C3D4E-0000-4000-8000-00000000000C", seed=6)
    args = ["--checksum", "sha256:" + "0" * 64] if failure == "checksum" else \
        ["--config-drive", tmp_path / "not-a-drive.bin", "--config-size", "8M"]
    (tmp_path / "not-a-drive.bin").write_bytes(bytes(range(256)) * 256)
    disk = old_disk(tmp_path / "disk", ["1:2048:+40M", "2:0:+40M"])
    with loop_device(disk, partscan=partscan) as dev:
        add_partitions(dev)
        assert len(partitions_shown(dev)) == 2          # the old disk's, as the kernel shows them
        outcome = run_measured("deploy", "--device", dev, "--image", "-", *args, input=image.read_bytes())
        line = assert_refused(outcome, names="checksum" if failure == "checksum" else "not-a-drive.bin")
        assert "now holds an empty partition table" in line
        assert partitions_shown(dev) == [], line
        assert out("sgdisk", "-p", dev).rstrip().endswith("Name")   # an empty GPT on the disk
