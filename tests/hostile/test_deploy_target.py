"""The deploy target as a boundary: a second process writing to the same disk, a device
path that does not exist, a file that must not grow. A refused deploy leaves the target
byte-identical (and creates nothing); judged by tests/hostile/harness.py, locks checked
in the kernel's /proc/locks.
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import time
from pathlib import Path

import pytest

from conftest import loop_device, make_gpt_disk, run
from harness import EXE, assert_refused, digest, refused, run_measured

MiB = 1 << 20
OLD_GUID = "0DD0DD00-1111-4222-8333-444455556666"


@pytest.fixture
def target(tmp_path) -> Path:
    return make_gpt_disk(tmp_path / "old-disk.img", OLD_GUID, seed=1, size=16 * MiB)


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "small.raw"
    path.write_bytes(random.Random(5).randbytes(2 * MiB))
    return path


def locked(path) -> bool:
    """Whether some process holds a flock on ``path``, as the kernel lists it in
    /proc/locks (asking with flock(1) would take the lock for a moment itself)."""
    st = os.stat(path)
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    return any(line.split()[1] == "FLOCK" and line.split()[5] == inode
               for line in Path("/proc/locks").read_text().splitlines() if "->" not in line)


@contextlib.contextmanager
def first_deploy(target):
    """A deploy that holds ``target`` while it waits for its image on stdin; ends (refused:
    an empty image) when the block ends."""
    proc = subprocess.Popen([EXE, "deploy", "--quiet", "--device", str(target), "--image", "-"],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for _ in range(1200):
            if locked(target):
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"the first deploy never locked {target}")
        yield proc
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)


@pytest.mark.parametrize("second", ["image", "drive", "image-and-drive"])
def test_second_deploy_onto_a_locked_file_refused(target, image, tmp_path, second):
    args = []
    if "image" in second:
        args += ["--image", image]
    if "drive" in second:
        args += ["--hostname", "second"]
    before = digest(target)
    with first_deploy(target) as first:
        refused("deploy", "--quiet", "--device", target, *args, watch=[target],
                names=f"{target} is locked")
    assert first.returncode == 1          # the first one saw an empty stdin
    assert digest(target) == before


def test_second_deploy_onto_a_locked_loop_device_refused(target, image):
    with loop_device(target) as dev:
        with first_deploy(dev):
            refused("deploy", "--quiet", "--device", dev, "--image", image, watch=[dev],
                    names=f"{dev} is locked")


def test_lock_is_released_after_a_deploy(target, image):
    """Control: the lock is the deploy's, not left behind."""
    outcome = run_measured("deploy", "--quiet", "--device", target, "--image", image)
    assert outcome.returncode == 0, outcome.stderr
    assert not locked(target)


@pytest.mark.parametrize("create", [False, True])
@pytest.mark.parametrize("name", ["sdz", "disk/by-id/missing-disk", "nvme9n1"])
def test_missing_device_refused_and_not_created(image, name, create):
    path = Path("/dev") / name
    if path.exists():
        pytest.skip(f"{path} exists on this machine")
    outcome = run_measured("deploy", "--quiet", *(["--create"] if create else []),
                           "--device", path, "--image", image)
    assert_refused(outcome, names=str(path))
    assert not path.exists()


@pytest.mark.parametrize("args", [["--image", "IMAGE"], ["--hostname", "h"],
                                  ["--image", "IMAGE", "--hostname", "h"]])
def test_missing_file_target_needs_create(image, tmp_path, args):
    path = tmp_path / "not-there.img"
    args = [str(image) if a == "IMAGE" else a for a in args]
    outcome = run_measured("deploy", "--quiet", "--device", path, *args)
    assert_refused(outcome, names="--create")
    assert not path.exists()


def test_refused_image_leaves_no_created_file(tmp_path):
    empty = tmp_path / "empty.raw"
    empty.write_bytes(b"")
    path = tmp_path / "new.img"
    outcome = run_measured("deploy", "--quiet", "--create", "--device", path, "--image", empty)
    assert_refused(outcome, names="empty")
    assert not path.exists()


@pytest.mark.parametrize("short_by", [512, 4096, MiB, 2 * MiB - 512])
def test_file_target_never_grows_known_size(tmp_path, image, short_by):
    """An image larger than a file target we did not create: refused before writing."""
    target = tmp_path / "small-target.img"
    target.write_bytes(b"\xaa" * (image.stat().st_size - short_by))
    refused("deploy", "--quiet", "--device", target, "--image", image, watch=[target],
            names=str(target))
    assert target.stat().st_size == image.stat().st_size - short_by


@pytest.mark.parametrize("short", [512, 3 * MiB // 2])
def test_file_target_never_grows_from_a_stream(tmp_path, image, short):
    """From stdin the size shows only while writing: the deploy fails, the file keeps its
    length and holds no partition table."""
    target = make_gpt_disk(tmp_path / "t.img", OLD_GUID, seed=3, size=16 * MiB)
    stream = make_gpt_disk(tmp_path / "s.img", "5EED5EED-2222-4333-8444-555566667777", seed=4,
                           size=16 * MiB + short)
    size = target.stat().st_size
    outcome = run_measured("deploy", "--quiet", "--device", target, "--image", "-",
                           input=stream.read_bytes())
    assert_refused(outcome, names=str(target))
    assert target.stat().st_size == size
    printed = run("sgdisk", "-p", target, check=False).stdout.decode().upper()
    assert OLD_GUID not in printed and "5EED5EED" not in printed and " ROOT" not in printed


def test_empty_file_target_is_not_filled_without_create(tmp_path, image):
    target = tmp_path / "touched.img"
    target.write_bytes(b"")
    refused("deploy", "--quiet", "--device", target, "--image", image, watch=[target],
            names=str(target))
    assert os.path.getsize(target) == 0


@pytest.mark.parametrize("network_data, names", [
    ({"links": [], "networks": [{"id": "n0", "link": "eth9", "type": "ipv4_dhcp", "network_id": "x"}],
      "services": []}, "/networks/0/link"),
    ({"links": [{"id": "eth0", "type": "phy", "ethernet_mac_address": "not-a-mac"}], "networks": [],
      "services": []}, "/links/0/ethernet_mac_address"),
])
def test_drive_content_refused_before_the_image_goes_down(tmp_path, target, network_data, names):
    """Content that `build` would refuse is refused by deploy before its image is written
    (the drive itself is built afterwards, for the disk's sector size): the old disk stays."""
    import json
    from conftest import make_gpt_disk as new_image
    image = new_image(tmp_path / "new.img", "2B2C3D4E-0000-4000-8000-00000000000B", seed=9, size=12 * MiB)
    net = tmp_path / "network_data.json"
    net.write_text(json.dumps(network_data))
    refused("deploy", "--device", target, "--image", image, "--uuid", "83679162-1378-4288-a2d4-70e13ec132aa",
            "--network-data", net, watch=[target], names=names)
