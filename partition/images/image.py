"""Open an OS image from anywhere as a stream of extents of its virtual disk.

The chain, one small reader per job (coreos-installer style)::

    source (file | stdin | http)  ->  hash + count  ->  decompress (by magic)
        ->  format (raw | qcow2)  ->  extents (offset, length, data or None for zeros)

Formats and compressors are told by their content, never by a name (partition/images/formats.py:
containers we do not convert are refused by name). One layer of compression (gzip, xz,
zstd) around a raw or qcow2 image is accepted.

A source we cannot account for is refused before any target is touched: an empty one, one
shorter than a sector, a raw disk shorter than its own GPT says (when the length is known
up front). Found only at the end of a stream, the same shortfall fails the copy, which
then wipes the target's tables (partition/writing/copy.py).

qcow2 needs random access (its metadata may lie anywhere, before or after the data), so:
an uncompressed qcow2 in a local file is read in place with pread, and its checksum is
computed by a thread reading the same file in order; an uncompressed qcow2 over http(s)
from a server that serves byte ranges is read in place: its tables and the first MiB of
its disk by a few Range requests, then its data in one forward pass in the file's order
whatever the order of its clusters, each written at its virtual offset (``in_order``
False; partition/images/ranged.py: no spool, memory bounded by the entries read). From a server
without ranges the same reads are whole-file passes, the first answer going on as the
first: one for qemu-img's layout (two with a checksum: the hashing pass reads from the
start), three at most (the first MiB's clusters lying behind the tables that map them).
A qcow2 from stdin, inside a compressor or from a server that names no ETag or
Last-Modified (a second request cannot be proven to get the same file) is read once,
forward (``_Forward``): when its tables and first MiB come before the data they map
(qemu-img's layout for an image with one L2 table), the data is converted as it
arrives and only the file's start is kept; otherwise the rest is spooled to an
unlinked temporary file (hashing as it streams by, progress shown), which keeps memory
bounded whatever the image size, and converted from there.
"""

from __future__ import annotations

import errno
import os
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator

from .checksum import HashingReader
from .compress import compression_of, decompressing_reader
from ..errors import PartitionError
from .formats import HEAD_BYTES, MIN_DISK, gpt_declared_size, identify, refuse_unconvertible
from ..progress import Progress
from .qcow2 import READ_RUN, Qcow2
from .source import HttpSource, RangePreads, Source, open_source, read_full
from .zeromap import MAX_RUNS, ZeroMap

ZERO_GRAIN = 64 << 10    # zero detection granularity inside data
# Bytes an http(s) image may cost in Range requests to find its compressed units (an xz
# file's index, its streams' footers): one stream takes a 64 KiB window and its header.
INDEX_READS = 2 << 20
HEAD = 1 << 20           # the copier holds back this much of the disk's start (copy.HOLD)


@dataclass(frozen=True)
class Buffers:
    """How much image data a deploy holds in flight: each read (a raw chunk, a qcow2 run
    of contiguous data, a forward skip or spool copy) is at most ``read_size`` bytes, and
    the copier's reader thread runs at most ``queue_depth`` batches of them ahead of the
    writer (partition/writing/copy.py). Passed down as a value, never set on a module: a constant
    patched for one deploy missed what was computed from it at import and every
    ``from ... import`` of it, and would leak into any other deploy running meanwhile.
    The defaults are the command line's (deep enough that reading, decompressing and
    writing overlap); an ironic ramdisk, where each byte is RAM the node needs, passes
    fewer and smaller (configdrive/engines/ironic/manager.py). ``decompress_budget``: the
    bytes (compressed and plain) of the xz blocks or zstd frames decompressed on threads at
    once (partition/images/ordered.py); one claiming more than half of it is decompressed
    on the reading thread instead."""

    queue_depth: int = 6
    read_size: int = READ_RUN      # 4 MiB, the qcow2 reader's own default
    decompress_budget: int = 256 << 20


DEFAULT_BUFFERS = Buffers()
# All zeros, as long as a default read: a whole zero chunk is told by one compare.
_ZEROS = bytes(DEFAULT_BUFFERS.read_size)

