"""What the loop and nbd handlers share once the image is a block device: reach the
partition's node, mount it, and register the undo of each step as it succeeds."""

from __future__ import annotations

import contextlib
import os
import tempfile

from .target import Slice
from .tools import ToolError, retry, run_tool, settle, wait_for, which

# Guest filesystems are untrusted: no set-id programs, device nodes or executables from
# them while they are mounted on the host.
MOUNT_OPTIONS = "nosuid,nodev,noexec"


def partition_node(dev: str, part: Slice, cleanup: contextlib.ExitStack) -> str:
    """The device node of ``part`` on ``dev``: the kernel's own (``/dev/loop0p2``) when it
    made one, else one added with BLKPG (``partx -a``), else a device-mapper node from
    kpartx. kpartx can complain and still exit 0, so success is judged by the node."""
    if part.number is None:
        return dev
    kernel_node = f"{dev}p{part.number}"
    settle()
    if os.path.exists(kernel_node):
        return kernel_node
    if which("partx"):
        added = run_tool("partx", "-a", "--nr", str(part.number), dev, check=False)
        if added.returncode == 0:
            cleanup.callback(retry, lambda: run_tool("partx", "-d", "--nr", str(part.number), dev),
                             f"partx -d {dev}")
        if wait_for(lambda: os.path.exists(kernel_node), timeout=5):
            return kernel_node
    if which("kpartx"):
        if run_tool("kpartx", "-a", "-s", dev, check=False).returncode == 0:
            cleanup.callback(retry, lambda: run_tool("kpartx", "-d", dev), f"kpartx -d {dev}")
        mapper_node = f"/dev/mapper/{os.path.basename(dev)}p{part.number}"
        if wait_for(lambda: os.path.exists(mapper_node), timeout=5):
            return mapper_node
    raise ToolError(f"{dev}: no device node for partition {part.number} (tried the kernel's, partx and kpartx)")


def mount(node: str, cleanup: contextlib.ExitStack) -> str:
    """Mount ``node`` on a fresh private directory; unmount (retried) and remove it after."""
    mnt = tempfile.mkdtemp(prefix="configdrive-inject-")
    cleanup.callback(os.rmdir, mnt)
    run_tool("mount", "-o", MOUNT_OPTIONS, node, mnt)
    cleanup.callback(retry, lambda: run_tool("umount", mnt), f"umount {mnt}")
    return mnt
