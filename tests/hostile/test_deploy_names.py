"""Names against handles: the name given to ``deploy --device`` re-pointed at another
disk while the deploy runs, as udev re-points a /dev/disk/by-* link when disks
re-enumerate (a symlink here) or as a re-enumerated /dev/sdX is another disk's node (a
device node here, replaced by one for the other disk).

Two loop devices, A and B, each holding an older GPT disk; the name leads to A when the
deploy starts. What a user would check: the image and the drive on the disk the deploy
opened (cmp, sgdisk, blkid at the config partition's offset), the summary naming that
disk by major:minor, the other disk byte-identical (sha256), and after a failure the
wipe on the opened disk, not on the one the name leads to by then. The property test
re-points the name in a loop for the whole run and follows every system call of the
deploy with strace: one block device, the one first opened, is ever used.
"""

from __future__ import annotations

import json
import os
import random
import re
import stat
import subprocess
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import loop_device, make_gpt_disk, need_tool, out, run
from harness import EXE, HANG_GUARD, Outcome, assert_refused, digest, refused, run_measured

MiB = 1 << 20
IMAGE_GUID = "5EED0A0B-1111-4222-8333-444455556666"
OLD_GUIDS = {"A": "0DD0000A-1111-4222-8333-444455556666", "B": "0DD0000B-1111-4222-8333-444455556666"}
DISK_SIZE = 48 * MiB
UUID = "83679162-1378-4288-a2d4-70e13ec132aa"

pytestmark = pytest.mark.root


@pytest.fixture(autouse=True)
def _tools():
    need_tool("sgdisk", "blkid", "cmp", "losetup")


@pytest.fixture
def image(tmp_path) -> Path:
    """A 12 MiB OS image: root at 1 MiB, data after it (conftest.make_gpt_disk)."""
    return make_gpt_disk(tmp_path / "os.raw", IMAGE_GUID, seed=11, size=12 * MiB)


@pytest.fixture
def disks(tmp_path):
    """{"A": /dev/loopX, "B": /dev/loopY}, each over an older GPT disk."""
    with ExitStack() as stack:
        yield {side: stack.enter_context(loop_device(
                   make_gpt_disk(tmp_path / f"disk-{side}.img", guid, seed=ord(side), size=DISK_SIZE)))
               for side, guid in OLD_GUIDS.items()}


def point(name: Path, kind: str, dev: str) -> None:
    """Make ``name`` lead to ``dev`` in one step (rename over it): a symlink, as udev's
    by-id links, or a block device node of ``dev``'s number, as a re-created /dev/sdX."""
    new = name.with_name(name.name + ".new")
    if kind == "link":
        os.symlink(dev, new)
    else:
        os.mknod(new, stat.S_IFBLK | 0o600, os.stat(dev).st_rdev)
    os.replace(new, name)


def number(dev: str) -> str:
    rdev = os.stat(dev).st_rdev
    return f"{os.major(rdev)}:{os.minor(rdev)}"


def flocked(inode: os.stat_result) -> bool:
    """Whether some process holds a flock on this inode (the kernel's /proc/locks)."""
    key = f"{os.major(inode.st_dev):02x}:{os.minor(inode.st_dev):02x}:{inode.st_ino}"
    return any(line.split()[1] == "FLOCK" and line.split()[5] == key
               for line in Path("/proc/locks").read_text().splitlines() if "->" not in line)


def repoint_once_opened(name: Path, kind: str, dev: str):
    """For the harness's ``before_input``: wait until the deploy holds what ``name`` led
    to (its flock), then point ``name`` at ``dev``; the image then streams from stdin."""
    held = os.stat(name)

    def act():
        deadline = time.monotonic() + HANG_GUARD
        while not flocked(held):
            assert time.monotonic() < deadline, f"the deploy never locked {name}"
            time.sleep(0.02)
        point(name, kind, dev)
    return act


def image_on(dev: str, image: Path) -> bool:
    """The image's partitions' bytes (1 MiB on; its first MiB holds the GPT that the
    config partition changes) and its disk GUID, as cmp and sgdisk read them."""
    same = run("cmp", "-i", "1M:1M", "-n", str(image.stat().st_size - 2 * MiB), image, dev,
               check=False).returncode == 0
    return same and IMAGE_GUID in out("sgdisk", "-p", dev).upper()


def no_table(dev: str) -> bool:
    printed = out("sgdisk", "-p", dev).upper()
    return IMAGE_GUID not in printed and not any(g in printed for g in OLD_GUIDS.values()) \
        and printed.rstrip().endswith("NAME")