Extent = tuple[int, int, "bytes | memoryview | None"]   # offset, length, data (None: zeros)


@dataclass
class Image:
    """An opened image. Iterate ``extents()`` once, then call ``finish()`` for the digest
    of the source bytes (None when no hash was asked for)."""

    name: str
    format: str                        # "raw" or "qcow2"
    compression: str | None            # "gzip", "xz", "zstd" or None
    virtual_size: int | None           # None: a raw stream whose end is not known yet
    _extents: Callable[[], Iterator[Extent]]
    _finish: Callable[[], str | None]
    _closers: list = field(default_factory=list)
    detected: str = "raw"              # what the content is (formats.identify), or "forced"
    origin: os.stat_result | None = None   # the local file or device read, if any
    # False: after the first HEAD bytes (given first, in order) the extents come in any
    # order (a qcow2 converted in its file's order), each once; virtual_size is known.
    in_order: bool = True
    # The image's own map of its zero runs, (offset, length), sorted, known at the open
    # (zeromap.py): a qcow2's zero and unallocated clusters, a local file's holes. The
    # stream gives them as zero extents too, later; never data there.
    known_zeros: list = field(default_factory=list)

    def extents(self) -> Iterator[Extent]:
        """The virtual disk in order; data extents are split where they hold runs of
        zeros (64 KiB grain) so that the writer can punch holes or zero out instead."""
        for offset, length, data in self._extents():
            if data is None:
                yield offset, length, None
            else:
                yield from split_zeros(offset, data)

    def finish(self) -> str | None:
        return self._finish()

    def close(self) -> None:
        for close in reversed(self._closers):
            close()
        self._closers.clear()

    def __enter__(self) -> "Image":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def split_zeros(offset: int, data) -> Iterator[Extent]:
    """Cut ``data`` at ``offset`` into data and zero extents on a 64 KiB grain.

    Each grain is compared in place (``bytes.startswith`` at an offset is a memcmp on the
    buffer itself, and stops at the first non-zero byte, which in data is almost always
    the first): no grain is copied out to be compared. Copying each grain to a bytes
    object first cost a second pass over every data byte (about a third of the CPU of a
    qcow2 deploy once the kernel's own copies are counted)."""
    length = len(data)
    if not isinstance(data, (bytes, bytearray)):
        data = bytes(data)       # a memoryview has no startswith; no reader of ours yields one
    if length == len(_ZEROS) and data == _ZEROS:
        yield offset, length, None
        return
    view = memoryview(data)
    zero_grain = _ZEROS[:ZERO_GRAIN]
    run_start, run_zero = 0, None
    for start in range(0, length, ZERO_GRAIN):
        end = min(start + ZERO_GRAIN, length)
        zero = data.startswith(zero_grain if end - start == ZERO_GRAIN
                               else _ZEROS[: end - start], start)
        if zero is not run_zero and run_zero is not None:
            yield offset + run_start, start - run_start, None if run_zero else view[run_start:start]
            run_start = start
        run_zero = zero
    if run_zero is not None:
        yield offset + run_start, length - run_start, None if run_zero else view[run_start:]


def file_extents(fd: int, size: int, name: str,
                 read_size: int = DEFAULT_BUFFERS.read_size) -> Iterator[Extent]:
    """A local file's first ``size`` bytes as extents, its holes as the file system
    reports them (SEEK_DATA/SEEK_HOLE): a sparse 4 GiB cloud image holding 1 GiB of data
    is 1 GiB read, not 4 GiB read and scanned for zeros (4 s of CPU once). Data regions
    are read in ``read_size`` pieces; ``Image.extents`` still finds zero runs inside
    them, which costs little (about 60 ms of CPU per GiB) and keeps a file written
    without holes fast. A file system that cannot tell reports all of the file as data."""
    for offset, data_at, hole_at in _regions(fd, size, name):
        if data_at > offset:
            yield offset, data_at - offset, None
        while data_at < hole_at:
            n = min(read_size, hole_at - data_at)
            try:
                data = os.pread(fd, n, data_at)
            except OSError as exc:
                raise PartitionError(f"{name}: read of {n} bytes at byte {data_at} failed: "
                                     f"{exc.strerror}") from exc
            if len(data) != n:
                raise PartitionError(f"{name}: truncated while reading: ended at byte "
                                     f"{data_at + len(data)}, its length was {size} bytes")
            yield data_at, n, data
            data_at += n


