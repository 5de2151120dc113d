"""Compressed streams, told apart by their magic bytes: gzip, xz, zstd.

``decompressing_reader(inner, kind, name)`` turns a compressed reader into a reader of
the plain bytes, with bounded memory whatever the ratio (every call asks for at most the
caller's buffer size), refusing a truncated stream and trailing garbage. Concatenated
members/streams/frames are one stream, as the command-line tools treat them.
"""

from __future__ import annotations

import io
import lzma
import struct
import zlib

from ..errors import PartitionError

MAGIC = {
    "gzip": b"\x1f\x8b",
    "xz": b"\xfd7zXZ\x00",
    "zstd": b"\x28\xb5\x2f\xfd",
}
INPUT_CHUNK = 1 << 20


def compression_of(head: bytes) -> str | None:
    for kind, magic in MAGIC.items():
        if head.startswith(magic):
            return kind
    if len(head) >= 4 and head[0] & 0xF0 == 0x50 and head[1:4] == b"\x2a\x4d\x18":
        return "zstd"        # a skippable frame first, as pzstd writes (zstd -d reads it)
    return None


def decompressing_reader(inner, kind: str, name: str, pread=None, size: int | None = None,
                         budget: int = 256 << 20) -> io.RawIOBase:
    """``pread(offset, length)`` and ``size``: the compressed file can be read at random
    (a local file, or an http(s) file by Range requests), and an xz file of many blocks
    is decompressed on all cores (partition/images/xzblocks.py). A zstd
    stream of many frames is, from any source whose reader can ``peek``
    (partition/images/zstdframes.py). ``budget``: what their threads may hold at once
    (image.Buffers.decompress_budget)."""
    if kind == "xz" and pread is not None and size is not None:
        from .xzblocks import parallel_reader
        reader = parallel_reader(inner, pread, size, name, budget)
        if reader is not None:
            return reader
    if kind == "zstd" and hasattr(inner, "peek"):
        from .zstdframes import parallel_reader as frames_reader
        reader = frames_reader(inner, name, budget)
        if reader is not None:
            return reader
    if kind == "zstd":
        return _ZstdReader(inner, name)
    return _StdlibReader(inner, kind, name)


class _Reader(io.RawIOBase):
    """A reader whose ``read`` hands on what its library gave (RawIOBase.read would copy
    it into a buffer of ``size`` bytes made for the call, then copy it out again)."""

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        out = self.read(len(buf))
        buf[: len(out)] = out
        return len(out)


class _StdlibReader(_Reader):
    """gzip (zlib) and xz (lzma): both take ``max_length`` and report ``eof`` and
    ``unused_data``, so one loop serves both."""

    def __init__(self, inner, kind: str, name: str):
        self._inner, self._kind, self._name = inner, kind, name
        self._pending = b""        # compressed bytes read but not yet given to zlib
        self._consumed = 0         # compressed bytes read from inner
        self._d = self._new()
        self._done = False

    def _new(self):
        return zlib.decompressobj(wbits=31) if self._kind == "gzip" else lzma.LZMADecompressor(lzma.FORMAT_XZ)

    def _fill(self) -> bytes:
        data = self._inner.read(INPUT_CHUNK)
        self._consumed += len(data)
        return data

    def read(self, size: int = -1) -> bytes:
        want = size if size > 0 else INPUT_CHUNK
        while not self._done:
            if self._d.eof:
                self._next_member()
                continue
            try:
                if self._kind == "gzip":
                    data = self._pending or self._fill()
                    out = self._d.decompress(data, want)
                    self._pending = self._d.unconsumed_tail
                else:
                    data = self._fill() if self._d.needs_input and not self._pending else self._pending
                    self._pending = b""
                    out = self._d.decompress(data, want)
            except (zlib.error, lzma.LZMAError) as exc:
                raise PartitionError(f"{self._name}: corrupt {self._kind} data near compressed "
                                     f"byte {self._consumed}: {exc}") from exc
            if out:
                return out
            if not data and not self._d.eof:
                raise PartitionError(f"{self._name}: truncated {self._kind} stream (ends at "
                                     f"compressed byte {self._consumed})")
        return b""

    def _next_member(self) -> None:
        """After one member/stream: another may follow; zero padding may end the file
        (tar tapes, xz stream padding); anything else is refused."""
        # Everything after the end is in unused_data (zlib may still show a stale copy
        # of it as unconsumed_tail: ignore that).
        rest = self._d.unused_data
        self._pending = b""
        while len(rest) < len(MAGIC[self._kind]):
            more = self._fill()
            if not more:
                break
            rest += more
        if not rest:
            self._done = True
        elif rest.startswith(MAGIC[self._kind]):
            self._d = self._new()
            self._pending = rest
        else:
            at = self._consumed - len(rest)
            while rest:
                if rest.count(0) != len(rest):
                    raise PartitionError(f"{self._name}: trailing garbage after the {self._kind} "
                                         f"stream at compressed byte {at}")
                rest = self._fill()
            self._done = True