@pytest.mark.parametrize("kind", ["link", "node"])
def test_name_repointed_while_the_image_streams(tmp_path, disks, image, kind):
    """The issue's case: OS and drive on A, whatever the name leads to meanwhile; B as it
    was; the summary names A by major:minor."""
    name = tmp_path / "disk-by-id"
    point(name, kind, disks["A"])
    b_before = digest(disks["B"])
    outcome = run_measured("deploy", "--json", "--device", name, "--image", "-",
                           "--uuid", UUID, "--hostname", "node-7", "--config-size", "8M",
                           input=image.read_bytes(),
                           before_input=repoint_once_opened(name, kind, disks["B"]))
    assert outcome.returncode == 0, outcome.stderr
    assert os.stat(name).st_rdev == os.stat(disks["B"]).st_rdev     # the name leads to B now
    assert digest(disks["B"]) == b_before
    assert image_on(disks["A"], image)
    summary = json.loads(outcome.stdout)
    start = summary["config_drive"]["partition"]["start"]
    probed = out("blkid", "-p", "-o", "export", "-O", str(start), disks["A"])
    assert "LABEL=config-2" in probed, probed
    assert summary["target"]["dev"] == number(disks["A"]), summary["target"]
    assert summary["target"]["name"] == disks["A"]
    # The lines a person reads name it too: the name given, and the disk it led to.
    assert f"to {name} (block device {number(disks['A'])}, {disks['A']}): " in outcome.stderr
    assert f"of {name} (block device {number(disks['A'])}, {disks['A']})" in outcome.stderr


@pytest.mark.parametrize("kind", ["link", "node"])
@pytest.mark.parametrize("failure", ["checksum", "drive"])
def test_failure_wipes_the_disk_written_not_the_one_named_now(tmp_path, disks, image, kind, failure):
    """A failure in the copy (the checksum) or after it (a drive that is no drive): the
    disk the image went to is wiped, B (where the name leads by then) is left as it was."""
    name = tmp_path / "disk-by-id"
    point(name, kind, disks["A"])
    args = ["--checksum", "sha256:" + "0" * 64] if failure == "checksum" else \
        ["--config-drive", tmp_path / "not-a-drive.bin", "--config-size", "8M"]
    (tmp_path / "not-a-drive.bin").write_bytes(random.Random(3).randbytes(64 << 10))
    line = refused("deploy", "--quiet", "--device", name, "--image", "-", *args,
                   input=image.read_bytes(), watch=[disks["B"]],
                   names="checksum" if failure == "checksum" else "not-a-drive.bin",
                   before_input=repoint_once_opened(name, kind, disks["B"]))
    # The line names the disk wiped, not only the name that leads to B by now.
    assert f"{name} (block device {number(disks['A'])}) now holds an empty partition table" in line
    assert no_table(disks["A"]), out("sgdisk", "-p", disks["A"])
    assert OLD_GUIDS["B"] in out("sgdisk", "-p", disks["B"]).upper()


# -- the property: one device from the first open to the last write -------------------------

def traced_deploy(log: Path, *args) -> subprocess.CompletedProcess:
    """The command under strace, its threads and children included. What is read from the
    log is each fstat's result (st_rdev, as the kernel returned it for the descriptor),
    not strace's -yy decoration: strace names a descriptor's device by stat()ing the path
    the descriptor was opened by, so with a name re-pointed it shows the other disk for
    a descriptor that still writes the first (seen while writing this test)."""
    return subprocess.run(["strace", "-f", "-qq", "-s", "0", "-e", "trace=%desc",
                           "-e", "signal=none", "-o", str(log), EXE, *map(str, args)],
                          capture_output=True, timeout=4 * HANG_GUARD)


def written_to(dev: str) -> tuple[str, ...]:
    """The kernel's count of write, discard and flush requests the device has served
    (/sys/dev/block/MAJ:MIN/stat; Documentation/block/stat.rst), and the partitions it
    shows: what any write or BLKPG call onto it would change."""
    sysdir = Path("/sys/dev/block") / number(dev)
    fields = (sysdir / "stat").read_text().split()
    return (*(fields[i] for i in (4, 11, 15) if i < len(fields)),
            *sorted(p.parent.name for p in sysdir.glob("*/partition")))


def flipping(name: Path, kind: str, devs: list[str], period: float):
    """Re-point ``name`` between ``devs`` every ``period`` seconds until stopped."""
    stop = threading.Event()

    def run_flips():
        i = 0
        while not stop.is_set():
            i += 1
            point(name, kind, devs[i % 2])
            stop.wait(period)
    thread = threading.Thread(target=run_flips, daemon=True)
    thread.start()

    def end():
        stop.set()
        thread.join()
    return end


