"""The files of a drive being read: where their bytes lie, which names they may have, and
what reading them may cost.

The ISO 9660 and FAT readers both turn a drive into {path: FileRef} first (directories
walked once each, names checked, every byte run inside the image and used by one file
only) and read file data only afterwards, so that ``extract`` can stream each file to
disk and ``inspect`` can list sizes without holding the data.

Work is bounded by bytes actually read, never by what the drive declares: every
directory, FAT, continuation area and file is charged to a :class:`Budget` before it
is read, with a total cap of 64 MiB (ironic's cap on a config drive) and a cap on the
number of entries. A crafted drive whose records all point at one huge extent, or at
their own directory, once took ``inspect`` to 1.6 GB of memory on an 8.8 MB image.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

from ..errors import ConfigDriveError, one_line

# The largest drive ironic accepts, and the default vfat size nova uses.
MAX_DRIVE_BYTES = 64 * 1024 * 1024
# Files and directories on one drive: nova writes about 60; a directory of 64 MiB of
# records would otherwise give millions of objects.
MAX_ENTRIES = 10_000
CHUNK = 1 << 20


class Budget:
    """What reading one drive has cost so far: bytes read (or about to be) and entries
    listed. Past either cap the read is refused; the counters are the fuzzers' measure of
    work, which must stay proportional to the input's size."""

    def __init__(self, source: str, limit: int = MAX_DRIVE_BYTES, max_entries: int = MAX_ENTRIES):
        self.source, self.limit, self.max_entries = source, limit, max_entries
        self.bytes_read = 0
        self.entries = 0

    def charge(self, nbytes: int, what: str) -> None:
        self.bytes_read += nbytes
        if self.bytes_read > self.limit:
            raise ConfigDriveError(
                f"{self.source}: {what} takes reading the drive past {self.limit} bytes "
                f"(64 MiB, ironic's cap on a config drive)")

    def count_entry(self, where: str) -> None:
        self.entries += 1
        if self.entries > self.max_entries:
            raise ConfigDriveError(f"{self.source}: more than {self.max_entries} files and "
                                   f"directories (at {where})")


@dataclass(frozen=True)
class FileRef:
    """A file's size and the (byte offset, length) runs of the image that hold it."""

    size: int
    runs: tuple[tuple[int, int], ...]


@dataclass
class Listing:
    """What a reader found: {relative path: FileRef}, and which bytes of the image each
    file or directory took."""

    source: str
    image_size: int
    budget: Budget
    files: dict[str, FileRef] = field(default_factory=dict)
    _claims: list[tuple[int, int, str]] = field(default_factory=list)   # sorted (start, end, what)

    def claim(self, start: int, length: int, what: str) -> None:
        """Take the image bytes [start, start + length) for one file or directory.
        Refuses bytes taken already: cross-linked records (a directory pointing at itself
        or a parent, many files on one extent) would otherwise let a small image declare
        any amount of work. Every byte is then read at most once."""
        if length <= 0:
            return
        end = start + length
        if end > self.image_size:
            raise ConfigDriveError(f"{self.source}: {what} at byte {start} ({length} bytes) lies "
                                   f"past the end of the {self.image_size}-byte image")
        at = bisect.bisect_left(self._claims, (start,))
        for other in self._claims[max(at - 1, 0):at + 1]:
            if other[0] < end and start < other[1]:
                raise ConfigDriveError(
                    f"{self.source}: {what} at byte {start} overlaps {other[2]} at byte "
                    f"{other[0]} (cross-linked records)")
        self._claims.insert(at, (start, end, what))

    def add(self, path: str, ref: FileRef) -> None:
        """Take a file: its runs are claimed and its size charged now, so the data can be
        read later without surprises."""
        what = f"file {one_line(path)}"
        for start, length in ref.runs:
            self.claim(start, length, what)
        self.budget.charge(ref.size, f"{what} ({ref.size} bytes)")
        self.files[path] = ref


def check_name(source: str, directory: str, name: str) -> str:
    """A name read from a drive, refused when it could not be one file in one directory
    on the host: empty, ``.``/``..``, holding ``/`` or NUL (extract would leave DIR or
    fail), or a control character (a newline forges lines in ``inspect``)."""
    bad = (name in ("", ".", "..") or "/" in name or "\0" in name
           or any(not c.isprintable() and c != " " for c in name))
    if bad:
        raise ConfigDriveError(f"{source}: directory {one_line(directory or '/')} holds an entry "
                               f"named '{one_line(name)}', which cannot be a file name")
    return name


def check_unique(source: str, directory: str, seen: dict[str, str], keys: set[str],
                 name: str) -> None:
    """Refuse a second entry that a lookup by name could find instead of the first.
    The Linux driver and mtools both return the first match, so a reader that listed
    both would disagree with the guest about which file it reads; we name the name."""
    for key in keys:
        if key in seen:
            raise ConfigDriveError(
                f"{source}: directory {one_line(directory or '/')} holds two entries named "
                f"'{one_line(name)}' (the other is '{one_line(seen[key])}'); a lookup "
                f"finds only the first, so the drive is ambiguous")
    for key in keys:
        seen[key] = name


def read_file(fp: BinaryIO, ref: FileRef, source: str, path: str) -> Iterator[bytes]:
    """A file's data in pieces of at most 1 MiB."""
    left = ref.size
    for start, length in ref.runs:
        at, run_left = start, min(length, left)
        while run_left:
            fp.seek(at)
            piece = fp.read(min(run_left, CHUNK))
            if not piece:
                raise ConfigDriveError(f"{source}: file {one_line(path)}: the image ends at byte "
                                       f"{at}, inside its data")
            at += len(piece)
            run_left -= len(piece)
            left -= len(piece)
            yield piece
    if left:
        raise ConfigDriveError(f"{source}: file {one_line(path)}: {ref.size} bytes listed, "
                               f"{ref.size - left} stored")


def read_all(fp: BinaryIO, listing: Listing) -> dict[str, bytes]:
    return {path: b"".join(read_file(fp, ref, listing.source, path))
            for path, ref in listing.files.items()}
