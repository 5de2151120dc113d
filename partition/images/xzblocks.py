"""xz files of many blocks (``xz -T`` writes them), decompressed on all cores.

A local file's indexes (one at the end of each stream, as ``xz --list`` reads them) tell
where every block lies and how many bytes it holds. The file is still read once, forward,
through the hashing reader; each block goes to a thread as a stream of its own (its
stream's header, the block, a one-record index and a footer), which liblzma checks as it
checks the whole file: the block header's CRC, the block's check, its sizes against the
index record. Python's lzma releases the GIL while it decodes.

Bounded whatever the indexes claim. Before a byte is decompressed they are checked
against the file: each index inside it (all of them together at most INDEX_LIMIT bytes,
at most STREAM_LIMIT streams, records charged to their own bytes), its blocks adding up to the bytes before it, each stream's header agreeing
with its footer. Blocks in flight claim (compressed plus plain bytes, from the index) at
most ``budget`` together (partition/images/ordered.py), and liblzma is asked for no more
plain bytes than a block's record claims; a block claiming over half of it is decompressed
on the reading thread, ``piece`` bytes at a time, as the serial reader would. The bytes
read forward where the index, the stream headers and footers lie must be the bytes the
indexes were read from.

The indexes are read at random with ``pread``: from a local file, or from an http(s) file
whose server serves ranges, by Range requests of the same entity within a byte budget
(source.RangePreads: about 64 KiB and two requests for a file of one stream). A file whose
indexes cannot be read (stdin, a server without ranges, a budget spent) or hold a single
block is left to the serial reader (partition/images/compress.py), which then reports
whatever is wrong with it.
"""

from __future__ import annotations

import lzma
import struct
import zlib
from dataclasses import dataclass
from array import array
from itertools import chain, islice

from ..errors import PartitionError
from .ordered import PIECE, Inline, Job, OrderedPieces
from .source import read_full

HEADER_MAGIC, FOOTER_MAGIC = b"\xfd7zXZ\x00", b"YZ"
# The indexes are held while the file is read (16 bytes a block, and their own bytes), and
# each stream costs a read of up to PADDING_LIMIT bytes at its end: both are bounded here,
# not by the file's layout (a file of a million empty streams, or of indexes making up most
# of its bytes, would otherwise cost gigabytes before a byte is decompressed).
INDEX_LIMIT = 1 << 20        # all indexes: 100,000 blocks and more (2.4 TB of xz -T's)
STREAM_LIMIT = 1024          # concatenated streams; more are read serially
INPUT_CHUNK = 1 << 20
PADDING_LIMIT = 64 << 10     # zeros between streams: more is left to the serial reader


@dataclass(frozen=True)
class Stream:
    start: int                   # byte offset of its header in the file
    header: bytes                # its 12-byte stream header
    blocks: "_Blocks"            # (unpadded size, plain size) per block, from the index
    index: bytes                 # its index and footer, as the file holds them


def _padded(n: int) -> int:
    return (n + 3) & ~3