@settings(max_examples=8, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(kind=st.sampled_from(["link", "node"]), first=st.sampled_from(["A", "B"]),
       period_ms=st.integers(1, 40), job=st.sampled_from(["image", "image+drive", "bad checksum"]))
def test_one_device_from_first_open_to_last_write(tmp_path_factory, disks, image, kind, first,
                                                  period_ms, job):
    """The name re-pointed between A and B every few milliseconds for the whole run (the
    flipping ends with the command, whose hang guard bounds it): every descriptor on a
    block device that the deploy checks is the device of its first one; the other disk
    served no write, discard or flush and shows the partitions it showed; the summary
    names the device written."""
    need_tool("strace")
    work = tmp_path_factory.mktemp("flip")
    name = work / "disk-by-id"
    order = [first, "B" if first == "A" else "A"]
    point(name, kind, disks[order[0]])
    args = ["deploy", "--json", "--device", name, "--image", image]
    if job == "image+drive":
        args += ["--hostname", "node-7", "--config-size", "8M"]
    if job == "bad checksum":
        args += ["--checksum", "sha256:" + "0" * 64]
    log = work / "strace.log"
    before = {side: (digest(dev), written_to(dev)) for side, dev in disks.items()}
    end = flipping(name, kind, [disks[s] for s in order], period_ms / 1000)
    try:
        proc = traced_deploy(log, *args)
    finally:
        end()
    # fstat on a descriptor (not a stat of a path: the partitions' nodes are looked up by
    # name on purpose, and proven by number, in partition/writing/rescan.py).
    seen = [f"{int(major, 0)}:{int(minor, 0)}" for major, minor in re.findall(
        r"(?:fstat|newfstatat)\(\d+, (?:\"\", )?\{st_mode=S_IFBLK\|\d+, "
        r"st_rdev=makedev\((\w+), (\w+)\)", log.read_text())]
    assert seen, "strace saw no block device opened"
    opened = seen[0]
    assert set(seen) == {opened}, f"first opened {opened}, then {sorted(set(seen))}"
    written = next(side for side, dev in disks.items() if number(dev) == opened)
    other = "B" if written == "A" else "A"
    assert written_to(disks[other]) == before[other][1], f"{other} was written; the deploy opened {written}"
    assert digest(disks[other]) == before[other][0]
    assert written_to(disks[written])[:1] != before[written][1][:1]
    if job == "bad checksum":
        assert_refused(_outcome(proc), names="checksum")
        assert no_table(disks[written])
        return
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout)["target"]["dev"] == opened
    assert image_on(disks[written], image)


def _outcome(proc: subprocess.CompletedProcess) -> Outcome:
    """A finished process in the harness's terms (no RSS figure under strace)."""
    return Outcome(proc.returncode, proc.stdout, proc.stderr.decode(errors="replace"), 0.0, 0)


def test_identity_tells_a_reattached_loop_device_from_the_one_before(tmp_path):
    """What a second descriptor is checked against (Target.reopen): the device number
    alone does not tell two disks apart that took the same number one after the other (a
    loop device detached and attached to another file, a re-plugged disk); the kernel's
    disk sequence number does."""
    from partition.writing.device import identity_of
    first, second = tmp_path / "first.img", tmp_path / "second.img"
    for path in (first, second):
        path.write_bytes(bytes(4 * MiB))

    def identity(dev: str) -> tuple:
        fd = os.open(dev, os.O_RDONLY)
        try:
            return identity_of(fd)
        finally:
            os.close(fd)
    # Not conftest.loop_device: its clean-up would detach the number even when another
    # process has taken it in between.
    attached = run("losetup", "--find", "--show", first, check=False)
    if attached.returncode != 0:
        pytest.skip("no loop device")
    dev = attached.stdout.decode().strip()
    before = identity(dev)
    run("losetup", "-d", dev)
    if run("losetup", dev, second, check=False).returncode != 0:
        pytest.skip(f"{dev} was taken by another process once free")
    try:
        after = identity(dev)
    finally:
        run("losetup", "-d", dev)
    assert before[:2] == after[:2]                   # the same block device number
    assert None not in (before[2], after[2]) and before != after


# -- names of files we make ----------------------------------------------------------------
# A refused `deploy --create` removes the empty file it made, and `build -o` writes a
# temporary file beside its output: both act relative to the directory they hold, so a
# name re-pointed meanwhile never removes or writes someone else's file.

def test_a_created_file_is_removed_where_it_was_made_not_where_its_name_leads(tmp_path):
    """The parent of ``--device`` is a link flipped to another directory that holds a file
    of the same name after the target was made: closing the refused target removes the
    file it made, and the other directory's file stays (it was deleted within 130 tries
    of a flipping loop when the name was stat'ed and unlinked)."""
    from partition.writing.device import open_target
    made, other = tmp_path / "A", tmp_path / "B"
    made.mkdir(), other.mkdir()
    (other / "new.img").write_bytes(b"someone else's disk image")
    link = tmp_path / "d"
    link.symlink_to(made)
    target = open_target(link / "new.img", create=True)
    link.unlink()
    link.symlink_to(other)
    target.close()                       # still empty: the deploy was refused
    assert not (made / "new.img").exists()
    assert (other / "new.img").read_bytes() == b"someone else's disk image"


def test_build_output_never_writes_through_a_link_at_its_temporary_name(tmp_path):
    """A link planted at the temporary name ``build -o`` writes first is refused (one line
    naming the output), its target left as it was, and nothing appears at the output."""
    from configdrive.errors import ConfigDriveError
    from configdrive.files.output import atomic_output
    victim = tmp_path / "victim"
    victim.write_bytes(b"host file")
    out = tmp_path / "out.img"
    (tmp_path / f".out.img.tmp{os.getpid()}").symlink_to(victim)
    with pytest.raises(ConfigDriveError, match=r"out\.img: cannot write \(File exists\)"):
        with atomic_output(out) as fp:
            fp.write(b"drive")
    assert victim.read_bytes() == b"host file" and not out.exists()
