"""Read-back verification: prove that the target holds what was written to it.

A checksum over the image as it was READ catches a bad source, not a bad write (a cable,
a counterfeit stick that drops writes past its real size, a failing controller). Here
the writer records a fingerprint of every extent it writes; once all is synced, the
target's cached pages are dropped and every extent is read back from the device::

    fingerprints = Fingerprints()
    fingerprints.add(offset, data, len(data))    # as data goes down
    fingerprints.add(offset, None, length)       # as zeros go down
    fingerprints.check(target)                    # raises PartitionError on a difference

Memory: neighbouring extents are merged into runs of at most CHUNK bytes of data (a zero
run has no limit), each kept as an offset, a length, a zero flag and a 16-byte blake2b
digest in flat arrays: 33 bytes per run, so 33 bytes per MiB of data written (33 MiB per
TiB) for a cloud image's long runs, and at worst 33 bytes per data/zero alternation (3% of
the bytes received for an image that alternates every 512 bytes, the qcow2 minimum):
bounded by what arrives, never by a size the image declares. A difference is located to
within its CHUNK (data) or to the byte (zeros).
"""

from __future__ import annotations

import hashlib
import os
from array import array

from .device import Target
from ..errors import PartitionError

CHUNK = 1 << 20            # the largest data run one digest covers
DIGEST_SIZE = 16
READ_SIZE = 4 << 20        # zero runs are read back in pieces of this size
_ZEROS = bytes(READ_SIZE)


def _digest() -> "hashlib.blake2b":
    return hashlib.blake2b(digest_size=DIGEST_SIZE)


class Fingerprints:
    """What was written where, in a form small enough to keep for a whole disk."""

    def __init__(self):
        self._offsets, self._lengths = array("q"), array("q")
        self._zero = bytearray()             # 1: a zero run, 0: data
        self._digests = bytearray()          # DIGEST_SIZE bytes per run (zeros for a zero run)
        self._run: list | None = None        # the open run: [offset, length, hash or None]

    def add(self, offset: int, data, length: int) -> None:
        """Record that ``data`` (None: zeros) of ``length`` bytes went down at ``offset``."""
        if length <= 0:
            return
        run = self._run
        extends = run is not None and run[0] + run[1] == offset and (run[2] is None) == (data is None)
        if data is None:
            if extends:
                run[1] += length
            else:
                self._close()
                self._run = [offset, length, None]
            return
        view = memoryview(data)[:length]
        while view:
            if not (extends and run[1] < CHUNK):
                self._close()
                run = self._run = [offset, 0, _digest()]
            part = min(len(view), CHUNK - run[1])
            run[2].update(view[:part])
            run[1] += part
            view, offset, extends = view[part:], offset + part, True

    def _close(self) -> None:
        if self._run is None:
            return
        offset, length, hasher = self._run
        self._offsets.append(offset)
        self._lengths.append(length)
        self._zero.append(hasher is None)
        self._digests += bytes(DIGEST_SIZE) if hasher is None else hasher.digest()
        self._run = None

    def __len__(self) -> int:
        return len(self._offsets) + (self._run is not None)

    def check(self, target: Target) -> None:
        """Drop the target's cached pages, read every recorded run back, compare. Raises
        PartitionError naming the lowest offset that differs."""
        self._close()
        target.drop_cache()
        for i in sorted(range(len(self._offsets)), key=self._offsets.__getitem__):
            offset, length = self._offsets[i], self._lengths[i]
            if self._zero[i]:
                _check_zeros(target, offset, length)
                continue
            data = read_back(target, offset, length)
            wanted = bytes(self._digests[i * DIGEST_SIZE: (i + 1) * DIGEST_SIZE])
            if _digest_of(data) != wanted:
                raise PartitionError(
                    f"{target.path}: read-back differs from what was written in bytes "
                    f"{offset}..{offset + length - 1} (blake2b of {length} bytes)")


def _digest_of(data: bytes) -> bytes:
    hasher = _digest()
    hasher.update(data)
    return hasher.digest()


def _check_zeros(target: Target, offset: int, length: int) -> None:
    while length:
        n = min(length, READ_SIZE)
        piece = read_back(target, offset, n)
        if piece != _ZEROS[:n]:
            at = n - len(piece.lstrip(b"\0"))
            raise PartitionError(f"{target.path}: read-back differs at byte {offset + at} "
                                 f"(wrote 0x00, read 0x{piece[at]:02x})")
        offset, length = offset + n, length - n


def read_back(target: Target, offset: int, length: int) -> bytes:
    """``length`` bytes at ``offset``; a target that ends early is a difference too."""
    parts, want = [], length
    while want:
        try:
            piece = os.pread(target.fd, want, offset)
        except OSError as exc:
            raise PartitionError(f"{target.path}: read-back of {want} bytes at byte {offset} "
                                 f"failed: {exc.strerror}") from exc
        if not piece:
            raise PartitionError(f"{target.path}: read-back ends at byte {offset}, "
                                 f"{want} bytes short of what was written")
        parts.append(piece)
        offset, want = offset + len(piece), want - len(piece)
    return parts[0] if len(parts) == 1 else b"".join(parts)
