"""zstd streams of many frames (``pzstd`` writes them, so does ``cat a.zst b.zst``),
decompressed on all cores.

The frames are found as the bytes go by, by walking frame and block headers (RFC 8878):
no index is needed, so a stream from stdin or http gains as a local file does. A frame
goes whole to a thread (the zstandard library releases the GIL and checks the frame's
checksum) when it claims at most half the ``budget``, compressed plus plain bytes: its plain
bytes are its header's content size, or where the header does not tell (pzstd's frames),
the most its blocks can hold (a raw or RLE block its size, a compressed one 128 KiB). A
larger frame is decompressed on the reading thread, a piece at a time, as the serial
reader does. A stream whose first frame is too large (``zstd -T0`` writes one frame for
the whole file), or tells no size and follows no skippable frame (``zstd`` in a pipe) is
left to the serial reader (partition/images/compress.py) from the start: nothing could run
beside it.

Bounded whatever the headers claim: a frame goes to a thread only if its claim fits, and
its compressed bytes are collected only while they fit too (past that, the frame is
decompressed inline from what was collected and the rest); frames in flight claim at
most ``budget`` together (partition/images/ordered.py).
"""

from __future__ import annotations

import struct
import sys
from itertools import chain

from ..errors import PartitionError
from .ordered import PIECE, Inline, Job, OrderedPieces
from .source import read_full

FRAME_MAGIC = 0xFD2FB528
INPUT_CHUNK = 1 << 20
REFILL = 4 << 10            # headers are walked from a buffer read this much at a time
MAX_HEADER = 18             # magic, descriptor, window, dictionary id, content size
PEEK = 256                  # looked at to find the first frame's header
BLOCK_MOST = 128 << 10      # the most a compressed block holds (Block_Maximum_Size)
# What a collected chunk costs beside its bytes: the bytes object's own header and its list
# slot. Charged too, or a frame of millions of empty 3-byte blocks held 14 times its size
# (a 120 MB file: 2.2 GB) before its claim was reached.
CHUNK_COST = sys.getsizeof(b"") + 8


def content_size(header: bytes) -> tuple[int, int | None] | None:
    """(header length, content size or None) of the zstd frame whose header starts
    ``header``; None when ``header`` is too short or not a frame."""
    if len(header) < 5 or struct.unpack_from("<I", header)[0] != FRAME_MAGIC:
        return None
    fd = header[4]
    fcs_flag, single, dict_flag = fd >> 6, (fd >> 5) & 1, fd & 3
    fcs_bytes = (1 if single else 0, 2, 4, 8)[fcs_flag]
    at = 5 + (0 if single else 1) + (0, 1, 2, 4)[dict_flag]
    if len(header) < at + fcs_bytes:
        return None
    if not fcs_bytes:
        return at, None
    size = int.from_bytes(header[at: at + fcs_bytes], "little") + (256 if fcs_bytes == 2 else 0)
    return at + fcs_bytes, size


def parallel_reader(inner, name: str, budget: int, piece: int = PIECE):
    """An ``OrderedPieces`` reader of the plain bytes of the zstd stream read forward
    from ``inner`` (which can ``peek``), or None when its first frame would be
    decompressed inline anyway."""
    head, at = inner.peek(PEEK), 0
    while len(head) >= at + 8 and head[at] & 0xF0 == 0x50 and head[at + 1: at + 4] == b"\x2a\x4d\x18":
        at += 8 + struct.unpack_from("<I", head, at + 4)[0]      # skippable frames (pzstd's)
    first = content_size(head[at:])
    limit = budget // 2
    if first is None or (first[1] is None and not at) or (first[1] or 0) > limit:
        return None
    return OrderedPieces(_Walker(inner, name).units(limit, piece), budget)


