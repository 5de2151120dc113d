"""An image's own map of where it reads as zeros, known as soon as it is opened: a qcow2's
unallocated and zero clusters (from the tables checked at the open), a local file's holes
(from the file system). The copier zeroes these runs on the device before the data
reaches them (partition/writing/copy.py, ``_Writer.zero_ahead``, says why).

The map is bounded by what the image's own metadata gave, and capped (MAX_RUNS): a map of
more runs keeps the first ones found; the others are zeroed as the stream reaches them,
as every zero run was before.
"""

from __future__ import annotations

MAX_RUNS = 1 << 16      # about 5 MiB of tuples; a real image has a few thousand at most


class ZeroMap:
    """Runs (offset, length) added in any order; ``runs()``: sorted, neighbours merged."""

    def __init__(self) -> None:
        self._runs: list[tuple[int, int]] = []

    def __len__(self) -> int:
        return len(self._runs)

    def add(self, offset: int, length: int) -> None:
        if length <= 0:
            return
        if self._runs and sum(self._runs[-1]) == offset:
            self._runs[-1] = (self._runs[-1][0], self._runs[-1][1] + length)
        elif len(self._runs) < MAX_RUNS:
            self._runs.append((offset, length))

    def runs(self) -> list[tuple[int, int]]:
        """Sorted and disjoint: touching or overlapping runs merged."""
        merged: list[tuple[int, int]] = []
        for offset, length in sorted(self._runs):
            if merged and offset <= sum(merged[-1]):
                start = merged[-1][0]
                merged[-1] = (start, max(sum(merged[-1]), offset + length) - start)
            else:
                merged.append((offset, length))
        return merged
