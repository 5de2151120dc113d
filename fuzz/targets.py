"""Every parser that reads bytes a stranger wrote, as a function of those bytes.

A target returns normally or raises our own clear error (ConfigDriveError or
PartitionError whose message is one non-empty line). Anything else - IndexError,
struct.error, RecursionError, MemoryError, a hang, memory beyond the bound - is a bug.
:func:`run_case` applies that rule and the bounds; the hypothesis tests (tests/fuzz/) and
the atheris harnesses (fuzz/atheris_*.py) both call it.

Bounds per case (stated in docs/FUZZING.md): CASE_SECONDS of wall-clock time, and the
process's peak resident set (getrusage's high-water mark, which counts C allocations in
zlib, lzma, zstd too) may not rise more than CASE_MEMORY above where it stood when the
first case began: the case that pushes it over is the one reported. Legitimate amplification is bounded by the code under test: a packed drive
inflates to at most 64 MiB (MAX_DRIVE_BYTES), and the image readers are consumed up to
VIRTUAL_CAP bytes of virtual disk (a 1 TB image is legitimate; reading it all is not a
parser test).
"""

from __future__ import annotations

import io
import os
import signal
import resource
from contextlib import contextmanager
from typing import Callable, Iterator

from configdrive.errors import ConfigDriveError
from partition.errors import PartitionError

OUR_ERRORS = (ConfigDriveError, PartitionError)
CASE_SECONDS = 10
CASE_MEMORY = 256 << 20
VIRTUAL_CAP = 256 << 20


class FuzzBug(AssertionError):
    """An input that made a parser do something other than answer or refuse clearly."""


class CaseTimeout(BaseException):
    """Raised from SIGALRM; BaseException so that no ``except Exception`` swallows it."""


# -- helpers ------------------------------------------------------------------------------

@contextmanager
def memfile(data: bytes) -> Iterator[tuple[int, str]]:
    """``data`` in an anonymous in-memory file: (fd, a path that opens it)."""
    fd = os.memfd_create("fuzz", os.MFD_CLOEXEC)
    try:
        if data:
            os.write(fd, data)
        yield fd, f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def consume_extents(extents, virtual_size: int | None) -> None:
    """Walk (offset, length, data) extents; they must tile the disk from 0 in order."""
    at = 0
    for offset, length, data in extents:
        if offset != at or length <= 0 or (data is not None and len(data) != length):
            raise FuzzBug(f"extent ({offset}, {length}, {None if data is None else len(data)}) "
                          f"after byte {at}")
        at += length
        if at >= VIRTUAL_CAP:
            return
    if virtual_size is not None and at != virtual_size:
        raise FuzzBug(f"extents cover {at} bytes of a {virtual_size}-byte disk")


# -- targets ------------------------------------------------------------------------------

def qcow2(data: bytes) -> None:
    from partition.images.qcow2 import Qcow2
    with memfile(data) as (fd, _):
        image = Qcow2(fd, len(data), "fuzz.qcow2")
        consume_extents(image.extents(), image.virtual_size)


def gpt(data: bytes) -> None:
    from partition.tables.gpt import read_gpt
    for sector_size in (512, 4096):
        found = read_gpt(io.BytesIO(data), len(data), sector_size)
        if found is not None:
            list(found.entries())


def mbr(data: bytes) -> None:
    from partition.tables.mbr import read_mbr
    for sector_size in (512, 4096):
        found = read_mbr(io.BytesIO(data), len(data), sector_size)
        if found is not None:
            found.partitions()


def tables(data: bytes) -> None:
    """Read the table as deploy and placement do, then plan and add the config partition
    on a copy (the writers meet hostile tables too)."""
    from partition.tables.config_partition import create_config_partition, find_config_partition
    from partition.tables import read_table
    for sector_size in (None, 512, 4096):
        fp = io.BytesIO(data)
        table = read_table(fp, len(data), sector_size, source="fuzz.img")
        if table is None:
            continue
        found = find_config_partition(fp, table, source="fuzz.img")
        if found is None:
            create_config_partition(fp, table, size=1 << 20, source="fuzz.img")


def probe(data: bytes) -> None:
    from partition.tables.probe import probe_filesystem
    probe_filesystem(io.BytesIO(data), 0)


# A drive reader may read the volume descriptors (at most 32 blocks), the boot sector and
# FAT, then every byte of the image once at most (directories, continuation areas, file
# data: each claimed once). Work beyond this is work a declared size or a cross-link bought.
WORK_PER_INPUT_BYTE = 2
WORK_SLACK = 128 << 10


def check_work(name: str, budget, size: int) -> None:
    """The reader's work counter (bytes it read) stays proportional to the input."""
    if budget.bytes_read > WORK_PER_INPUT_BYTE * size + WORK_SLACK:
        raise FuzzBug(f"{name}: read {budget.bytes_read} bytes of a {size}-byte input")


def _read_drive(name: str, scan, data: bytes) -> dict[str, bytes]:
    from configdrive.files.drivefiles import Budget, read_all
    fp = io.BytesIO(data)
    budget = Budget(f"fuzz.{name}")
    try:
        listing = scan(fp, f"fuzz.{name}", budget)
        return read_all(fp, listing)
    finally:
        check_work(name, budget, len(data))


def iso(data: bytes) -> None:
    from configdrive.formats import isoreader
    _read_drive("iso", isoreader.scan, data)


