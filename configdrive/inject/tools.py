"""Running the host tools the handlers drive (losetup, mount, kpartx, qemu-nbd, debugfs),
each call logged the way nova logged them, each failure one line naming the command."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
from typing import Callable, TypeVar

from ..errors import ConfigDriveError

log = logging.getLogger("configdrive.inject")
T = TypeVar("T")

# Debian keeps admin tools in sbin, which a non-root PATH often lacks.
_SBIN = ("/usr/sbin", "/sbin")


def which(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in _SBIN:
        if os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    return None


class ToolError(ConfigDriveError):
    """A host tool failed; the message names the command and its complaint."""


def run_tool(*cmd: str, check: bool = True, input: bytes | None = None,
             pass_fds: tuple[int, ...] = (), quiet: bool = False,
             max_stdout: int | None = None) -> subprocess.CompletedProcess:
    """Run a host tool, capturing its output. With ``max_stdout``, the tool is killed once
    it has printed more than that many bytes (the caller sees max_stdout + 1 of them):
    what it prints may be a guest's file, of whatever size the guest claims."""
    exe = which(cmd[0])
    if exe is None:
        raise ToolError(f"{cmd[0]}: not installed")
    if not quiet:
        log.debug("%s", " ".join(cmd))
    if max_stdout is None:
        proc = subprocess.run([exe, *cmd[1:]], input=input, capture_output=True, pass_fds=pass_fds)
    else:
        proc = _run_capped([exe, *cmd[1:]], input, pass_fds, max_stdout)
    if check and proc.returncode != 0:
        why = proc.stderr.decode(errors="replace").strip().splitlines()
        raise ToolError(f"{' '.join(cmd)}: exited {proc.returncode}"
                        + (f" ({why[-1].strip()})" if why else ""))
    return proc


def _run_capped(argv: list[str], input: bytes | None, pass_fds: tuple[int, ...],
                max_stdout: int) -> subprocess.CompletedProcess:
    with tempfile.TemporaryFile() as errors, subprocess.Popen(
            argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=errors, pass_fds=pass_fds) as proc:
        if input is not None:
            proc.stdin.write(input)
            proc.stdin.close()
        chunks, received = [], 0
        while received <= max_stdout and (chunk := proc.stdout.read1(1 << 16)):
            chunks.append(chunk)
            received += len(chunk)
        if received > max_stdout:
            proc.kill()
        returncode = proc.wait()
        errors.seek(0)
        return subprocess.CompletedProcess(argv, returncode, b"".join(chunks)[:max_stdout + 1], errors.read())


def retry(action: Callable[[], T], what: str, attempts: int = 10, delay: float = 0.2) -> T:
    """Run ``action`` until it stops raising; the kernel can take a moment to let go of
    a device (EBUSY from umount, losetup -d, kpartx -d) after its last user closed it."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except ConfigDriveError as exc:
            if attempt == attempts:
                raise ToolError(f"{what}: still failing after {attempts} attempts: {exc}") from None
            log.debug("%s failed (%s); retrying", what, exc)
            settle()
            time.sleep(delay * attempt)
    raise AssertionError("unreachable")


def settle() -> None:
    """Let udev finish creating or removing device nodes."""
    if which("udevadm"):
        subprocess.run([which("udevadm") or "udevadm", "settle", "--timeout=5"], capture_output=True)


def wait_for(check: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
