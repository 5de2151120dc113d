"""The loop handler: attach the raw image to a loop device, reach the partition, mount
it on the host. Fast and common, but the host kernel parses the guest filesystem, and it
cannot serve copy-on-write images (the loop device would see the container's bytes)."""

from __future__ import annotations

from .blockdev import mount, partition_node
from .handler import Handler, needs_root
from .hostroot import HostDirRoot
from .target import Target, locate
from .tools import retry, run_tool, which


class LoopHandler(Handler):
    name = "loop"

    def unusable(self, target: Target) -> str | None:
        if target.cow:
            return f"copy-on-write image ({target.format}): a loop device sees only the raw bytes"
        if reason := needs_root():
            return f"{reason} (losetup, mount)"
        for tool in ("losetup", "mount"):
            if which(tool) is None:
                return f"{tool} is not installed"
        return None

    def attach(self, target: Target) -> HostDirRoot:
        # --partscan asks the kernel for /dev/loopNpK; kernels that ignore it get partx.
        # The held image, through its descriptor (target.py says why), never its name.
        dev = run_tool("losetup", "--find", "--show", "--partscan", target.node,
                       pass_fds=(target.fd,)).stdout.decode().strip()
        self.cleanup.callback(retry, lambda: run_tool("losetup", "--detach", dev), f"losetup --detach {dev}")
        self.device = dev
        self.slice = locate(dev, target.partition)
        return HostDirRoot(mount(partition_node(dev, self.slice, self.cleanup), self.cleanup))