def file_holes(fd: int, size: int, name: str) -> list[tuple[int, int]]:
    """A local file's holes in its first ``size`` bytes, as the file system reports them
    now (``file_extents`` asks again as it reads; a hole that became data meanwhile fails
    the copy, see copy.py), as many as the zero map keeps."""
    holes = ZeroMap()
    for offset, data_at, _ in _regions(fd, size, name):
        holes.add(offset, data_at - offset)
        if len(holes) >= MAX_RUNS:
            break
    return holes.runs()


def _regions(fd: int, size: int, name: str) -> Iterator[tuple[int, int, int]]:
    """The file's first ``size`` bytes as the file system reports them, asked as they are
    walked: (start, data, end) for each hole [start, data) and the data [data, end) after
    it (either may be empty)."""
    offset = 0
    while offset < size:
        data_at = _seek(fd, offset, os.SEEK_DATA, size, name)
        hole_at = _seek(fd, data_at, os.SEEK_HOLE, size, name) if data_at < size else size
        yield offset, data_at, hole_at
        offset = hole_at


def _seek(fd: int, offset: int, whence: int, size: int, name: str) -> int:
    """lseek(SEEK_DATA | SEEK_HOLE), clamped to ``size``; ENXIO (no data past ``offset``)
    is the end; a file system without support counts as all data."""
    try:
        return min(os.lseek(fd, offset, whence), size)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            return size
        if exc.errno == errno.EINVAL:
            return offset if whence == os.SEEK_DATA else size
        raise PartitionError(f"{name}: lseek at byte {offset} failed: {exc.strerror}") from exc


class _Peek:
    """A reader that can look at its first bytes without consuming them."""

    def __init__(self, inner):
        self._inner, self._head = inner, b""

    def peek(self, n: int) -> bytes:
        while len(self._head) < n:
            more = self._inner.read(n - len(self._head))
            if not more:
                break
            self._head += more
        return self._head[:n]

    def read(self, n: int = -1) -> bytes:
        if self._head:
            data = self._head if n < 0 else self._head[:n]
            self._head = self._head[len(data):]
            return data
        return self._inner.read(n)


def open_image(spec: str | os.PathLike, *, hash_algorithm: str | None = None,
               spool_dir: str | None = None, http_options: dict | None = None,
               on_spool: Callable[[str], None] | None = None,
               image_format: str = "auto", buffers: Buffers = DEFAULT_BUFFERS) -> Image:
    """Open ``spec`` (path, ``-`` or http(s) URL) and identify it by its content.

    ``hash_algorithm`` (hashlib name) hashes the source bytes; ``finish()`` returns the
    hex digest. ``image_format``: "auto", or "raw" to write the (decompressed) bytes as
    they are whatever they hold, or "qcow2" to insist on qcow2, or "raw-declared" (what
    ironic's disk_format raw promises): as "auto", but a qcow2 is refused, as IPA's format
    inspector refuses it; told from the bytes that are then written, so a server cannot
    answer a first look with one file and the download with another. ``buffers``: the most read
    at once (``read_size``; the copier takes its ``queue_depth``). Raises PartitionError for
    anything refused (before any target is touched)."""
    source = open_source(spec, **(http_options or {}))
    try:
        image = _open(source, hash_algorithm, spool_dir, on_spool, image_format, buffers)
        image.origin = source.stat
        return image
    except BaseException:
        source.close()
        raise