class _Walker:
    """Walks the frames and blocks of the stream read from ``inner``. Headers are parsed
    from a small buffer (REFILL bytes at a time), so a frame of many tiny blocks costs a
    read per REFILL bytes, not one per 3-byte header: read one by one, a frame of 40
    million empty blocks (120 MB) took about 90 s. A block's bytes past the buffer are
    read straight from the stream, uncopied."""

    def __init__(self, inner, name: str):
        self._inner, self._name = inner, name
        self._buf, self._at = b"", 0      # bytes read ahead, and how far the walk is in them
        self._base = 0                    # the compressed offset of _buf[0]
        self.most = 0                     # the most the frame's blocks so far can hold

    @property
    def offset(self) -> int:
        """Compressed bytes walked."""
        return self._base + self._at

    def _truncated(self, what: str) -> PartitionError:
        return PartitionError(f"{self._name}: truncated zstd stream (ends at compressed "
                              f"byte {self._base + len(self._buf)}, inside a {what})")

    def _refill(self, n: int) -> bool:
        """At least ``n`` bytes unwalked in the buffer, reading REFILL or more; False
        when the stream ends first (the buffer then holds what it had)."""
        rest = self._buf[self._at:]
        more = read_full(self._inner, max(REFILL, n - len(rest)))
        self._base += self._at
        self._buf, self._at = rest + more, 0
        return len(self._buf) >= n

    def _take(self, n: int, what: str) -> bytes:
        if len(self._buf) - self._at < n and not self._refill(n):
            raise self._truncated(what)
        data = self._buf[self._at: self._at + n]
        self._at += n
        return data

    def _direct(self, n: int, what: str) -> bytes:
        """``n`` bytes straight from the stream (the buffer is walked to its end)."""
        data = read_full(self._inner, n)
        self._base, self._buf, self._at = self.offset + len(data), b"", 0
        if len(data) != n:
            raise self._truncated(what)
        return data

    def _skip(self, n: int, what: str) -> None:
        while n:
            walked = min(n, len(self._buf) - self._at)
            self._at += walked
            n -= walked
            if n:
                n -= len(self._direct(min(n, INPUT_CHUNK), what))

    def units(self, limit: int, piece: int):
        import zstandard      # imported by the streams that need it, not by every deploy
        frames = 0
        while True:
            at = self.offset
            if len(self._buf) - self._at < 4 and not self._refill(4):
                if self._at == len(self._buf) and frames:
                    return
                raise self._truncated("frame header")
            (value,) = struct.unpack_from("<I", self._buf, self._at)
            self._at += 4
            if value & 0xFFFFFFF0 == 0x184D2A50:               # a skippable frame
                self._skip(struct.unpack("<I", self._take(4, "skippable frame"))[0],
                           "skippable frame")
                continue
            if value != FRAME_MAGIC:
                raise PartitionError(f"{self._name}: trailing garbage after the zstd stream at "
                                     f"compressed byte {at}")
            frames += 1
            header = struct.pack("<I", value) + self._take(1, "frame header")
            fd = header[4]
            header += self._take(content_size(header + bytes(MAX_HEADER))[0] - 5, "frame header")
            size = content_size(header)[1]
            self.most = 0
            chunks = self._frame(header, (fd >> 2) & 1)
            if size is not None and size > limit:
                yield Inline(_decode(chunks, at, self._name, piece, zstandard, size))
                continue
            collected, held = [], 0
            for chunk in chunks:
                collected.append(chunk)
                held += len(chunk) + CHUNK_COST
                if held + (self.most if size is None else size) > limit:
                    # more than a thread may hold: the rest as it is read
                    yield Inline(_decode(chain(collected, chunks), at, self._name, piece,
                                         zstandard, size))
                    break
            else:
                claim = self.most if size is None else size
                yield Job(lambda collected=collected, at=at, size=size, claim=claim: list(_decode(
                    collected, at, self._name, piece, zstandard, size, claim)), held + claim)

    def _frame(self, header: bytes, checksum: int):
        """The frame's bytes as they are walked: its header, then spans of the buffer
        (many small blocks at once) and the large blocks' bytes past it."""
        yield header
        span = self._at                  # where the bytes not yet handed on begin
        while True:
            if len(self._buf) - self._at < 3:    # here, not in _need: a generator per block cost 1.7x
                span = yield from self._need(3, span, "block header")
            value = int.from_bytes(self._buf[self._at: self._at + 3], "little")
            self._at += 3
            last, kind, size = value & 1, (value >> 1) & 3, value >> 3
            left = 1 if kind == 1 else size
            self.most += size if kind < 2 else BLOCK_MOST      # raw, RLE: size is the output
            while left:
                walked = min(left, len(self._buf) - self._at)
                self._at += walked
                left -= walked
                if left >= REFILL:       # the rest of a large block, uncopied
                    if self._at > span:
                        yield self._buf[span: self._at]
                    data = self._direct(min(left, INPUT_CHUNK), "block")
                    left -= len(data)
                    yield data
                    span = self._at
                elif left:
                    span = yield from self._need(1, span, "block")
            if last:
                if checksum:
                    span = yield from self._need(4, span, "frame checksum")
                    self._at += 4
                if self._at > span:
                    yield self._buf[span: self._at]
                return

    def _need(self, n: int, span: int, what: str):
        """``n`` unwalked bytes ready in the buffer; when it must be refilled, the span
        not yet handed on (from ``span``) is yielded first. Returns where the next span
        begins."""
        if len(self._buf) - self._at >= n:
            return span
        if self._at > span:
            yield self._buf[span: self._at]
        if not self._refill(n):
            raise self._truncated(what)
        return self._at


class _Chunks:
    """A reader over an iterator of byte chunks (the frame's bytes, as walked)."""

    def __init__(self, chunks):
        self._chunks, self._left = chunks, b""

    def read(self, n: int = -1) -> bytes:
        if not self._left:
            self._left = next(self._chunks, b"")
        n = len(self._left) if n < 0 else n
        data, self._left = self._left[:n], self._left[n:]
        return data


def _decode(chunks, at: int, name: str, piece: int, zstandard, size: int | None = None,
            most: int | None = None):
    """One frame from its compressed ``chunks``, ``piece`` plain bytes at a time; never
    more than ``size`` (its header's content size, then also the least) or ``most``."""
    source = _Chunks(iter(chunks))
    reader = zstandard.ZstdDecompressor().stream_reader(source, read_size=INPUT_CHUNK,
                                                        read_across_frames=False)
    cap = size if size is not None else most
    done = 0
    try:
        while out := reader.read(piece if cap is None else min(piece, cap - done + 1)):
            done += len(out)
            if cap is not None and done > cap:
                raise PartitionError(f"{name}: the zstd frame at compressed byte {at} holds "
                                     f"more than the {cap} bytes its headers say")
            yield out
    except zstandard.ZstdError as exc:
        raise PartitionError(f"{name}: corrupt zstd frame at compressed byte {at}: {exc}") from exc
    if size is not None and done != size:
        raise PartitionError(f"{name}: the zstd frame at compressed byte {at} holds {done} "
                             f"bytes, its header says {size}")
    if source.read(1):
        raise PartitionError(f"{name}: the zstd frame at compressed byte {at} ends before "
                             "its last block")
