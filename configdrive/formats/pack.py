"""The form drives travel in through the ironic API: gzip, then base64 (openstacksdk's
``pack``), and back.

Both directions are bounded by ironic's cap on a drive (64 MiB) and stream: ``pack``
refuses a larger input by its size before reading it and never holds more than the
drive and a piece of its compressed form; ``unpack`` decodes and inflates piece by piece
and stops as soon as the output passes the cap, so a small hostile string cannot inflate
into gigabytes (a gzip bomb) nor a huge one be held whole.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import stat
import struct
import sys
import zlib
from typing import BinaryIO, Callable

from ..files.drivefiles import CHUNK, MAX_DRIVE_BYTES
from ..errors import ConfigDriveError

# gzip's header as Python's gzip.compress(mtime=0, compresslevel=9) writes it: no name, no
# timestamp (reproducible output), "maximum compression", OS unknown.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
# Base64 text of a capped drive: 4 characters per 3 bytes, line breaks, gzip's own
# overhead on incompressible data; more than this cannot unpack to a drive we accept.
_MAX_TEXT = 2 * MAX_DRIVE_BYTES


def pack(image: bytes) -> str:
    """gzip + base64 of a drive image. mtime 0 keeps the output reproducible."""
    pieces: list[str] = []
    _pack_stream(io.BytesIO(image), pieces.append)
    return "".join(pieces)


def pack_file(path: str, write: Callable[[str], object], limit: int = MAX_DRIVE_BYTES) -> None:
    """Pack the drive in the file ``path`` (``-``: stdin), writing the text in pieces.
    A file larger than ``limit`` is refused by its size before a byte is read."""
    if path == "-":
        _pack_stream(sys.stdin.buffer, write, "stdin", limit)
        return
    try:
        fp = open(path, "rb")
    except OSError as exc:
        raise ConfigDriveError(f"{path}: cannot read drive ({exc.strerror or exc})") from exc
    with fp:
        mode = os.fstat(fp.fileno()).st_mode
        size = fp.seek(0, io.SEEK_END) if stat.S_ISREG(mode) or stat.S_ISBLK(mode) else None
        if size is not None and size > limit:
            raise ConfigDriveError(f"{path}: {size} bytes, over the {limit}-byte limit for a "
                                   f"config drive (64 MiB, ironic's)")
        if size is not None:
            fp.seek(0)
        _pack_stream(fp, write, path, limit)


def _pack_stream(fp: BinaryIO, write: Callable[[str], object], source: str = "drive",
                 limit: int = MAX_DRIVE_BYTES) -> None:
    """The gzip stream is kept (at most about the drive's size) and written only once the
    whole input is read: a refusal never leaves half a packed drive on stdout."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    crc, total, packed = 0, 0, bytearray(_GZIP_HEADER)
    while piece := fp.read(CHUNK):
        total += len(piece)
        if total > limit:   # a pipe or a file that grew: counted as it is read
            raise ConfigDriveError(f"{source}: more than {limit} bytes, over the limit for a "
                                   f"config drive (64 MiB, ironic's)")
        crc = zlib.crc32(piece, crc)
        packed += deflate.compress(piece)
    packed += deflate.flush() + struct.pack("<II", crc, total & 0xFFFFFFFF)
    step = 3 * CHUNK      # whole 3-byte groups: the pieces join into one base64 text
    for at in range(0, len(packed), step):
        write(base64.b64encode(packed[at:at + step]).decode("ascii"))


def unpack(text: str | bytes, source: str = "input", limit: int = MAX_DRIVE_BYTES) -> bytes:
    """The drive image inside a packed string. Like ironic-python-agent, a payload that
    is base64 but not gzip is taken as the raw image."""
    if isinstance(text, str):
        text = text.encode("ascii", "replace")
    return unpack_stream(io.BytesIO(text), source, limit)


def unpack_file(path: str, limit: int = MAX_DRIVE_BYTES) -> bytes:
    """:func:`unpack` of the text in the file ``path`` (``-``: stdin), read in pieces."""
    if path == "-":
        return unpack_stream(sys.stdin.buffer, "stdin", limit)
    try:
        fp = open(path, "rb")
    except OSError as exc:
        raise ConfigDriveError(f"{path}: cannot read packed drive ({exc.strerror or exc})") from exc
    with fp:
        return unpack_stream(fp, path, limit)


def unpack_stream(fp: BinaryIO, source: str = "input", limit: int = MAX_DRIVE_BYTES) -> bytes:
    """Decode base64 and inflate gzip piece by piece; memory stays at the output (at most
    ``limit``) plus one piece, whatever the input says."""
    decoded = _Base64Pieces(fp, source, limit)
    first = decoded.next()
    if not first:
        raise ConfigDriveError(f"{source}: empty payload")
    image = bytearray()
    if first[:2] != b"\x1f\x8b":
        piece = first
        while piece:
            image += piece
            if len(image) > limit:
                raise ConfigDriveError(f"{source}: drive is over the {limit}-byte limit")
            piece = decoded.next()
        return bytes(image)
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    piece, trailing = first, 0
    while piece:
        if inflater.eof:
            trailing += len(piece.strip(b"\0"))
        else:
            _inflate(inflater, piece, image, source, limit)
            if inflater.eof:
                trailing += len(inflater.unused_data.strip(b"\0"))
        piece = decoded.next()
    if not inflater.eof:
        raise ConfigDriveError(f"{source}: gzip data is truncated")
    if trailing:
        raise ConfigDriveError(f"{source}: {trailing} bytes of trailing data after the gzip stream")
    return bytes(image)


def _inflate(inflater, data: bytes, image: bytearray, source: str, limit: int) -> None:
    """Inflate ``data`` onto ``image``, never more than one byte past ``limit``."""
    while data and not inflater.eof:
        try:
            out = inflater.decompress(data, limit + 1 - len(image))
        except zlib.error as exc:
            raise ConfigDriveError(f"{source}: corrupt gzip data ({exc})") from exc
        image += out
        if len(image) > limit:
            raise ConfigDriveError(f"{source}: drive inflates past the {limit}-byte limit")
        data = inflater.unconsumed_tail


class _Base64Pieces:
    """Bytes decoded from base64 text (whitespace ignored) one piece at a time."""

    def __init__(self, fp: BinaryIO, source: str, limit: int):
        self.fp, self.source = fp, source
        self.max_text = max(_MAX_TEXT, 2 * limit)
        self.read_so_far = 0
        self.carry = b""
        self.padded = False

    def next(self) -> bytes:
        while True:
            text = self.fp.read(CHUNK)
            self.read_so_far += len(text)
            if self.read_so_far > self.max_text:
                raise ConfigDriveError(f"{self.source}: more than {self.max_text} characters of "
                                       f"packed text, more than any drive under the limit needs")
            compact = self.carry + b"".join(text.split())
            if not text:
                self.carry = b""
                return self._decode(compact)
            whole = len(compact) - len(compact) % 4
            self.carry = compact[whole:]
            if whole:
                return self._decode(compact[:whole])

    def _decode(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        if self.padded:
            raise ConfigDriveError(f"{self.source}: not base64 (text after the final '=' padding)")
        try:
            data = base64.b64decode(chunk, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ConfigDriveError(f"{self.source}: not base64 ({exc})") from exc
        self.padded = chunk.endswith(b"=")
        return data
