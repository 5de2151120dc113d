"""Random access to an http(s) image without a spool: one forward stream plus Range
requests, for the qcow2 reader (whose metadata may lie anywhere in the file).

    reader = RangedReader(http_source, "sha256")
    reader.pread(offset, length)     # what qcow2.Qcow2 calls
    reader.follow()                  # conversion starts: forward reads ride one stream
    reader.finish()                  # the digest of the whole file, read in order

Before ``follow`` (the qcow2 header, L1 and L2 tables, checked up front) every read is
its own Range request. After it, a read at or just ahead of the stream's position is
served from that one open GET (the gap read through), so an image whose clusters lie in
file order, which is what `qemu-img convert` writes, is downloaded once, front to back;
a read behind it is a Range request of its own; a jump far ahead reopens the stream
there. Memory stays bounded whatever the image's size: nothing is kept but what one read
returns (IPA downloads the image into its ramdisk first, then runs qemu-img on it).

With a checksum, every byte of the file must be hashed in order, and every byte the
conversion used must be proven to be those bytes (a server could answer a Range request
with other bytes than the download). So the stream never skips: it reads through every
gap, hashing, and keeps a 16-byte digest of each block it passed (1 MiB, or larger for
files over 256 GiB: at most 4 MiB of digests). Range requests are widened to whole blocks
and their block digests compared: at once for blocks the stream has passed, and when the
stream reaches them for the rest. ``finish`` reads the stream to the file's end; any
difference fails the deploy before the image's head is written.
"""

from __future__ import annotations

import hashlib

from ..errors import PartitionError
from .source import HttpSource

WINDOW = 8 << 20          # a forward gap up to this is read through, not re-requested
FETCH_MIN = 64 << 10      # a Range request asks for at least this much (the header and
                          # what follows it: one answer serves several reads)
PIECE = 1 << 20           # gaps are read (and hashed) in pieces of this size
MAX_BLOCKS = 1 << 18      # block digests kept: 16 bytes each
DIGEST = 16
PREPASS = 64 << 20        # without ranges: how far into the file the tables may lie


def _digest(data) -> bytes:
    return hashlib.blake2b(data, digest_size=DIGEST).digest()


