"""Write a block device's data around the page cache (O_DIRECT), as ``dd oflag=direct`` does.

Why: written through the page cache, every data byte is copied by the kernel into pages
it must first allocate, and each page is then written out by the writeback we drive
(partition/writing/copy.py). On a 4 GiB image holding 1 GiB of data, on a RAM-backed loop device,
that copy was 55-78% of the deploy's CPU samples and its cost swung from 0.4 to 2.4 s
from run to run with the machine's memory state; the same 1 GiB written with O_DIRECT
took 0.41-0.46 s with its fsync and 0.16-0.20 s of CPU, every time. What remains on our
side is one copy into an aligned buffer (Python's bytes objects are not aligned to a
sector, which O_DIRECT requires of memory as of offsets and lengths).

Where it applies: block devices only (a regular file keeps its page cache and its holes),
only the sector-aligned middle of a data extent of at least DIRECT_MIN bytes; the rest
(part-sector ends, small pieces) goes through the page cache as before. The two kinds of
write may share a page, and stay coherent because they are made one after the other on
one thread: a direct write first writes back and drops the cached pages its range
touches (the kernel does that before any O_DIRECT write), and a buffered write after it
reads the page back from the device, which has the direct write's bytes by then.
Durability is unchanged: a direct write is complete on the device (perhaps in its
volatile cache) when pwrite returns, and copy.py's fsync on the device flushes that cache
with the rest before the head is written.

Every write still goes through ``Target.pwrite`` (on a second Target over the O_DIRECT
descriptor), so its error messages, and the tests that inject faults there, hold for both
paths. A device that refuses O_DIRECT (EINVAL at open or at the first write) is written
through the page cache for the rest of the deploy.
"""

from __future__ import annotations

import errno
import mmap
import os

from .device import Target
from ..errors import PartitionError

BUFFER = 4 << 20          # the largest piece written at once (an image chunk is 4 MiB)
DIRECT_MIN = 64 << 10     # smaller data pieces go through the page cache


class DirectWrites:
    """Data writes of one deploy onto ``target``; ``write`` returns how many of the bytes
    went through the page cache (the writer bounds those with writeback windows)."""

    def __init__(self, target: Target):
        self.target = target
        self._direct: Target | None = None
        self._buffer: mmap.mmap | None = None
        self._refused = not target.is_block     # True: the page cache for every write

    def write(self, data, offset: int) -> int:
        view = memoryview(data).cast("B")
        end = offset + len(view)
        align = self.target.sector_size
        first = -(-offset // align) * align
        last = end // align * align
        if last - first < DIRECT_MIN or not self._ready():
            self.target.pwrite(view, offset)
            return len(view)
        cached = 0
        if first > offset:
            self.target.pwrite(view[: first - offset], offset)
            cached += first - offset
        position = first
        while position < last:
            n = min(last - position, BUFFER)
            if not self._write_direct(view[position - offset: position - offset + n], position):
                self.target.pwrite(view[position - offset: last - offset], position)
                cached += last - position
                break
            position += n
        if end > last:
            self.target.pwrite(view[last - offset:], last)
            cached += end - last
        return cached

    def close(self) -> None:
        """Close the O_DIRECT descriptor and free the buffer (the next large write opens
        them again)."""
        if self._direct is not None:
            self._direct.close()
            self._direct = None
        if self._buffer is not None:
            buffer, self._buffer = self._buffer, None
            try:
                buffer.close()
            except BufferError:
                pass     # a failed write's traceback still holds a view: freed with it


    def _ready(self) -> bool:
        """Open the O_DIRECT descriptor at the first large write: through the target's
        own descriptor, proven to be the same device (``Target.reopen``), never by name."""
        if self._direct is None and not self._refused:
            try:
                fd = self.target.reopen(os.O_WRONLY | os.O_DIRECT)
            except PartitionError as exc:
                if isinstance(exc.__cause__, OSError):   # O_DIRECT refused: the page cache
                    self._refused = True
                    return False
                raise
            self._direct = Target(self.target.path, fd, self.target.size,
                                  self.target.sector_size, True)
            self._buffer = mmap.mmap(-1, BUFFER)     # page-aligned, as O_DIRECT needs
        return self._direct is not None

    def _write_direct(self, piece: memoryview, offset: int) -> bool:
        """Copy ``piece`` into the aligned buffer and write it; False (and O_DIRECT off
        from here on) if the device refuses the write as such (EINVAL: nothing written)."""
        n = len(piece)
        self._buffer[:n] = piece
        try:
            self._direct.pwrite(memoryview(self._buffer)[:n], offset)
        except PartitionError as exc:
            cause = exc.__cause__
            if not (isinstance(cause, OSError) and cause.errno == errno.EINVAL):
                raise
        else:
            return True
        self._refused = True
        self.close()
        return False
