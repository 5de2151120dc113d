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

from .errors import PartitionError
from .source import HttpSource

WINDOW = 8 << 20          # a forward gap up to this is read through, not re-requested
FETCH_MIN = 256 << 10     # a Range request asks for at least this much (small L2 tables
                          # lie close together: one answer serves several reads)
PIECE = 1 << 20           # gaps are read (and hashed) in pieces of this size
MAX_BLOCKS = 1 << 18      # block digests kept: 16 bytes each
DIGEST = 16


def _digest(data) -> bytes:
    return hashlib.blake2b(data, digest_size=DIGEST).digest()


class RangedReader:
    """``pread`` over an http(s) source that serves byte ranges (see the module doc)."""

    def __init__(self, source: HttpSource, hash_algorithm: str | None = None):
        self.source, self.name, self.size = source, source.name, source.size
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

    def follow(self) -> None:
        self._following = True

    def pread(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.size - offset))
        if not length:
            return b""
        if self._following and offset >= self._pos:
            if self.hasher is None and offset - self._pos > WINDOW:
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

    def _take(self, length: int) -> bytes:
        if self._stream is None:
            self._stream = self.source.range(self._pos)
        data = _read_exactly(self._stream, length)
        if len(data) != length:
            raise PartitionError(f"{self.name}: the download ended at byte {self._pos + len(data)}, "
                                 f"before its length of {self.size} bytes")
        if self.hasher is not None:
            self.hasher.update(data)
            self._track(data)
        self._pos += length
        return data

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
        if self.hasher is None:
            first, end = offset, min(offset + max(length, FETCH_MIN), self.size)
        else:      # whole blocks, to compare with the stream's block digests
            first = offset - offset % self.block
            end = min(-(-(offset + length) // self.block) * self.block, self.size)
        with self.source.range(first, end) as answer:
            data = _read_exactly(answer, end - first)
        if len(data) != end - first:
            raise PartitionError(f"{self.name}: a Range request for bytes {first}..{end - 1} "
                                 f"returned {len(data)} bytes")
        if self.hasher is not None:
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


def _read_exactly(reader, length: int) -> bytearray:
    buf = bytearray(length)
    view, got = memoryview(buf), 0
    while got < length:
        n = reader.readinto(view[got:])
        if not n:
            break
        got += n
    return buf if got == length else buf[:got]
