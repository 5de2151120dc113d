"""A reader of pieces decompressed on a thread pool, handed on in their order.

``OrderedPieces(units, budget, name)`` reads the plain bytes of a compressed stream cut
into independent units (xz blocks: partition/images/xzblocks.py). ``units`` yields, in the
stream's order, either ``Job(decode, claim)``: ``decode()`` runs on a pool thread and
returns the unit's plain bytes as a list of pieces, ``claim`` counting every byte it holds (compressed and
plain, as its header says, never more than ``budget``); or ``Inline(pieces)``: an
iterator decompressing a unit too large for the budget on the reading thread, piece by
piece. The iterator reads the source itself, so ``units`` is not asked for more until
an ``Inline`` is used up: every unit's bytes come off the source in order, once.

Memory: the jobs in flight together claim at most ``budget`` bytes, each charged JOB_COST
more for what a job is besides its bytes (one is always allowed, so progress never stalls), and one more unit may wait, read, for room. Each job must hold itself to its claim (the
decoders ask their library for no more than the plain bytes claimed).

A job that fails fails the read that reaches it, with its own one-line error; the
jobs after it are cancelled by ``close``.
"""

from __future__ import annotations

import io
import os
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterator

# Jobs return their bytes in pieces of about this size, not whole: a fresh 24 MiB buffer
# per xz block cost 600,000 page faults and 1.2 s of system time per 2 GiB (measured),
# pieces of 1 MiB are reused by the allocator (85,000 faults, 0.18 s).
PIECE = 1 << 20
# What a job in flight costs besides the bytes it claims: its future (with its condition
# and lock), the pool's work item, its closure and chunk list. Charged, or an xz file of
# 300,000 one-byte blocks (9 MB) queued them all at once: 682 MiB.
JOB_COST = 4 << 10


@dataclass(frozen=True)
class Job:
    decode: Callable[[], list]
    claim: int


@dataclass(frozen=True)
class Inline:
    pieces: Iterator[bytes]


class OrderedPieces(io.RawIOBase):
    def __init__(self, units: Iterator, budget: int, workers: int | None = None):
        from concurrent.futures import ThreadPoolExecutor
        self._units, self._budget = units, budget
        self._pool = ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2,
                                        thread_name_prefix="decompress")
        self._queue: deque = deque()      # (future, claim) or Inline, in the stream's order
        self._claimed = 0
        self._more = True                 # ``units`` not used up
        self._pending = None              # a unit read but not yet started (over budget)
        self._piece, self._at = memoryview(b""), 0
        self._current = None              # the pieces being handed out
        self._inline = None               # the Inline they come from, if they do

    def readable(self) -> bool:
        return True

    def _pump(self) -> None:
        """Ask ``units`` for more while the budget allows and no Inline is waiting."""
        while self._more and not (self._queue and isinstance(self._queue[-1], Inline)):
            if self._pending is None:
                self._pending = next(self._units, None)
                if self._pending is None:
                    self._more = False
                    return
            unit = self._pending
            if isinstance(unit, Inline):
                self._queue.append(unit)
                self._pending = None
                return
            cost = unit.claim + JOB_COST
            if self._queue and self._claimed + cost > self._budget:
                return
            self._queue.append((self._pool.submit(unit.decode), cost))
            self._claimed += cost
            self._pending = None

    def _next_piece(self) -> bool:
        while True:
            if self._current is not None:
                piece = next(self._current, None)
                if piece is not None:
                    self._piece, self._at = memoryview(piece), 0
                    return True
                if self._queue and self._queue[0] is self._inline:
                    self._queue.popleft()        # used up: ``units`` may go on
                self._current = self._inline = None
            if not self._queue:
                self._pump()
                if not self._queue:
                    return False
            head = self._queue[0]
            if isinstance(head, Inline):
                self._current, self._inline = head.pieces, head
                continue
            future, cost = head
            pieces = future.result()     # a failed job raises its error here
            self._queue.popleft()
            self._claimed -= cost
            self._pump()                 # the next jobs start before this one is read
            self._current = iter(pieces)

    def read(self, size: int = -1) -> bytes:
        """A whole piece is handed on as it is (RawIOBase.read would make a buffer of
        ``size`` bytes and copy the piece into it, then copy it out again)."""
        if self._at >= len(self._piece):
            self._piece = memoryview(b"")
            if not self._next_piece():
                return b""
        left = len(self._piece) - self._at
        if self._at == 0 and (size < 0 or size >= left):
            self._at = left
            return self._piece.obj
        n = left if size < 0 else min(size, left)
        self._at += n
        return bytes(self._piece[self._at - n: self._at])

    def readinto(self, buf) -> int:
        if self._at >= len(self._piece):
            self._piece = memoryview(b"")
            if not self._next_piece():
                return 0
        n = min(len(buf), len(self._piece) - self._at)
        buf[:n] = self._piece[self._at: self._at + n]
        self._at += n
        return n

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            self._queue.clear()
        super().close()


def hold_freed_memory(limit: int = 256 << 20) -> None:
    """Ask glibc's allocator to keep up to ``limit`` bytes of freed memory instead of
    handing it back at once. The pieces above are made on the pool's threads and freed on
    the reading thread; with glibc's defaults each thread's heap is trimmed as they are
    freed and faulted in again for the next (2 GiB of xz: 300,000 page faults, 1.1 s of
    system time, against 62,000 and 0.3 s so). Process-wide, so only a one-shot process
    calls it (the ``deploy`` command), never a library caller such as the ironic agent.
    Elsewhere than glibc: nothing."""
    import ctypes
    try:
        mallopt = ctypes.CDLL(None).mallopt      # this process's own C library
    except (OSError, AttributeError):
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    mallopt(M_TRIM_THRESHOLD, limit)
    mallopt(M_MMAP_THRESHOLD, 32 << 20)     # glibc's largest; fixed, not raised by frees
