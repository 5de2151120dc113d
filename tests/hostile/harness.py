"""How every hostile case is judged: a real ``configdrive`` process, as an attacker's
victim would run it, held to the promise of docs/THREATS.md.

A refused input must give exit status 1, exactly one line on stderr that starts with
``configdrive: error:`` and names what was wrong, no traceback, and leave every watched
file or device byte-identical (sha256 before and after). The process may not run past a
hang guard nor grow past a peak-RSS guard (measured by the kernel through wait4), because
"work and memory grow with bytes received" is part of the promise, not only "no crash".
The guards are generous on purpose: they catch work proportional to a declared size
(minutes, gigabytes), not a slow machine.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

EXE = str(Path(sys.executable).with_name("configdrive"))
MKISOFS = str(Path(sys.executable).with_name("configdrive-mkisofs"))
HANG_GUARD = 60.0          # seconds; a case that should take a second
RSS_GUARD = 400 << 20      # bytes of peak RSS


@dataclass
class Outcome:
    returncode: int
    stdout: bytes
    stderr: str
    seconds: float
    peak_rss: int          # bytes


def digest(path) -> str:
    """sha256 of a file or a whole block device, read in 1 MiB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as fp:
        while piece := fp.read(1 << 20):
            h.update(piece)
    return h.hexdigest()


# Why a launcher: the kernel carries a process's peak RSS across fork and exec, so a
# child forked straight from this test process reports this process's own peak once it
# has held a big file. The launcher is a bare interpreter (a few MiB): it forks and execs
# the command, reports the command's ru_maxrss through a pipe, and ends as the command
# ended (the same exit status, or the same signal).
LAUNCHER = """
import os, signal, sys
report = int(sys.argv[1])
pid = os.fork()
if pid == 0:
    os.close(report)
    try:
        os.execv(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
os.write(report, str(usage.ru_maxrss * 1024).encode())
os.close(report)
if os.WIFSIGNALED(status):
    signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
    os.kill(os.getpid(), os.WTERMSIG(status))
os._exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(*args, input: bytes | None = None, env: dict | None = None,
                 hang_guard: float = HANG_GUARD, exe: str = EXE, before_input=None) -> Outcome:
    """Run the installed command through the launcher; kill it at the hang guard (which
    fails the case). The peak RSS is the command's own (see LAUNCHER). ``before_input``:
    called once the command runs, before ``input`` is written (what a case does to the
    world while the command waits for its stdin)."""
    import selectors
    start = time.monotonic()
    report_r, report_w = os.pipe()
    try:
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", LAUNCHER, str(report_w), exe,
                                 *map(str, args)],
                                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                start_new_session=True, pass_fds=(report_w,))
    finally:
        os.close(report_w)
    if before_input is not None:
        before_input()
    if input is not None:
        try:
            proc.stdin.write(input)
        except BrokenPipeError:
            pass
        proc.stdin.close()
    chunks = {proc.stdout: [], proc.stderr: []}
    sel = selectors.DefaultSelector()
    for f in chunks:
        sel.register(f, selectors.EVENT_READ)
    open_streams = 2
    while open_streams:
        left = hang_guard - (time.monotonic() - start)
        events = sel.select(timeout=max(left, 0))
        if not events:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            os.close(report_r)
            raise AssertionError(f"configdrive {' '.join(map(str, args))}: still running after "
                                 f"{hang_guard:.0f} s (work bounded by a declared size?)")
        for key, _ in events:
            data = os.read(key.fd, 1 << 16)
            if data:
                chunks[key.fileobj].append(data)
            else:
                sel.unregister(key.fileobj)
                open_streams -= 1
    proc.wait()
    with os.fdopen(report_r, "rb") as fp:
        peak = int(fp.read() or 0)
    return Outcome(proc.returncode, b"".join(chunks[proc.stdout]),
                   b"".join(chunks[proc.stderr]).decode(errors="replace"),
                   time.monotonic() - start, peak)


def assert_refused(outcome: Outcome, *, names: str | None = None,
                   rss_guard: int = RSS_GUARD, prog: str = "configdrive") -> str:
    """The promise for a refused input; returns the error line for further checks.

    ``names``: a substring the one line must contain (the file, field, offset or format);
    ``prog``: the command whose prefix the line carries (configdrive-mkisofs has its own)."""
    lines = outcome.stderr.splitlines()
    assert "Traceback" not in outcome.stderr, outcome.stderr
    assert outcome.returncode == 1, f"exit {outcome.returncode}, stderr: {outcome.stderr!r}"
    errors = [line for line in lines if line.startswith(f"{prog}: error:")]
    assert len(errors) == 1, f"want one error line, got: {outcome.stderr!r}"
    line = errors[0]
    assert all(ch.isprintable() for ch in line), f"control characters reach the terminal: {line!r}"
    if names is not None:
        assert names in line, f"{names!r} not named in {line!r}"
    assert outcome.peak_rss < rss_guard, f"peak RSS {outcome.peak_rss >> 20} MiB"
    return line


def refused(*args, watch=(), names: str | None = None, input: bytes | None = None,
            env: dict | None = None, hang_guard: float = HANG_GUARD,
            rss_guard: int = RSS_GUARD, exe: str = EXE, before_input=None) -> str:
    """Run a hostile case and hold it to the whole promise: refused in one line, within
    the guards, every path in ``watch`` byte-identical afterwards. ``exe``: another of our
    commands (configdrive-mkisofs), judged under its own name."""
    before = {str(p): digest(p) for p in watch}
    outcome = run_measured(*args, input=input, env=env, hang_guard=hang_guard, exe=exe,
                           before_input=before_input)
    line = assert_refused(outcome, names=names, rss_guard=rss_guard, prog=Path(exe).name)
    after = {str(p): digest(p) for p in watch}
    changed = [p for p in before if before[p] != after[p]]
    assert not changed, f"refused, yet changed: {changed} ({line})"
    return line