def _open(source: Source, hash_algorithm, spool_dir, on_spool, image_format="auto",
          buffers: Buffers = DEFAULT_BUFFERS) -> Image:
    import hashlib
    read_size = buffers.read_size
    hasher = hashlib.new(hash_algorithm) if hash_algorithm else None
    hashing = HashingReader(source, hasher)
    outer = _Peek(hashing)
    compression = compression_of(outer.peek(8))
    stream = outer
    closers = [source.close]
    if compression:
        # A local file can be read at random too, and so can an http(s) file served with
        # ranges (a few Range requests, within INDEX_READS): an xz file's index is read
        # from its end.
        pread = None
        if source.path:
            pread = lambda offset, n: os.pread(source.fileno(), n, offset)      # noqa: E731
        elif isinstance(source, HttpSource) and source.ranges and source.provable:
            pread = RangePreads(source, INDEX_READS)
        decompressed = decompressing_reader(outer, compression, source.name, pread, source.size,
                                            buffers.decompress_budget)
        closers.append(decompressed.close)
        stream = _Peek(decompressed)
        if compression_of(stream.peek(8)):
            raise PartitionError(f"{source.name}: compressed twice ({compression} around "
                                 f"{compression_of(stream.peek(8))}): refused")
    head = stream.peek(HEAD_BYTES)
    inside = f" inside {compression}" if compression else ""
    if not head:
        raise PartitionError(f"{source.name}: the image is empty (0 bytes{inside}): refused")
    detected = "forced" if image_format == "raw" else identify(head)
    if image_format == "qcow2" and detected != "qcow2":
        raise PartitionError(f"{source.name}: not a qcow2 image (its content is {detected}): refused")
    if image_format == "raw-declared" and detected == "qcow2":
        raise PartitionError(f"{source.name}: declared disk_format raw, but its content is "
                             "qcow2: refused")
    refuse_unconvertible(detected, source.name)
    if len(head) < MIN_DISK:
        raise PartitionError(f"{source.name}: the image holds only {len(head)} bytes{inside}, "
                             f"less than one {MIN_DISK}-byte sector: refused")

    def drained() -> str | None:
        """The source must have been read to its end (the digest covers every byte)."""
        if outer.read(1):
            raise PartitionError(f"{source.name}: data after the end of the image")
        return hasher.hexdigest() if hasher else None

    if detected != "qcow2":
        size = source.size if not compression else None
        declared, header = (gpt_declared_size(head) if detected != "forced" else None) or (0, 0)
        if size is not None and size < declared:
            raise PartitionError(f"{source.name}: truncated: its GPT header (byte {header}) "
                                 f"declares {declared} bytes, the image holds {size}: refused")

        if source.path and not compression:
            # A local file: its holes are asked of the file system, not read and scanned.
            fd = source.fileno()
            background = _HashFile(fd, source.name, hash_algorithm) if hasher else None
            return Image(source.name, "raw", None, size,
                         lambda: file_extents(fd, size, source.name, read_size),
                         background.result if background else (lambda: None), closers,
                         detected=detected, known_zeros=file_holes(fd, size, source.name))

        def raw_extents() -> Iterator[Extent]:
            offset = 0
            while True:
                data = read_full(stream, read_size)
                if not data:
                    break
                yield offset, len(data), data
                offset += len(data)
            # Found only now (a stream of unknown length): the copy fails and wipes.
            shortfall = max(declared, size or 0)
            if offset < shortfall:
                what = "its GPT declares" if offset < declared else "its length was"
                raise PartitionError(f"{source.name}: truncated: ended at byte {offset}{inside}, "
                                     f"{what} {shortfall} bytes")
        return Image(source.name, "raw", compression, size, raw_extents, drained, closers,
                     detected=detected)

    if source.path and not compression:
        # Read in place through the descriptor opened (never the name again: see
        # _HashFile); hash the same file in order on a thread meanwhile.
        fd = source.fileno()
        qcow = Qcow2(fd, source.size, source.name, read_run=read_size)
        closers.append(qcow.close)
        background = _HashFile(fd, source.name, hash_algorithm) if hasher else None
        finish = background.result if background else (lambda: None)
        return Image(source.name, "qcow2", None, qcow.virtual_size, qcow.extents, finish, closers,
                     detected="qcow2", known_zeros=qcow.zeros.runs())

    if isinstance(source, HttpSource) and not compression and source.provable:
        # Read in place by Range requests: no spool, memory bounded (partition/images/ranged.py);
        # from a server without ranges, by passes through the whole file (tables, data).
        # A server that names no ETag or Last-Modified cannot be proven to send the same
        # file twice: spooled.
        from .ranged import RangedReader, Unforwardable
        if source.ranges:
            source.close()   # the first answer told us what the file is; ranges from here
            ranged = RangedReader(source, hash_algorithm)
        else:                # the first answer goes on as the first pass
            ranged = RangedReader(source, hash_algorithm, prefix=bytes(head))
        closers.append(ranged.close)
        try:
            qcow = Qcow2(ranged, source.size, source.name, head_first=HEAD, read_run=read_size)
        except Unforwardable:      # no ranges, tables far in or out of order: spooled
            ranged.close()
            hasher = hashlib.new(hash_algorithm) if hash_algorithm else None
            fresh = source.range(0)
            closers.append(fresh.close)
            outer = stream = _Peek(HashingReader(fresh, hasher))
        else:
            closers.append(qcow.close)
            return Image(source.name, "qcow2", None, qcow.virtual_size,
                         lambda: qcow.extents_by_host(ranged.follow), ranged.finish, closers,
                         detected="qcow2", in_order=False, known_zeros=qcow.zeros.runs())

    # A stream (stdin, a compressor, a server that cannot serve passes): read forward,
    # keeping what passes in the spool; when the tables and the first MiB's clusters come
    # before the data (qemu-img's layout for one L2 table), the data is converted as it
    # arrives and the spool holds only the file's start. Otherwise the rest is spooled
    # and converted from there, as before.
    import tempfile
    spool = tempfile.TemporaryFile(dir=spool_dir, prefix="configdrive-qcow2-")
    closers.append(spool.close)
    forward = _Forward(stream, spool, source.name, read_size)
    try:
        qcow = Qcow2(forward, UNKNOWN_SIZE, source.name, head_first=HEAD, read_run=read_size)
    except PartitionError:
        if forward.broken is not None:
            raise forward.broken       # the stream itself failed: no spool would help
        qcow = None                    # refused or out of reach: the spool tells which
    if qcow is not None and qcow.data_pass_start() >= forward.pos:
        closers.append(qcow.close)

        def forward_finish() -> str | None:
            while read_full(stream, read_size):       # the rest, for the digest
                pass
            return drained()
        return Image(source.name, "qcow2", compression, qcow.virtual_size,
                     lambda: qcow.extents_by_host(forward.follow), forward_finish, closers,
                     detected="qcow2", in_order=False, known_zeros=qcow.zeros.runs())
    if qcow is not None:
        qcow.close()
    why = (f"inside {compression}" if compression else
           "from a server that names no ETag or Last-Modified, or without ranges and tables "
           "far into the file or out of order" if isinstance(source, HttpSource) else "stream")
    if on_spool:
        on_spool(f"{source.name}: qcow2 {why}: spooling to a temporary file first (qcow2 "
                 "needs random access)")
    where = spool_dir or tempfile.gettempdir()
    known = source.size if not compression else None
    if known is not None:
        _check_spool_room(where, known - forward.pos, source.name)
    spool.seek(forward.pos)
    meter = Progress(f"spooling {source.name}", known, enabled=on_spool is not None)
    meter.update(forward.pos)
    while True:
        data = stream.read(read_size)
        if not data:
            break
        try:
            spool.write(data)
        except OSError as exc:
            # A length known only at the end (stdin, a compressed stream): say where the
            # room ran out and how much it had taken, not a bare "No space left on device".
            raise PartitionError(f"{source.name}: spooling the qcow2 to {where} failed after "
                                 f"{meter.done} bytes: {exc.strerror} (it needs the whole "
                                 "image's size there; TMPDIR names another directory)"
                                 ) from exc
        meter.update(meter.done + len(data))
    meter.finish()
    spool.flush()
    digest = drained()      # reads ``outer``: the stream that went to the spool
    qcow = Qcow2(spool.fileno(), spool.tell(), source.name, read_run=read_size)
    closers.append(qcow.close)
    return Image(source.name, "qcow2", compression, qcow.virtual_size, qcow.extents,
                 lambda: digest, closers, detected="qcow2", known_zeros=qcow.zeros.runs())


