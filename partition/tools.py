"""Running a system tool: the one runner both layers use (found in sbin too, output
captured and optionally capped), and the one way a failure is reported: the command, its
exit status and the last line it wrote to stderr.

The standard library's subprocess, not the ``sh`` package: we need capture, stdin,
inherited descriptors and a kill once a tool prints more than a cap (a guest's file read
through debugfs may claim any size), which subprocess gives directly, and a failure must be
one line, where sh's ErrorReturnCode carries the tool's whole output.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from typing import Sequence

# Debian keeps admin tools in sbin, which a non-root PATH often lacks.
_SBIN = ("/usr/sbin", "/sbin")


def which(name: str) -> str | None:
    """The tool's path, looked for on PATH and then in sbin; None when not installed."""
    found = shutil.which(name)
    if found:
        return found
    for d in _SBIN:
        if os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    return None


def run(exe: str, args: Sequence[str], *, input: bytes | None = None,
        pass_fds: tuple[int, ...] = (), max_stdout: int | None = None) -> subprocess.CompletedProcess:
    """Run ``exe`` (a path from :func:`which`) with ``args``, capturing stdout and stderr.
    With ``max_stdout``, the tool is killed once it has printed more than that many bytes
    (the caller sees max_stdout + 1 of them): what it prints may be a stranger's file, of
    whatever size the stranger claims."""
    if max_stdout is None:
        return subprocess.run([exe, *args], input=input, capture_output=True, pass_fds=pass_fds)
    return _run_capped([exe, *args], input, pass_fds, max_stdout)


def udev_settle(timeout: int) -> str | None:
    """Wait until udev has handled the kernel's device events (the /dev/disk/by-* links of
    new or removed nodes); None once it has, else why the links may be missing."""
    exe = which("udevadm")
    if exe is None or not os.path.exists("/run/udev/control"):
        return "udev is not running"   # devtmpfs still makes the nodes, not udev's links
    if run(exe, ["settle", f"--timeout={timeout}"]).returncode != 0:
        return "udevadm settle timed out"
    return None


def failure(cmd: Sequence[str], proc: subprocess.CompletedProcess) -> str:
    """How a failed tool is reported: ``COMMAND: exited N (LAST STDERR LINE)``."""
    why = proc.stderr.decode(errors="replace").strip().splitlines()
    return f"{' '.join(cmd)}: exited {proc.returncode}" + (f" ({why[-1].strip()})" if why else "")


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
