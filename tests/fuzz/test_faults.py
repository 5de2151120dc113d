"""Faults injected into every write: deploy (the image stream), placement (the config
drive) and inject (the loop handler). After each fault the target is either complete and
verified, or no tool reads the image's partition table / a drive signature there (judged
by sgdisk and blkid), and no loop device or mount of ours is left behind.

Faults: an I/O error (EIO) or a full target (ENOSPC) at chosen write offsets, an fsync
that fails, the device disappearing (every later write and sync fails with ENODEV),
SIGKILL at chosen points of a real ``configdrive deploy`` process, a real full tmpfs, and
SIGTERM/SIGINT to a real ``configdrive inject`` while the guest is mounted. (A SIGKILL
cannot be cleaned up by the process itself: it leaves the loop device and the mount, see
docs/FUZZING.md.)
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fuzz_tally
from conftest import is_root, loop_device, need_tool, out, run
from machine_state import device_number, is_mount_point, loops_backed_by, mounts
from configdrive.model.content import Content
from partition.writing.copy import HOLD, write_image
from partition.writing.device import Target
from partition.errors import PartitionError

pytestmark = pytest.mark.root
MiB = 1 << 20
IMAGE_GUID = "5A5A5A5A-1111-2222-3333-444455556666"
IMAGE_SIZE = 8 * MiB
DISK_SIZE = 12 * MiB


@pytest.fixture(autouse=True)
def _root():
    if not is_root():
        pytest.skip("fault injection runs on loop devices, which need root")
    need_tool("sgdisk", "blkid", "losetup")


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    """An 8 MiB raw disk made by sgdisk (disk GUID IMAGE_GUID) with random data in it."""
    need_tool("sgdisk")
    path = tmp_path_factory.mktemp("faults") / "disk.raw"
    path.write_bytes(bytes(IMAGE_SIZE))
    run("sgdisk", "-U", IMAGE_GUID, "-n", "1:2048:+3M", "-c", "1:root", "-n", "2:0:+2M", path)
    rnd = random.Random(7)
    with open(path, "r+b") as fp:
        fp.seek(1 * MiB)
        fp.write(rnd.randbytes(5 * MiB))
    return path


@contextlib.contextmanager
def used_disk(tmp_path: Path):
    """A loop device over a used disk: every byte 0xAA under an old GPT of its own."""
    backing = tmp_path / "target.img"
    backing.write_bytes(b"\xaa" * DISK_SIZE)
    run("sgdisk", "-n", "1:0:0", "-c", "1:old", backing)
    with loop_device(backing) as dev:
        yield dev


def sha(path, length: int) -> str:
    with open(path, "rb") as fp:
        return hashlib.sha256(fp.read(length)).hexdigest()


def complete(dev: str, image: Path) -> bool:
    return sha(dev, IMAGE_SIZE) == sha(image, IMAGE_SIZE)


def image_table_seen(dev: str) -> bool:
    """Whether sgdisk or blkid read ``dev`` as the image's disk (its GUID or its table)."""
    blkid = run("blkid", "-p", "-o", "export", dev, check=False).stdout.decode().upper()
    printed = run("sgdisk", "-p", dev, check=False).stdout.decode().upper()
    return IMAGE_GUID in blkid or IMAGE_GUID in printed or " ROOT" in printed


def assert_complete_or_no_table(dev: str, image: Path) -> None:
    if complete(dev, image):
        # Every byte of the image, read by sgdisk as the image's disk; its only remark is
        # the backup GPT at the image's end, which the step after the copy moves.
        assert IMAGE_GUID in out("sgdisk", "-p", dev).upper()
        problems = out("sgdisk", "-v", dev)
        assert "No problems found" in problems or "Identified 1 problems" in problems, problems
    else:
        assert not image_table_seen(dev), out("sgdisk", "-p", dev)


def our_loops(backing: Path) -> list[str]:
    """The loop devices attached to this backing file (by inode, see machine_state)."""
    return loops_backed_by(backing)


# -- deploy: in-process faults -------------------------------------------------------------