def _check_spool_room(where: str, needed: int, name: str) -> None:
    """Refuse a spool that cannot fit before its first byte is written: the error names
    the directory and the size it needed (it used to be a bare "No space left on device"
    once the disk was full)."""
    try:
        st = os.statvfs(where)
    except OSError as exc:
        raise PartitionError(f"{name}: the spool directory {where} cannot be used: "
                             f"{exc.strerror}") from exc
    free = st.f_bavail * st.f_frsize
    if free < needed:
        raise PartitionError(f"{name}: spooling the qcow2 needs {needed} bytes in {where}, "
                             f"which has {free} free (TMPDIR names another directory)")


UNKNOWN_SIZE = 1 << 62     # a stream's length, until its end


class _Forward:
    """``pread`` for the qcow2 reader over a stream read once, forward. Before ``follow``
    everything read is also written to ``spool``, so reads behind the stream (and a
    fallback to converting from the spool) find it there; after it, reads go forward only
    (a compressed cluster may begin in the last sector read: a little is kept)."""

    KEEP = 64 << 10

    def __init__(self, stream, spool, name: str, read_size: int = DEFAULT_BUFFERS.read_size):
        self.stream, self.spool, self.name, self.read_size = stream, spool, name, read_size
        self.pos, self.following, self.broken = 0, False, None
        self.end: int | None = None          # where the stream ended, once it has
        self._kept = b""                     # the last bytes read after ``follow``

    def follow(self) -> None:
        self.following = True

    def read_spans(self, spans, last: bool = False):
        for offset, length in sorted(set(spans)):
            yield offset, length, self.pread(offset, length)

    def pread(self, offset: int, length: int) -> bytes:
        if offset < self.pos:
            if not self.following:
                self.spool.flush()
                behind = os.pread(self.spool.fileno(), min(length, self.pos - offset), offset)
                return behind + (self.pread(self.pos, length - len(behind))
                                 if len(behind) < length else b"")
            back = self.pos - offset
            if back > len(self._kept):
                raise PartitionError(f"{self.name}: qcow2 data at byte {offset} lies behind "
                                     f"byte {self.pos}, which the stream has passed")
            behind = self._kept[len(self._kept) - back:][:length]
            return behind + (self.pread(self.pos, length - len(behind))
                             if len(behind) < length else b"")
        while self.pos < offset:
            if not self._read(min(self.read_size, offset - self.pos)):
                return b""
        return self._read(length)

    def _read(self, n: int) -> bytes:
        try:
            data = read_full(self.stream, n)
        except PartitionError as exc:
            self.broken = exc
            raise
        if not self.following:
            try:
                self.spool.write(data)
            except OSError as exc:
                self.broken = PartitionError(f"{self.name}: spooling the qcow2's start failed "
                                             f"at byte {self.pos}: {exc.strerror} (TMPDIR "
                                             "names another directory)")
                raise self.broken from exc
        else:
            self._kept = (self._kept + data)[-self.KEEP:]
        self.pos += len(data)
        if len(data) < n:
            self.end = self.pos
        return data


