"""Running the host tools the handlers drive (losetup, mount, kpartx, qemu-nbd, debugfs),
each call logged the way nova logged them, each failure one line naming the command."""

from __future__ import annotations

import logging
import subprocess
import time
from typing import Callable, TypeVar

from partition.tools import failure, run, udev_settle, which

from ..errors import ConfigDriveError

log = logging.getLogger("configdrive.inject")
T = TypeVar("T")

__all__ = ["ToolError", "retry", "run_tool", "settle", "wait_for", "which"]


class ToolError(ConfigDriveError):
    """A host tool failed; the message names the command and its complaint."""


def run_tool(*cmd: str, check: bool = True, input: bytes | None = None,
             pass_fds: tuple[int, ...] = (), quiet: bool = False,
             max_stdout: int | None = None) -> subprocess.CompletedProcess:
    """Run a host tool (partition/tools.py), logging the command unless ``quiet``; with
    ``check``, a failure raises :class:`ToolError` in the runner's one-line form."""
    exe = which(cmd[0])
    if exe is None:
        raise ToolError(f"{cmd[0]}: not installed")
    if not quiet:
        log.debug("%s", " ".join(cmd))
    proc = run(exe, cmd[1:], input=input, pass_fds=pass_fds, max_stdout=max_stdout)
    if check and proc.returncode != 0:
        raise ToolError(failure(cmd, proc))
    return proc


def retry(action: Callable[[], T], what: str, attempts: int = 10, delay: float = 0.2) -> T:
    """Run ``action`` until it stops raising; the kernel can take a moment to let go of
    a device (EBUSY from umount, losetup -d, kpartx -d) after its last user closed it."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except ConfigDriveError as exc:
            if attempt == attempts:
                raise ToolError(f"{what}: still failing after {attempts} attempts: {exc}") from exc
            log.debug("%s failed (%s); retrying", what, exc)
            settle()
            time.sleep(delay * attempt)
    raise AssertionError("unreachable")


def settle() -> None:
    """Let udev finish creating or removing device nodes (no wait where it does not run)."""
    udev_settle(5)


def wait_for(check: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
