"""Progress of a long copy: bytes done against the total, rate and time left.

At most once a second; a rewritten line on a terminal, plain lines (every 10 s) otherwise,
so logs stay readable. ``Progress.quiet()`` says nothing.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


class Progress:
    def __init__(self, label: str, total: int | None, stream: TextIO | None = None,
                 enabled: bool = True):
        self.label, self.total, self.done = label, total, 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = 1.0 if self.tty else 10.0
        self.start = self._last = time.monotonic()

    @classmethod
    def quiet(cls) -> "Progress":
        return cls("", None, enabled=False)

    def update(self, done: int) -> None:
        self.done = done
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._show(now)

    def finish(self) -> None:
        if self.enabled:
            self._show(time.monotonic())
            if self.tty:
                self.stream.write("\n")
                self.stream.flush()

    def line(self, now: float) -> str:
        elapsed = max(now - self.start, 1e-6)
        rate = self.done / elapsed
        if self.total:
            pct = min(self.done / self.total, 1.0)
            eta = (self.total - self.done) / rate if rate > 0 else 0
            bar = ""
            if self.tty:
                filled = int(pct * 30)
                bar = "[" + "#" * filled + "-" * (30 - filled) + "] "
            return (f"{self.label}: {bar}{pct * 100:5.1f}% {human(self.done)} of "
                    f"{human(self.total)}, {human(rate)}/s, {_clock(eta)} left")
        return f"{self.label}: {human(self.done)}, {human(rate)}/s"

    def _show(self, now: float) -> None:
        text = self.line(now)
        if self.tty:
            self.stream.write("\r\033[K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
