"""A fresh ``git clone`` passes the tests that look at mounts and loop devices, in a folder
named as a plain clone names it (``configdrive``), while a mount with that word in its
path exists.

This is how `make test` failed for a new user: their checkout was called configdrive,
the e2e guest build beside the fault tests had proc and sys mounted under its
tests/.cache/, and a test that searched /proc/mounts for the word "configdrive" saw them.
The tests now judge only what they made themselves (tests/machine_state.py); this runs
them from such a clone with such a mount in place.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, is_root, run
from machine_state import is_mount_point

pytestmark = [pytest.mark.root, pytest.mark.slow]

# Every test that judges mounts or loop devices left behind, by node id (parametrized
# ones by the loop handler, the one that mounts).
MOUNT_AND_LOOP_TESTS = [
    "tests/fuzz/test_faults.py::test_signal_during_inject_releases_mount_and_loop",
    "tests/fuzz/test_faults.py::test_deploy_to_a_really_full_filesystem",
    "tests/test_inject_teardown.py",
    "tests/test_inject_handlers.py::test_raw_image[loop]",
    "tests/test_inject_handlers.py::test_gpt_image_auto_partition_selinux[loop]",
    "tests/test_inject_handlers.py::test_planted_ssh_symlink_is_refused[loop-absolute]",
    "tests/test_inject_handlers.py::test_file_through_symlinked_directory_fails[loop]",
    "tests/test_placement.py::test_mounted_partition_makes_the_deploy_refuse_with_its_name",
    # Not mounts, the same class: the IPA manager told an image's refusal from a write's
    # by a substring of the raising file's path, "/configdrive/"; in a clone of that name
    # every failure became a DeploymentError. Its agent venv is the clone's own
    # (build/ipa-peer, made from the peers), so the path holds the clone's name.
    "tests/test_ironic.py::test_hostile_image_fails_the_step_with_the_disk_untouched",
    "tests/test_ironic.py::test_redeploy_refused_when_an_old_partition_is_held",
]
EXPECTED_PASSED = 15     # the node ids above, expanded (two signals, three teardown tests,
                         # three hostile images)


def test_clone_named_configdrive_passes_beside_a_configdrive_mount(tmp_path):
    if not is_root():
        pytest.skip("the tests it runs need loop devices and mounts (root)")
    if shutil.which("git") is None or run("git", "-C", ROOT, "rev-parse", check=False).returncode:
        pytest.skip("not a git checkout: there is nothing to clone")
    clone = tmp_path / "configdrive"
    run("git", "clone", "-q", ROOT, clone)
    if (ROOT / ".peers" / "ipa").is_dir():      # the peers, as `make test` installs them
        (clone / ".peers").symlink_to(ROOT / ".peers")

    # What the e2e guest build leaves while it runs: a mount under the clone's
    # tests/.cache/, so its path holds the word "configdrive".
    source = tmp_path / "bind-source"
    source.mkdir()
    guest_proc = clone / "tests/.cache/e2e-guest-probe/root/proc"
    guest_proc.mkdir(parents=True)
    run("mount", "--bind", source, guest_proc)
    try:
        assert is_mount_point(guest_proc)
        # The very condition the old substring check tripped over.
        assert "configdrive" in Path("/proc/mounts").read_text()
        pytest_exe = Path(sys.executable).with_name("pytest")
        proc = subprocess.run([str(pytest_exe), "-q", "-rs", "-p", "no:cacheprovider", *MOUNT_AND_LOOP_TESTS],
                              cwd=clone, capture_output=True, text=True, timeout=900)
    finally:
        run("umount", guest_proc)
    assert not is_mount_point(guest_proc)
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    # All of them ran (none skipped, none deselected) and passed, from the clone's tests.
    assert f"{EXPECTED_PASSED} passed" in summary and "skipped" not in summary, summary