def _failing_target(monkeypatch, *, at: int, error: int, method: str = "pwrite", sticky: bool = False):
    """Make Target.<method> fail with ``error``: pwrite/write_zeros on the call whose range
    covers byte ``at - 1``, sync on its call number ``at``. ``sticky``: from then on every
    write, sync and file access fails too (the device is gone)."""
    state = {"syncs": 0, "failed": False}
    originals = {name: getattr(Target, name) for name in ("pwrite", "write_zeros", "sync", "fileobj")}

    def fail(name):
        state["failed"] = True
        exc = OSError(error, os.strerror(error))
        if name == "fileobj":
            raise exc
        raise PartitionError(f"{name} failed: {exc.strerror}") from exc

    def covers(name, args) -> bool:
        if name == "sync":
            state["syncs"] += 1
            return state["syncs"] == at
        offset, length = (args[1], len(args[0])) if name == "pwrite" else (args[0], args[1])
        return offset <= at - 1 < offset + length

    def wrap(name):
        real = originals[name]

        def wrapper(self, *args):
            if sticky and state["failed"]:
                fail(name)
            if name == method and not state["failed"] and covers(name, args):
                fail(name)
            return real(self, *args)
        return wrapper

    for name in originals:
        monkeypatch.setattr(Target, name, wrap(name))
    return state


DEPLOY_FAULTS = [
    ("eio", "pwrite", HOLD + 1, errno.EIO, False),              # the first data after the head
    ("eio", "pwrite", 4 * MiB, errno.EIO, False),               # mid-stream
    ("eio", "pwrite", IMAGE_SIZE, errno.EIO, False),            # the held-back tail (backup GPT)
    ("eio", "pwrite", 1, errno.EIO, False),                     # the head itself, written last
    ("enospc", "pwrite", 3 * MiB, errno.ENOSPC, False),
    ("enospc", "write_zeros", 6 * MiB + 1, errno.ENOSPC, False),   # the image's zero run
    ("eio", "sync", 2, errno.EIO, False),                       # fsync after the body
    ("eio", "sync", 3, errno.EIO, False),                       # fsync after the head
    ("gone", "pwrite", 5 * MiB, errno.ENODEV, True),            # the device disappears
    ("gone", "sync", 2, errno.ENODEV, True),
]


@pytest.mark.parametrize("kind,method,at,error,sticky", DEPLOY_FAULTS)
def test_deploy_fault_leaves_complete_disk_or_no_table(image, tmp_path, monkeypatch, kind, method, at,
                                                       error, sticky):
    fuzz_tally.fault_injected(f"deploy-{kind}")
    with used_disk(tmp_path) as dev:
        state = _failing_target(monkeypatch, at=at, error=error, method=method, sticky=sticky)
        with pytest.raises(PartitionError) as caught:
            write_image(str(image), dev)
        monkeypatch.undo()
        assert state["failed"]
        assert "\n" not in str(caught.value)
        assert not complete(dev, image)
        assert not image_table_seen(dev)
        if not sticky:     # the wipe could write: an empty, valid table
            assert "No problems found" in out("sgdisk", "-v", dev)
    assert our_loops(tmp_path / "target.img") == []
    fuzz_tally.fault_survived(f"deploy-{kind}")


def test_deploy_to_a_really_full_filesystem(image, tmp_path):
    """A regular-file target on a 5 MiB tmpfs: the 8 MiB image cannot fit; the file left
    behind holds no table any tool reads."""
    fuzz_tally.fault_injected("deploy-full-tmpfs")
    mnt = tmp_path / "small"
    mnt.mkdir()
    if run("mount", "-t", "tmpfs", "-o", "size=5M", "tmpfs", mnt, check=False).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        target = mnt / "disk.img"
        with pytest.raises(PartitionError, match="No space left|no space"):
            write_image(str(image), str(target))
        assert not image_table_seen(str(target))
    finally:
        run("umount", mnt)
    fuzz_tally.fault_survived("deploy-full-tmpfs")