class RangedReader:
    """``pread`` over an http(s) source that serves byte ranges (see the module doc)."""

    def __init__(self, source: HttpSource, hash_algorithm: str | None = None,
                 prefix: bytes | None = None):
        """``prefix``: from a server without ranges, the bytes already read from
        ``source``, which then goes on as the first pass (its first answer is not thrown
        away)."""
        self.source, self.name, self.size = source, source.name, source.size
        # A server without ranges answers every request with the whole file: each read
        # behind the last one is a new pass through it (source.range reads up to the
        # offset), so reads are made in the file's order: the tables, then the data.
        self.ranges = source.ranges
        self.hasher = hashlib.new(hash_algorithm) if hash_algorithm else None
        self._stream: HttpSource | None = None
        self._pos = 0                 # where the stream is (the next byte it gives)
        self._following = False
        self.block = PIECE
        while -(-self.size // self.block) > MAX_BLOCKS:
            self.block *= 2
        blocks = -(-self.size // self.block) if self.hasher else 0
        self._passed = bytearray(DIGEST * blocks)      # digest of each block the stream passed
        self._expected = bytearray(DIGEST * blocks)    # digest a Range answer gave ahead of it
        self._has_expected = bytearray(blocks)
        self._block_hash = hashlib.blake2b(digest_size=DIGEST)
        self._last: tuple[int, bytearray] = (0, bytearray())   # the last Range answer
        # What Range requests may still fetch (read_spans): three quarters of the file,
        # the rest left for the first answer (which told what the file is) and the reads
        # behind the stream.
        self._spare = self.size * 3 // 4
        self._checks: list[tuple[int, int, bytes]] = []    # read_spans' runs, to compare
        self._next_check, self._open_checks = 0, []
        self._prefix = prefix or b""
        if prefix is not None:
            self._stream, self._pos = source, len(prefix)

    def follow(self) -> None:
        self._following = True
        self._checks.sort()
        if not self.ranges and self.hasher is not None:
            self._reopen(0)        # the hashing pass: the whole file, in order, from its start

    def read_spans(self, spans, last: bool = False):
        """(offset, length, bytes) for every (offset, length) in ``spans``, by offset,
        read before ``follow`` in the file's order: spans that touch share one Range
        request, and so do spans a gap apart while the bytes read in gaps keep all Range
        requests of the deploy within the file's length (``_spare``; a call that is not
        ``last`` may use a sixteenth of what is left), so that they and the one forward
        stream never fetch more than twice the file. Memory holds one run of spans at a
        time, never a gap: an answer is read through, not kept.

        With a checksum, each run's digest is kept and compared with the same bytes when
        the stream passes them (a server could answer a Range with other bytes than the
        download): no block is widened, so no byte outside the spans is fetched for it."""
        wanted = sorted({(o, n) for o, n in spans if o < self.size and n > 0})
        if not self.ranges:
            yield from ((o, n, self._forward(o, n)) for o, n in wanted)
            return
        runs: list[list[int]] = []          # the union of the spans: [start, end]
        for offset, length in wanted:
            length = min(length, self.size - offset)      # short at the file's end
            if runs and (offset < runs[-1][1] or offset == runs[-1][1]
                         and offset + length - runs[-1][0] <= PIECE * 4):
                runs[-1][1] = max(runs[-1][1], offset + length)
            else:
                runs.append([offset, offset + length])
        needed = sum(end - start for start, end in runs)
        allowance = max(0, self._spare - needed) // (1 if last else 16)
        index = 0
        for group in _coalesce(runs, allowance):
            first, end = group[0][0], group[-1][1]
            with self.source.range(first, end) as answer:
                at = first
                for start, stop in group:
                    _skip(answer, start - at, self.name)
                    data = _read_exactly(answer, stop - start)
                    if len(data) != stop - start:
                        raise PartitionError(f"{self.name}: a Range request for bytes {first}.."
                                             f"{end - 1} ended at byte {start + len(data)}")
                    if self.hasher is not None:
                        self._checks.append((start, stop, _digest(data)))
                    at = stop
                    while index < len(wanted) and wanted[index][0] < stop:
                        offset, length = wanted[index]
                        yield offset, length, bytes(data[offset - start: offset - start + length])
                        index += 1
            self._spare -= end - first

    def pread(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.size - offset))
        if not length:
            return b""
        if not self.ranges and not self._following:
            return self._forward(offset, length)
        if not self.ranges and self.hasher is None and offset < self._pos:
            self._reopen(offset)               # a new pass
        if self._following and offset >= self._pos:
            if self.hasher is None and ((self.ranges and offset - self._pos > WINDOW)
                                        or self._stream is None):
                self._reopen(offset)           # nothing to hash in between: jump
            self._advance(offset)
            return self._take(length)
        return self._fetch(offset, length)

    def finish(self) -> str | None:
        """Read the rest of the file (for the checksum, which covers every byte); return
        the hex digest (None without a checksum)."""
        if self.hasher is None:
            return None
        self._advance(self.size)
        return self.hasher.hexdigest()

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    # -- the stream ---------------------------------------------------------------------
    def _reopen(self, offset: int) -> None:
        self.close()
        self._pos = offset

    def _advance(self, offset: int) -> None:
        while self._pos < offset:
            self._take(min(PIECE, offset - self._pos))

    def _forward(self, offset: int, length: int) -> bytes:
        """Before ``follow``, from a server without ranges: read on from where the last
        read ended, or start a new pass (a GET read through to ``offset``) for a read
        behind it. Not hashed here (the hashing pass is the one after ``follow``), but
        each read's digest is kept for that pass to compare."""
        if offset + length <= len(self._prefix):
            data = self._prefix[offset: offset + length]
        else:
            if offset < self._pos or offset + length > PREPASS:
                # A second pass before the data's, or one far into the file: the spool
                # (one download) costs less than reading the file twice or more.
                raise Unforwardable(f"{self.name}: bytes {offset}..{offset + length - 1} "
                                    "cannot be read on this pass")
            if self._stream is None:
                self._reopen(offset)
            while self._pos < offset:
                self._take(min(PIECE, offset - self._pos), hashing=False)
            data = self._take(length, hashing=False)
        if self.hasher is not None:
            self._checks.append((offset, offset + length, _digest(data)))
        return data

    def _take(self, length: int, hashing: bool = True) -> bytes:
        if self._stream is None:
            self._stream = self.source.range(self._pos)
        data = _read_exactly(self._stream, length)
        if len(data) != length:
            raise PartitionError(f"{self.name}: the download ended at byte {self._pos + len(data)}, "
                                 f"before its length of {self.size} bytes")
        if self.hasher is not None and hashing:
            self.hasher.update(data)
            self._track(data)
            if self._checks:
                self._check_runs(data)
        self._pos += length
        return data

    def _check_runs(self, data) -> None:
        """Compare what ``read_spans`` was sent with the bytes the stream brings now."""
        pos, end = self._pos, self._pos + len(data)
        checks = self._checks
        while self._next_check < len(checks) and checks[self._next_check][0] < end:
            self._open_checks.append((*checks[self._next_check], hashlib.blake2b(digest_size=DIGEST)))
            self._next_check += 1
        for item in list(self._open_checks):
            start, stop, digest, running = item
            running.update(memoryview(data)[max(start, pos) - pos: min(stop, end) - pos])
            if stop <= end:
                self._open_checks.remove(item)
                if running.digest() != digest:
                    raise PartitionError(f"{self.name}: the server sent different bytes for "
                                         f"bytes {start}..{stop - 1} in a Range request than "
                                         "in the download: refused")

    def _track(self, data: bytes) -> None:
        """Digest the blocks the stream completes; check what Range answers gave for them."""
        view, pos = memoryview(data), self._pos
        while view:
            block_end = min((pos // self.block + 1) * self.block, self.size)
            part = view[: block_end - pos]
            self._block_hash.update(part)
            view, pos = view[len(part):], pos + len(part)
            if pos == block_end:
                index = (pos - 1) // self.block
                digest = self._block_hash.digest()
                self._block_hash = hashlib.blake2b(digest_size=DIGEST)
                self._passed[index * DIGEST: (index + 1) * DIGEST] = digest
                if self._has_expected[index]:
                    self._same(index, digest, self._expected[index * DIGEST: (index + 1) * DIGEST])

    # -- Range requests -----------------------------------------------------------------
    def _fetch(self, offset: int, length: int) -> bytes:
        start, kept = self._last
        if start <= offset and offset + length <= start + len(kept):
            return kept[offset - start: offset - start + length]
        if self.hasher is None or not self._following:
            # Before the stream starts, an answer is checked as read_spans' are: exact.
            first, end = offset, min(offset + max(length, FETCH_MIN), self.size)
        else:      # whole blocks, to compare with the stream's block digests
            first = offset - offset % self.block
            end = min(-(-(offset + length) // self.block) * self.block, self.size)
        with self.source.range(first, end) as answer:
            data = _read_exactly(answer, end - first)
        self._spare -= len(data)
        if len(data) != end - first:
            raise PartitionError(f"{self.name}: a Range request for bytes {first}..{end - 1} "
                                 f"returned {len(data)} bytes")
        if self.hasher is not None and not self._following:
            self._checks.append((first, end, _digest(data)))
        elif self.hasher is not None:
            self._compare_blocks(first, end, data)
        self._last = (first, data)
        return data[offset - first: offset - first + length]

    def _compare_blocks(self, first: int, end: int, data) -> None:
        for at in range(first, end, self.block):
            index = at // self.block
            digest = _digest(data[at - first: at - first + self.block])
            slot = slice(index * DIGEST, (index + 1) * DIGEST)
            if min(at + self.block, self.size) <= self._pos:     # the stream passed it
                self._same(index, self._passed[slot], digest)
            elif self._has_expected[index]:
                self._same(index, self._expected[slot], digest)
            else:
                self._expected[slot], self._has_expected[index] = digest, 1

    def _same(self, index: int, a, b) -> None:
        if bytes(a) != bytes(b):
            start = index * self.block
            raise PartitionError(f"{self.name}: the server sent different bytes for bytes "
                                 f"{start}..{min(start + self.block, self.size) - 1} in a Range "
                                 "request than in the download: refused")


class Unforwardable(PartitionError):
    """A server without ranges, an image whose tables do not lie in the file's first
    PREPASS bytes in the order they are read: spool it instead (partition/images/image.py)."""


def _coalesce(runs: list[list[int]], allowance: int) -> list[list[list[int]]]:
    """Group sorted, disjoint runs into Range requests: the shortest gaps are read
    through first, while the bytes read in gaps stay within ``allowance``."""
    gaps = sorted(range(1, len(runs)), key=lambda i: runs[i][0] - runs[i - 1][1])
    joined = bytearray(len(runs))
    for i in gaps:
        gap = runs[i][0] - runs[i - 1][1]
        if gap > allowance:
            break
        allowance -= gap
        joined[i] = 1
    groups: list[list[list[int]]] = []
    for i, run in enumerate(runs):
        if joined[i]:
            groups[-1].append(run)
        else:
            groups.append([run])
    return groups


def _skip(reader, count: int, name: str) -> None:
    """Read through ``count`` bytes of an answer (a gap between the spans asked for)."""
    while count > 0:
        got = len(_read_exactly(reader, min(count, PIECE)))
        if not got:
            raise PartitionError(f"{name}: a Range answer ended early")
        count -= got


def _read_exactly(reader, length: int) -> bytearray:
    buf = bytearray(length)
    view, got = memoryview(buf), 0
    while got < length:
        n = reader.readinto(view[got:])
        if not n:
            break
        got += n
    return buf if got == length else buf[:got]
