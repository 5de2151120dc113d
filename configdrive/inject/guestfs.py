"""The guestfs handler: libguestfs runs the guest filesystem inside its own small
appliance VM, so the host kernel never parses it; guestmount exposes it over FUSE and the
steps run on that directory like on any mount."""

from __future__ import annotations

import os
import tempfile

from .handler import Handler
from .hostroot import HostDirRoot
from .target import Target
from .tools import retry, run_tool, which


class GuestfsHandler(Handler):
    name = "guestfs"

    def unusable(self, target: Target) -> str | None:
        if which("guestmount") is None:
            return "libguestfs is not installed (no guestmount)"
        if not os.path.exists("/dev/fuse"):
            return "no /dev/fuse for guestmount"
        return None

    def attach(self, target: Target) -> HostDirRoot:
        mnt = tempfile.mkdtemp(prefix="configdrive-guestfs-")
        self.cleanup.callback(os.rmdir, mnt)
        # Inside the appliance the image is /dev/sda; "auto" lets libguestfs's inspection
        # find the operating system's root, as nova's guestfs driver did.
        if target.partition == "auto":
            where = ["-i"]
        elif target.partition == "none":
            where = ["-m", "/dev/sda"]
        else:
            where = ["-m", f"/dev/sda{target.partition}"]
        # By name, the one handler that still is: libguestfs opens the drive in processes
        # of its own (qemu-img, its appliance's qemu), and whether a /dev/fd/N of ours
        # would still name the image there is not known (no libguestfs on the machines
        # this is tested on). The name was checked once (Target.open); a file renamed
        # over it since would be what the appliance edits, inside its VM (the host kernel
        # never parses it).
        run_tool("guestmount", "--rw", "-a", target.path, "--format", target.format, *where, mnt)
        unmount = ("guestunmount", mnt) if which("guestunmount") else ("fusermount", "-u", mnt)
        self.cleanup.callback(retry, lambda: run_tool(*unmount), f"{' '.join(unmount)}")
        return HostDirRoot(mnt)