class _ZstdReader(_Reader):
    """zstd through zstandard's stream reader (which bounds its output by the read size).
    That reader stops quietly when its input ends mid-frame, so the compressed bytes pass
    a small frame walker that knows whether the stream ended on a frame boundary."""

    def __init__(self, inner, name: str):
        import zstandard      # imported by the streams that need it, not by every deploy
        self._error = zstandard.ZstdError
        self._name = name
        self._frames = _ZstdFrames(name)
        self._tap = _Tap(inner, self._frames.feed)
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            self._tap, read_size=INPUT_CHUNK, read_across_frames=True)

    def read(self, size: int = -1) -> bytes:
        try:
            out = self._reader.read(size if size > 0 else INPUT_CHUNK)
        except self._error as exc:
            raise PartitionError(f"{self._name}: corrupt zstd data near compressed byte "
                                 f"{self._frames.offset}: {exc}") from exc
        if not out:
            self._frames.finish()
        return out


class _Tap:
    def __init__(self, inner, observe):
        self._inner, self._observe = inner, observe

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        self._observe(data)
        return data


class _ZstdFrames:
    """Walk zstd frame and block headers (RFC 8878) as the bytes go by."""

    def __init__(self, name: str):
        self._name = name
        self.offset = 0          # compressed bytes seen
        self._buf = b""          # header bytes collected so far
        self._need = 4           # header bytes wanted before the next decision
        self._skip = 0           # payload bytes to pass over
        self._state = "magic"
        self._checksum = 0
        self._frames = 0

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._skip:
                n = min(self._skip, len(view))
                self._skip -= n
                self.offset += n
                view = view[n:]
                continue
            n = min(self._need - len(self._buf), len(view))
            self._buf += bytes(view[:n])
            self.offset += n
            view = view[n:]
            if len(self._buf) == self._need:
                self._step()

    def _step(self) -> None:
        buf, self._buf = self._buf, b""
        if self._state == "magic":
            (magic,) = struct.unpack("<I", buf)
            if magic == 0xFD2FB528:
                self._state, self._need = "descriptor", 1
            elif magic & 0xFFFFFFF0 == 0x184D2A50:
                self._state, self._need = "skippable", 4
            else:
                raise PartitionError(f"{self._name}: trailing garbage after the zstd stream at "
                                     f"compressed byte {self.offset - 4}")
        elif self._state == "skippable":
            self._skip = struct.unpack("<I", buf)[0]
            self._state, self._need = "magic", 4
        elif self._state == "descriptor":
            fd = buf[0]
            fcs_flag, single, checksum, dict_flag = fd >> 6, (fd >> 5) & 1, (fd >> 2) & 1, fd & 3
            fcs = (1 if single else 0, 2, 4, 8)[fcs_flag]
            rest = (0 if single else 1) + (0, 1, 2, 4)[dict_flag] + fcs
            self._checksum = 4 * checksum
            self._state, self._skip, self._need = "block", rest, 3
        elif self._state == "block":
            (header,) = struct.unpack("<I", buf + b"\0")
            last, kind, size = header & 1, (header >> 1) & 3, header >> 3
            self._skip = 1 if kind == 1 else size
            if last:
                self._frames += 1
                self._skip += self._checksum
                self._state, self._need = "magic", 4

    def finish(self) -> None:
        if self._frames == 0 or self._state != "magic" or self._buf or self._skip:
            raise PartitionError(f"{self._name}: truncated zstd stream (ends at compressed "
                                 f"byte {self.offset})")