def vfat(data: bytes) -> None:
    from configdrive.formats import fatreader
    _read_drive("vfat", fatreader.scan, data)


def drive(data: bytes) -> None:
    """What ``inspect``/``validate`` do with a file: probe, read (ISO, vfat, or a whole
    disk's config partition), summarise, validate."""
    from configdrive.drives.drivecheck import validate_drive
    from configdrive.drives.reader import open_drive
    with memfile(data) as (_, path):
        found = open_drive(path)
        found.summary()
        validate_drive(found)


def disk(data: bytes) -> None:
    """A whole disk: its table, its config partition, the drive in it (through the window
    ``inspect DISK`` reads it by), work proportional to the disk's bytes."""
    from configdrive.drives.disk import locate_drive_in_disk
    from configdrive.drives.reader import scan_image
    from configdrive.files.drivefiles import read_all
    with memfile(data) as (fd, path):
        with open(path, "rb") as fp:
            found = locate_drive_in_disk(fp, path)
            listing = scan_image(found.fp, found.format, found.source)
            try:
                read_all(found.fp, listing)
            finally:
                check_work("disk", listing.budget, len(data))


def pack(data: bytes) -> None:
    """pack then unpack gives the bytes back, and gzip (not ours) reads what pack wrote."""
    import base64
    import gzip
    from configdrive.formats.pack import pack as pack_, unpack as unpack_
    text = pack_(data)
    if unpack_(text, source="fuzz.packed") != data or gzip.decompress(base64.b64decode(text)) != data:
        raise FuzzBug(f"pack: a {len(data)}-byte input does not come back")


def unpack(data: bytes) -> None:
    from configdrive.formats.pack import unpack as unpack_
    unpack_(data, source="fuzz.packed")
    unpack_(data.decode("latin-1"), source="fuzz.packed")


def json_input(data: bytes) -> None:
    """Every JSON input: each kind of document validated, the ironic object turned into
    content, validated, and laid out as ``build --no-validate`` would."""
    from configdrive.model.content import Content
    from configdrive.documents.jsondoc import parse_json
    from configdrive.model.layout import build_tree
    from configdrive.drives.buildcheck import validate_content
    from configdrive.documents.schema import SCHEMA_FILES
    from configdrive.documents.validate import validate_bytes
    for kind in SCHEMA_FILES:
        validate_bytes(kind, data, f"fuzz.{kind}.json")
    doc = parse_json(data, "fuzz.json")
    content = Content.from_ironic(doc, "fuzz.json")
    content.fill_defaults()
    validate_content(content)
    build_tree(content)


def compress(data: bytes) -> None:
    """The three decompressors around a deploy image, on the raw bytes as each kind."""
    from partition.images.compress import decompressing_reader
    for kind in ("gzip", "xz", "zstd"):
        reader = decompressing_reader(io.BytesIO(data), kind, "fuzz.img")
        buf, total = bytearray(1 << 20), 0
        while (n := reader.readinto(buf)) and total < VIRTUAL_CAP:
            total += n


def image(data: bytes) -> None:
    """What deploy reads: magic -> decompress -> raw or qcow2 -> extents -> digest."""
    from partition.images.image import open_image
    with memfile(data) as (_, path):
        with open_image(path, hash_algorithm="sha256") as opened:
            consume_extents(opened.extents(), opened.virtual_size)
            opened.finish()


TARGETS: dict[str, Callable[[bytes], None]] = {
    "qcow2": qcow2, "gpt": gpt, "mbr": mbr, "tables": tables, "probe": probe, "iso": iso,
    "vfat": vfat, "drive": drive, "disk": disk, "pack": pack, "unpack": unpack, "json": json_input, "compress": compress,
    "image": image,
}


# -- the rule -----------------------------------------------------------------------------

@contextmanager
def time_bound(seconds: float) -> Iterator[None]:
    def expire(signum, frame):
        raise CaseTimeout()
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


_baseline_rss: int | None = None


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_case(name: str, data: bytes, *, measure_memory: bool = True) -> str:
    """Run target ``name`` on ``data``; "ok" or "refused", else raise FuzzBug saying what
    went wrong. ``measure_memory=False`` leaves memory to the caller (atheris has its own
    RSS limit)."""
    global _baseline_rss
    target = TARGETS[name]
    if measure_memory and _baseline_rss is None:
        _baseline_rss = _peak_rss()
    try:
        with time_bound(CASE_SECONDS):
            target(data)
        outcome = "ok"
    except OUR_ERRORS as exc:
        message = str(exc)
        if not message.strip() or "\n" in message or "\r" in message:
            raise FuzzBug(f"{name}: {type(exc).__name__} message is not one line: {message[:300]!r}") from exc
        outcome = "refused"
    except CaseTimeout:
        raise FuzzBug(f"{name}: no answer within {CASE_SECONDS}s ({len(data)}-byte input)") from None
    except FuzzBug:
        raise
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise FuzzBug(f"{name}: {type(exc).__name__}: {exc}"[:500]) from exc
    if measure_memory and _peak_rss() > _baseline_rss + CASE_MEMORY:
        raise FuzzBug(f"{name}: peak RSS {_peak_rss()} bytes passed the bound of "
                      f"{_baseline_rss + CASE_MEMORY} ({len(data)}-byte input)")
    return outcome
