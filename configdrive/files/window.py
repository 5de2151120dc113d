"""A read-only file object over bytes that start somewhere else: ``size`` bytes, a position
of its own, every read bounded by the size and handed to ``read_at``. What a drive inside a
disk's partition (drives/disk.py) and a file held by its descriptor (dirfd.HeldFile) share:
readers and pycdlib written for a whole file read either."""

from __future__ import annotations

import os


class Window:
    """Subclasses say how ``n`` bytes at ``pos`` are read (``read_at``); seeking, the
    position and the bound at ``size`` are this class's."""

    def __init__(self, size: int):
        self.size, self._pos = size, 0

    def read_at(self, pos: int, n: int) -> bytes:
        raise NotImplementedError

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        self._pos = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self.size}[whence] + pos
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, n: int | None = -1) -> bytes:
        n = self.size - self._pos if n is None or n < 0 else min(n, self.size - self._pos)
        if n <= 0:
            return b""
        data = self.read_at(self._pos, n)
        self._pos += len(data)
        return data

    def readinto(self, buf) -> int:
        data = self.read(len(buf))
        buf[:len(data)] = data
        return len(data)

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True