def _vli(data: bytes, at: int) -> tuple[int, int]:
    """A variable-length integer of the xz format at ``at``: (value, next offset)."""
    value = 0
    for i in range(9):
        if at + i >= len(data):
            raise ValueError("cut short")
        byte = data[at + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if byte == 0 and i:
                raise ValueError("not minimally encoded")
            return value, at + i + 1
    raise ValueError("longer than 9 bytes")


def _encode_vli(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_streams(pread, size: int) -> list[Stream] | None:
    """The streams of an xz file of ``size`` bytes from their indexes, read backwards
    from its end with ``pread(offset, length)``; None where anything is amiss (the serial
    reader then tells what)."""
    streams: list[Stream] = []
    pos, index_bytes = size, 0
    try:
        while pos > 0:
            if len(streams) == STREAM_LIMIT:
                return None
            tail = pread(max(0, pos - PADDING_LIMIT), min(pos, PADDING_LIMIT))
            padding = len(tail) - len(tail.rstrip(b"\0")) & ~3        # stream padding
            if padding == PADDING_LIMIT:
                return None
            pos -= padding
            if pos < 24:
                return None
            footer = pread(pos - 12, 12)
            if footer[10:] != FOOTER_MAGIC or struct.unpack("<I", footer[:4])[0] != zlib.crc32(footer[4:10]):
                return None
            backward = (struct.unpack("<I", footer[4:8])[0] + 1) * 4
            index_at = pos - 12 - backward
            index_bytes += backward
            if index_bytes > INDEX_LIMIT or index_at < 12:
                return None
            index = pread(index_at, backward)
            blocks = _parse_index(index)
            start = index_at - sum(_padded(u) for u, _ in blocks) - 12
            if start < 0:
                return None
            header = pread(start, 12)
            if (header[:6] != HEADER_MAGIC or header[6:8] != footer[8:10]
                    or struct.unpack("<I", header[8:])[0] != zlib.crc32(header[6:8])):
                return None
            streams.append(Stream(start, header, blocks, index + footer))
            pos = start
    except ValueError:
        return None
    streams.reverse()
    return streams


class _Blocks:
    """(unpadded size, plain size) of each block, 16 bytes a block (as tuples, 100: a
    1 MiB index would have taken 50 MiB)."""

    def __init__(self):
        self._sizes = array("Q")

    def append(self, unpadded: int, plain: int) -> None:
        self._sizes.extend((unpadded, plain))

    def __len__(self) -> int:
        return len(self._sizes) // 2

    def __iter__(self):
        return zip(islice(self._sizes, 0, None, 2), islice(self._sizes, 1, None, 2))


def _parse_index(index: bytes) -> _Blocks:
    if not index or index[0] != 0:
        raise ValueError("no index indicator")
    count, at = _vli(index, 1)
    if count > len(index) // 2:          # each record takes two bytes at least
        raise ValueError("more records than bytes")
    blocks = _Blocks()
    for _ in range(count):
        unpadded, at = _vli(index, at)
        plain, at = _vli(index, at)
        if unpadded < 5:
            raise ValueError("block too small")
        blocks.append(unpadded, plain)
    if len(index) - at < 4 or index[at:-4].count(0) != len(index) - at - 4 \
            or (len(index) - 4) % 4 or struct.unpack("<I", index[-4:])[0] != zlib.crc32(index[:-4]):
        raise ValueError("bad index padding or CRC")
    return blocks


def parallel_reader(inner, pread, size: int, name: str, budget: int, piece: int = PIECE):
    """An ``OrderedPieces`` reader of the plain bytes of the xz file read forward from
    ``inner``, or None when its blocks cannot be decoded apart (one block, no index)."""
    streams = read_streams(pread, size)
    if not streams or sum(len(s.blocks) for s in streams) < 2:
        return None
    return OrderedPieces(_units(inner, streams, size, name, budget // 2, piece), budget)


def _units(inner, streams: list[Stream], size: int, name: str, limit: int, piece: int):
    pos = 0

    def take(n: int, what: str) -> bytes:
        nonlocal pos
        data = read_full(inner, n)
        if len(data) != n:
            raise PartitionError(f"{name}: truncated xz file: the {what} at byte {pos} ends at "
                                 f"byte {pos + len(data)}")
        pos += n
        return data

    def padding(end: int) -> None:
        zeros = take(end - pos, "stream padding")
        if zeros.count(0) != len(zeros):
            raise PartitionError(f"{name}: xz stream padding at byte {pos - len(zeros)} is not zeros")

    def chunks(n: int):
        while n:
            data = take(min(INPUT_CHUNK, n), "block")
            n -= len(data)
            yield data

    for stream in streams:
        padding(stream.start)
        if take(12, "stream header") != stream.header:
            raise PartitionError(f"{name}: the xz stream header at byte {stream.start} changed "
                                 "while it was read")
        for unpadded, plain in stream.blocks:
            at, padded = pos, _padded(unpadded)
            tail = _mini_index(unpadded, plain, stream.header[6:8])
            if padded + plain <= limit:
                block = list(chunks(padded))      # read here, in order; decoded on a thread
                yield Job(lambda block=block, tail=tail, plain=plain, at=at: list(
                    _decode(stream.header, block, tail, plain, at, name, piece)), padded + plain)
            else:
                yield Inline(_decode(stream.header, chunks(padded), tail, plain, at, name, piece))
        index_at = pos
        if take(len(stream.index), "index") != stream.index:
            raise PartitionError(f"{name}: the xz index at byte {index_at} changed while it was read")
    padding(size)


def _mini_index(unpadded: int, plain: int, flags: bytes) -> bytes:
    """The index and footer of a stream holding one block of these sizes."""
    index = b"\0\x01" + _encode_vli(unpadded) + _encode_vli(plain)
    index += bytes(-len(index) % 4)
    index += struct.pack("<I", zlib.crc32(index))
    backward = struct.pack("<I", len(index) // 4 - 1) + flags
    return index + struct.pack("<I", zlib.crc32(backward)) + backward + FOOTER_MAGIC


def _decode(header: bytes, block, tail: bytes, plain: int, at: int, name: str, piece: int):
    """One block, as a stream of its own (``header``, the ``block``'s compressed chunks,
    ``tail``: its one-record index and footer), ``piece`` plain bytes at a time; never
    more than the ``plain`` bytes its record claims."""
    d = lzma.LZMADecompressor(lzma.FORMAT_XZ)
    inputs = chain([header], block, [tail])
    done = 0
    try:
        while not d.eof:
            data = b""
            if d.needs_input:
                data = next(inputs, None)
                if data is None:
                    break
            out = d.decompress(data, min(piece, plain - done + 1))
            done += len(out)
            if done > plain:
                break
            if out:
                yield out
    except lzma.LZMAError as exc:
        raise PartitionError(f"{name}: corrupt xz block at compressed byte {at}: {exc}") from exc
    _held_to(d, done, plain, at, name)


def _held_to(d, done: int, plain: int, at: int, name: str) -> None:
    if done > plain:
        raise PartitionError(f"{name}: the xz block at compressed byte {at} holds more than "
                             f"the {plain} bytes its index record says")
    if not d.eof or done != plain:
        raise PartitionError(f"{name}: the xz block at compressed byte {at} holds {done} "
                             f"bytes, its index record says {plain}")
