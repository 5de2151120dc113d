"""The nbd handler: qemu-nbd exports any image qemu reads (qcow2 included) as
/dev/nbdX; the partition is then mounted on the host as with loop."""

from __future__ import annotations

import fcntl
import glob
import os

from .blockdev import mount, partition_node
from .handler import Handler, needs_root
from .hostroot import HostDirRoot
from .target import Target, locate
from .tools import ToolError, retry, run_tool, wait_for, which

# Picking a free device and connecting it must not interleave between two injectors,
# or both pick the same /dev/nbdX; a lock file serialises that short window.
LOCK_PATH = "/run/lock/configdrive-nbd.lock"
CONNECT_TIMEOUT = 10.0


def _devices() -> list[str]:
    return sorted(glob.glob("/sys/block/nbd*"), key=lambda p: int(p.rsplit("nbd", 1)[1]))


def _in_use(sysdir: str) -> bool:
    return os.path.exists(os.path.join(sysdir, "pid"))


class NbdHandler(Handler):
    name = "nbd"

    def unusable(self, target: Target) -> str | None:
        if reason := needs_root():
            return f"{reason} (qemu-nbd -c, mount)"
        if which("qemu-nbd") is None:
            return "qemu-nbd (qemu-utils) is not installed"
        if not _devices():
            if which("modprobe") is None:
                return "no nbd kernel module (no /sys/block/nbd*, and no modprobe to load one)"
            run_tool("modprobe", "nbd", check=False)
        if not _devices():
            return "no nbd kernel module (no /sys/block/nbd*; modprobe nbd failed)"
        return None

    def attach(self, target: Target) -> HostDirRoot:
        dev = self._connect(target)
        self.slice = locate(dev, target.partition)
        return HostDirRoot(mount(partition_node(dev, self.slice, self.cleanup), self.cleanup))

    def _connect(self, target: Target) -> str:
        os.makedirs(os.path.dirname(LOCK_PATH), exist_ok=True)
        with open(LOCK_PATH, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            for sysdir in _devices():
                if _in_use(sysdir):
                    continue
                dev = "/dev/" + os.path.basename(sysdir)
                # The held image, through its descriptor (target.py says why).
                proc = run_tool("qemu-nbd", "-c", dev, "-f", target.format, target.node,
                                check=False, pass_fds=(target.fd,))
                if proc.returncode != 0:
                    continue    # taken by someone who does not use our lock; try the next
                self.cleanup.callback(retry, lambda: run_tool("qemu-nbd", "-d", dev), f"qemu-nbd -d {dev}")
                if not wait_for(lambda: _in_use(sysdir), CONNECT_TIMEOUT):
                    raise ToolError(f"qemu-nbd -c {dev} {target.path}: device not ready after {CONNECT_TIMEOUT:.0f} s")
                self.device = dev
                return dev
        raise ToolError("no free /dev/nbdX device")