# -- deploy: SIGKILL of a real process at chosen points ----------------------------------

KILLER = textwrap.dedent("""
    import os, signal, sys
    from partition.writing.device import Target
    where, at = sys.argv[1].split(":")
    at, syncs = int(at), [0]
    real_pwrite, real_sync = Target.pwrite, Target.sync
    def pwrite(self, data, offset):
        if where == "byte" and offset <= at - 1 < offset + len(data):
            os.kill(os.getpid(), signal.SIGKILL)
        return real_pwrite(self, data, offset)
    def sync(self):
        syncs[0] += 1
        if where == "sync" and syncs[0] == at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_sync(self)
    Target.pwrite, Target.sync = pwrite, sync
    from configdrive.cli import main
    sys.exit(main(["deploy", "--quiet", "--device", sys.argv[2], "--image", sys.argv[3]]))
""")


@pytest.mark.parametrize("point", [f"byte:{HOLD + 1}", f"byte:{4 * MiB}", f"byte:{IMAGE_SIZE}", "byte:1",
                                   "sync:2", "sync:3"])
def test_sigkill_mid_deploy(image, tmp_path, point):
    """Killed as the write covers a byte (1: the head, written last) or at an fsync (3:
    after the head was written: the disk is complete)."""
    fuzz_tally.fault_injected("deploy-sigkill")
    with used_disk(tmp_path) as dev:
        proc = subprocess.run([sys.executable, "-c", KILLER, point, dev, str(image)],
                              capture_output=True, timeout=120)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
        assert_complete_or_no_table(dev, image)
        if point == "sync:3":
            assert complete(dev, image)
    assert our_loops(tmp_path / "target.img") == []
    fuzz_tally.fault_survived("deploy-sigkill")


# -- placement: the config drive written, interrupted at every write -------------------

def _placed_disk(tmp_path: Path) -> Path:
    disk = tmp_path / "placed.img"
    disk.write_bytes(bytes(80 * MiB))
    run("sgdisk", "-n", "1:2048:+8M", "-c", "1:root", disk)
    return disk


@pytest.mark.parametrize("fail_call", [1, 2, 3])
def test_placement_interrupted_before_the_head_leaves_no_drive(tmp_path, monkeypatch, fail_call):
    """place_config_drive writes zeros over old signatures, the drive's body, then its
    first 64 KiB: failing at any write leaves no config-2 filesystem that blkid finds."""
    from configdrive.deploy.placement import place_config_drive
    disk = _placed_disk(tmp_path)
    with loop_device(disk) as dev:
        calls = [0]
        real = Target.pwrite

        def failing(self, data, offset):
            calls[0] += 1
            if calls[0] == fail_call:
                raise PartitionError(f"{self.path}: write at byte {offset} failed: Input/output error")
            return real(self, data, offset)
        monkeypatch.setattr(Target, "pwrite", failing)
        content = Content(meta_data={"uuid": "83679162-1378-4288-a2d4-70e13ec132aa"})
        if fail_call <= 2:       # the body, then the head
            with pytest.raises(PartitionError, match="Input/output error"):
                place_config_drive(dev, content)
        else:
            place_config_drive(dev, content)
        monkeypatch.undo()
        fired = calls[0] >= fail_call          # call 3 is the control: there is no third write
        if fired:
            fuzz_tally.fault_injected("placement")
        table = json.loads(out("sfdisk", "--json", dev))["partitiontable"]
        start = next(int(p["start"]) * 512 for p in table["partitions"] if p.get("name") == "config-v2")
        probe = run("blkid", "-p", "-O", str(start), "-o", "export", dev, check=False).stdout.decode()
        assert ("LABEL=config-2" in probe) == (fail_call > 2), probe
        assert "No problems found" in out("sgdisk", "-v", dev)
    if fired:
        fuzz_tally.fault_survived("placement")


# -- inject: signals to a real process while the guest is mounted ----------------------

