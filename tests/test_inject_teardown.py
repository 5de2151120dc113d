"""The loop handler always gives the image back: on success, when a step is
interrupted (Ctrl-C), and when attaching fails half-way; checked by the image's own loop
devices (its inode) and the exact mount point the handler made."""

from __future__ import annotations

import pytest

from configdrive.model.content import Content, InjectedFile
from configdrive.inject import NoHandlerError, inject, steps
from conftest import is_root, need_tool
from inject_images import attached_loops, ext4_image, gpt_image, guest_tree, mounts_released, record_loop_mounts
from machine_state import is_mount_point

pytestmark = pytest.mark.root


@pytest.fixture(autouse=True)
def _root():
    if not is_root():
        pytest.skip("the loop handler needs root")
    need_tool("losetup", "mount", "partx")


def test_ctrl_c_during_a_step_unmounts_and_detaches(tmp_path, monkeypatch):
    img = ext4_image(tmp_path / "guest.img", guest_tree(tmp_path))
    made = record_loop_mounts(monkeypatch)
    seen = []

    def interrupted(root, metadata):
        seen.append((root.top, is_mount_point(root.top), attached_loops(img)))
        raise KeyboardInterrupt

    monkeypatch.setattr(steps, "inject_metadata", interrupted)
    with pytest.raises(KeyboardInterrupt):
        inject(str(img), Content(meta_data={"meta": {"a": "b"}}), handlers=["loop"])
    # It really was mounted, on the directory the handler made, when the step ran.
    [(top, mounted, loops)] = seen
    assert made == [top] and mounted and len(loops) == 1
    assert mounts_released(made)
    assert attached_loops(img) == []


def test_failed_mandatory_step_still_tears_down(tmp_path, monkeypatch):
    made = record_loop_mounts(monkeypatch)
    tree = guest_tree(tmp_path)
    (tree / "srv").write_text("a file where a directory is needed\n")
    img = ext4_image(tmp_path / "guest.img", tree)
    with pytest.raises(steps.InjectionError, match="srv: is a file, expected a dir"):
        inject(str(img), Content(files=[InjectedFile("srv/app/x", b"1")]), handlers=["loop"])
    assert len(made) == 1 and mounts_released(made) and attached_loops(img) == []


def test_no_partition_node_is_a_reason_and_detaches(tmp_path, monkeypatch):
    """Without partx or kpartx (and a kernel that makes no loopNpK), attach fails; the
    loop device it had taken is given back and the error says what was tried."""
    from configdrive.inject import blockdev
    disk = gpt_image(tmp_path / "disk.img", ext4_image(tmp_path / "root.ext4", guest_tree(tmp_path)))
    monkeypatch.setattr(blockdev, "which", lambda name: None)
    with pytest.raises(NoHandlerError, match=r"loop: could not attach: .*no device node for partition 2"):
        inject(str(disk), Content(meta_data={"meta": {"a": "b"}}), handlers=["loop"])
    assert attached_loops(disk) == []