class _HashFile(threading.Thread):
    """Hash a local file from start to end while the converter reads it at random
    (hashlib and file reads release the GIL, so this runs alongside), through the
    converter's own descriptor (pread: neither moves the other's position). Never by its
    name again: a file renamed over the name after the open (a writable directory allows
    it) would have had its digest checked while the file opened was written, and a qcow2
    converted from the other file; ``--checksum`` would have passed for bytes it never
    saw."""

    def __init__(self, fd: int, name: str, algorithm: str):
        super().__init__(daemon=True, name="hash-image")
        import hashlib
        # A descriptor of its own for the same open file: this thread may still be
        # reading when a failed deploy closes the image's.
        self._fd, self._name = os.dup(fd), name
        self._hasher, self._error = hashlib.new(algorithm), None
        self.start()

    def run(self) -> None:
        buf, offset = bytearray(1 << 20), 0
        try:
            while n := os.preadv(self._fd, [buf], offset):
                self._hasher.update(memoryview(buf)[:n])
                offset += n
        except OSError as exc:
            self._error = exc
        finally:
            os.close(self._fd)

    def result(self) -> str:
        self.join()
        if self._error:
            raise PartitionError(f"{self._name}: reading for the checksum failed: "
                                 f"{self._error.strerror}")
        return self._hasher.hexdigest()