SLOW_INJECT = textwrap.dedent("""
    import sys, time
    from configdrive.inject import steps
    def slow(root, metadata):
        print("mounted", root.top, flush=True)
        time.sleep(60)
    steps.inject_metadata = slow
    from configdrive.cli import main
    sys.exit(main(["inject", "--handlers", "loop", "--meta-data", sys.argv[2], sys.argv[1]]))
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_inject_releases_mount_and_loop(tmp_path, sig):
    need_tool("mkfs.ext4", "mount")
    fuzz_tally.fault_injected(f"inject-{signal.Signals(sig).name}")
    guest = tmp_path / "guest.img"
    guest.write_bytes(bytes(16 * MiB))
    run("mkfs.ext4", "-q", "-F", guest)
    meta = tmp_path / "meta_data.json"
    meta.write_text('{"uuid": "83679162-1378-4288-a2d4-70e13ec132aa", "meta": {"a": "b"}}')
    proc = subprocess.Popen([sys.executable, "-c", SLOW_INJECT, str(guest), str(meta)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = proc.stdout.readline().decode()
        if not line.startswith("mounted "):
            proc.kill()
            pytest.fail(f"inject never reached the step: {proc.stderr.read().decode()}")
        mnt = line.split(" ", 1)[1].rstrip("\n")
        # Right now: our guest on one loop device, that device mounted on the very
        # directory the process named. Only these are judged below, not every mount or
        # loop device whose path has some word in it (a checkout named configdrive, the
        # e2e guest build, other runs on the machine).
        [loop] = our_loops(guest)
        assert mounts().get(mnt) == device_number(loop)
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert our_loops(guest) == []
    assert not is_mount_point(mnt) and not os.path.exists(mnt)
    fuzz_tally.fault_survived(f"inject-{signal.Signals(sig).name}")


# -- the SIGKILL matrix: seeded random moments, every image kind, with and without a drive --

MATRIX_OLD_GUID = "0DD0DD00-1111-4222-8333-444455556666"
MATRIX_NEW_GUID = "5EED5EED-2222-4333-8444-555566667777"
MATRIX_KILLS = int(os.environ.get("FAULT_MATRIX_KILLS", "5"))   # per image kind and drive choice

KILL_AT_EVENT = textwrap.dedent("""
    import os, signal, sys
    from partition.writing.device import Target
    kill_at, count_file = int(sys.argv[1]), sys.argv[2]
    events = [0]
    def counted(name):
        real = getattr(Target, name)
        def wrapper(self, *args):
            events[0] += 1
            if events[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(self, *args)
        return wrapper
    for name in ("pwrite", "write_zeros", "sync"):
        setattr(Target, name, counted(name))
    from configdrive.cli import main
    try:
        code = main(sys.argv[3:])
    finally:
        with open(count_file, "w") as fp:
            fp.write(str(events[0]))
    sys.exit(code)
""")


@pytest.fixture(scope="module")
def matrix_disks(tmp_path_factory):
    """The older bootable disk every case starts from, and the new image in three kinds."""
    from conftest import make_gpt_disk
    need_tool("qemu-img")
    d = tmp_path_factory.mktemp("matrix")
    old = make_gpt_disk(d / "old.img", MATRIX_OLD_GUID, seed=11, size=24 * MiB)
    raw = make_gpt_disk(d / "new.raw", MATRIX_NEW_GUID, seed=12, size=16 * MiB)
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, d / "new.qcow2")
    import lzma
    (d / "new.raw.xz").write_bytes(lzma.compress(raw.read_bytes(), preset=1))
    return {"old": old, "raw": raw, "qcow2": d / "new.qcow2", "xz": d / "new.raw.xz"}


def _deploy_killed_at(kill_at: int, dev: str, image: Path, drive: bool, count_file: Path):
    args = ["deploy", "--quiet", "--device", dev, "--image", str(image)]
    if drive:
        args += ["--hostname", "matrix-node", "--uuid", "83679162-1378-4288-a2d4-70e13ec132aa",
                 "--config-size", "8M", "--format", "vfat"]
    return subprocess.run([sys.executable, "-c", KILL_AT_EVENT, str(kill_at), str(count_file), *args],
                          capture_output=True, timeout=120)


def _state_after_kill(dev: str, old_sha: str, new_raw: Path) -> str:
    """"old" (byte-identical), "none" (no table any tool shows) or "new" (the new disk's
    table, every byte of its partitions' data in place); anything else fails."""
    if sha(dev, 24 * MiB) == old_sha:
        return "old"
    printed = run("sgdisk", "-p", dev, check=False).stdout.decode().upper()
    probed = run("blkid", "-p", "-o", "export", dev, check=False).stdout.decode().upper()
    assert MATRIX_OLD_GUID not in printed + probed, f"the old table survives a changed disk:\n{printed}"
    if MATRIX_NEW_GUID not in printed + probed:
        assert " ROOT" not in printed and "\nTYPE=" not in "\n" + probed, printed + probed
        return "none"
    # The new table is visible only once the image is whole: its data must all be there.
    with open(dev, "rb") as disk, open(new_raw, "rb") as image:
        for start, length in ((1 * MiB, 6 * MiB), (7 * MiB, 4 * MiB)):
            disk.seek(start)
            image.seek(start)
            assert disk.read(length) == image.read(length), f"partition data at {start} differs"
    return "new"


def _drive_state(dev: str) -> str:
    """A config partition after a kill: a whole config-2 filesystem, or none blkid sees."""
    table = json.loads(out("sfdisk", "--json", dev))["partitiontable"]
    config = [p for p in table["partitions"] if p.get("name") == "config-v2"]
    if not config:
        return "no-drive"
    probe = run("blkid", "-p", "-O", str(int(config[0]["start"]) * 512), "-o", "export", dev,
                check=False).stdout.decode()
    if "LABEL=config-2" in probe:
        return "drive"
    assert "TYPE=" not in probe, probe
    return "drive-unreadable"


@pytest.mark.parametrize("drive", [False, True], ids=["image", "image+drive"])
@pytest.mark.parametrize("kind", ["raw", "qcow2", "xz"])
def test_sigkill_matrix(matrix_disks, tmp_path, kind, drive):
    """SIGKILL before the k-th write, fsync or zeroing of a real deploy (k seeded at random
    over the events a clean run makes, k = 1 always: before the first write). After each
    kill the loop device holds the old disk untouched, no partition table at all, or (once
    the image's first MiB, written last, is down: only the final fsync, the backup GPT's
    move or the config drive's placement were left) the new disk with all of its data."""
    old_sha = sha(matrix_disks["old"], 24 * MiB)
    image = matrix_disks[kind]
    backing = tmp_path / "disk.img"
    count_file = tmp_path / "events"
    backing.write_bytes(matrix_disks["old"].read_bytes())
    with loop_device(backing) as dev:      # control: counts the events; injects nothing
        control = _deploy_killed_at(0, dev, image, drive, count_file)
        assert control.returncode == 0, control.stderr.decode()
    events = int(count_file.read_text())
    rng = random.Random(f"{kind}-{drive}")
    moments = [1] + sorted(rng.sample(range(2, events + 1), min(MATRIX_KILLS - 1, events - 1)))
    states = []
    for kill_at in moments:
        backing.write_bytes(matrix_disks["old"].read_bytes())
        with loop_device(backing) as dev:
            proc = _deploy_killed_at(kill_at, dev, image, drive, count_file)
            assert proc.returncode == -signal.SIGKILL, (kill_at, proc.stderr.decode())
            fuzz_tally.fault_injected(f"sigkill-{kind}{'+drive' if drive else ''}")
            state = _state_after_kill(dev, old_sha, matrix_disks["raw"])
            if state == "new" and drive:
                state += "+" + _drive_state(dev)
            if kill_at == 1:
                assert state == "old", "killed before the first write, yet the disk changed"
            states.append(state)
            fuzz_tally.fault_survived(f"sigkill-{kind}{'+drive' if drive else ''}")
        assert our_loops(backing) == []
    print(f"sigkill {kind}{' + drive' if drive else ''}: {events} events, kills at {moments}: {states}")
