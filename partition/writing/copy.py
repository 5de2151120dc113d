"""Write an image to a disk with dd semantics, done right (the coreos-installer way).

    write_image("disk.qcow2.xz", "/dev/sda", checksum="sha256:...")   # the one-call API
    copy_image(image, target, expected=..., progress=...)            # with your own ends

Order of work, and why:

1. Everything that can be refused is refused before the target is touched: the image
   (bad qcow2, backing file, ...), a busy target, an image larger than the target, a GPT
   for another sector size than the target's.
2. The first MiB and the last MiB of the target are zeroed and flushed: from here until
   the end no tool sees a partition table, neither the old disk's nor the new image's.
3. The image is streamed with its first MiB held back (it holds the MBR and primary GPT)
   and its last MiB held back (it holds the backup GPT): a crash or SIGKILL meanwhile
   leaves no table at either place. Reading and decompressing run on a thread ahead of
   the writer with a small bounded queue; dirty pages are written out every 32 MiB so
   memory stays bounded and progress honest.
4. The checksum of the source is verified; only then the last MiB and then the first MiB
   are written, each followed by fsync.
5. With ``verify``: every extent written (held-back ends included) was fingerprinted on
   the way down (partition/writing/verify.py); the target's cache is dropped and all of it is
   read back from the device and compared. A difference is a failure like any other.
6. On any failure after step 2, the target gets a fresh empty partition table (protective
   MBR, primary and backup GPT) unless ``preserve_on_error``: never a half-written
   bootable disk.

Zeros: an old disk's data must never show through where the image is zero. Each zero
run of the image is zeroed (a hole punched in a file; on a disk the device's own "write
zeroes", else BLKZEROOUT, where the kernel writes the zeros; never a discard, see
``Target.write_zeros``) on a thread of its own while the data goes on being written
(``_Writer``); a file this deploy created is sparse and zero already and gets no call.
Why the runs and not the whole range in one call: measured on loop devices over a file
on ext4 and over a file in /dev/shm (4 GiB image holding 1 GiB of data, 257 zero runs,
medians of 3), the whole range zeroed first and the data written into it took 1.3-1.5
times as long as the runs zeroed beside the data: the one call frees the blocks (and drops
the cached pages) that the data then has to allocate again. A device that cannot zero
without writing gets no choice anyway (zeroing the whole range there writes every data
byte twice). Made in line, the runs' calls cost 1.35 s of 2.88 s once; beside the data
they cost the wall time only where zeroing takes longer than the data does. The runs an
image's own map names when it is opened (a qcow2's zero and unallocated clusters, a local
file's holes: ``Image.known_zeros``) are handed to that thread before the first data
write, not as the stream reaches them (``_Writer.zero_ahead`` says why and what it saved);
the map and the data are disjoint, and data where the map said zeros fails the copy.
"""

from __future__ import annotations

import bisect
import io
import os
import queue
import threading
import time
from collections import deque
from typing import Iterator

from ..images.checksum import Expected, parse_checksum
from .device import Target, held, refuse_same_file
from .direct import DirectWrites
from ..errors import PartitionError
from ..tables.gpt import header_sector_size, write_empty_gpt
from ..images.image import DEFAULT_BUFFERS, HEAD, Buffers, Image, open_image
from ..progress import Progress, human
from .verify import Fingerprints

HOLD = HEAD               # held back at each end of the image (1 MiB)
SYNC_EVERY = 32 << 20     # start writeback of dirty pages after this many bytes
ZEROING_DEPTH = 64        # zero runs waiting for the zeroing thread
ZERO_CHUNK = 128 << 20    # the most zeroed in one call on that thread (_zero_pages)
PAGE = os.sysconf("SC_PAGESIZE")   # zero runs go to that thread in whole pages (_Writer)


def write_image(image_spec: str, device: "str | Target", *, checksum: str | None = None,
                preserve_on_error: bool = False, progress: Progress | None = None,
                sector_size: int | None = None, spool_dir: str | None = None,
                http_options: dict | None = None, say=None, verify: bool = False,
                create: bool = True, image_format: str = "auto",
                buffers: Buffers = DEFAULT_BUFFERS) -> dict:
    """Open ``image_spec`` (path, ``-``, http(s) URL) and copy it onto ``device``: a
    ``Target`` the caller holds, or a path (block device, or a regular file; a missing one
    is made, as ``dd of=`` does, sized to the image's virtual size, unless ``create`` is
    false; never under /dev), opened and locked once for the whole call. Verify the
    checksum and, with ``verify``, read the written image back. ``buffers``: how much
    image data is in flight (reads of ``read_size``, ``queue_depth`` of them ahead).
    Returns the summary of :func:`copy_image`."""
    expected = parse_checksum(checksum, str(image_spec)) if checksum else None
    with held(device, create=create) as target, \
            open_image(image_spec, hash_algorithm=expected.algorithm if expected else None,
                       spool_dir=spool_dir, http_options=http_options, on_spool=say,
                       image_format=image_format, buffers=buffers) as image:
        if image.detected == "iso-hybrid" and say:
            say(f"{image.name}: a hybrid ISO (ISO 9660 that is also a partitioned disk): "
                "written raw")
        target.expect_sector_size(sector_size)
        target.size_new_file(image.virtual_size)
        refuse_same_file(image.origin, image.name, target)
        return copy_image(image, target, expected=expected, progress=progress,
                          preserve_on_error=preserve_on_error, verify=verify, buffers=buffers)


def copy_image(image: Image, target: Target, *, expected: Expected | None = None,
               progress: Progress | None = None, preserve_on_error: bool = False,
               verify: bool = False, buffers: Buffers = DEFAULT_BUFFERS) -> dict:
    """Stream ``image`` onto ``target`` (see the module docstring for the order of work);
    with ``verify``, read all of it back from the device afterwards and compare. The
    reader runs at most ``buffers.queue_depth`` batches ahead of the writer (the same
    ``buffers`` the image was opened with).
    Returns {format, compression, virtual_size, bytes_written, seconds, checksum, verified}."""
    progress = progress or Progress.quiet()
    progress.total = image.virtual_size
    started = time.monotonic()
    reader = _ReadAhead(image, buffers)
    touched, writer = False, None
    try:
        head, pending = _collect_head(reader)
        _refuse_misfit(image, target, head, pending)
        # A file we create has nothing to hide at its end, and no end yet; any other
        # target is never written past its end.
        limit = None if target.created and not target.size else target.size
        _zero_ends(target)
        touched = True
        zeroed_to = _zeroed_already(target)
        fingerprints = Fingerprints() if verify else None
        writer = _Writer(target, limit, progress, fingerprints, zeroed_to)
        writer.zero_ahead(image.known_zeros)
        # The last MiB is held back until the checksum is proven: the stream's last
        # MiB, or, for extents out of order (after the head), what lies in the disk's.
        tail = _Lag(HOLD) if image.in_order else _Above(max(HOLD, image.virtual_size - HOLD))
        for offset, length, data in _chain(pending, reader):
            if offset + length <= HOLD:
                continue
            if offset < HOLD:        # the part in the first MiB is in ``head`` already
                cut = HOLD - offset
                offset, length = HOLD, length - cut
                data = None if data is None else data[cut:]
            for extent in tail.push(offset, length, data):
                writer.write(*extent)
        writer.close()
        digest = image.finish()
        if expected:
            expected.check(digest, image.name)
        for extent in tail.drain():
            writer.write(*extent)
        writer.close()
        end = max(writer.end, len(head))
        if not target.is_block:
            target.grow_to(end)   # a file we created, whose image ends in zeros
        target.sync()
        target.pwrite(head, 0)
        target.sync()
        progress.update(end)
        progress.finish()
        if fingerprints is not None:
            fingerprints.add(0, head, len(head))
            fingerprints.check(target)
    except BaseException as exc:
        reader.stop()
        if writer is not None:
            try:
                writer.stop(discard=True)   # its error, if any, is this one's consequence
            except BaseException:
                pass
        if touched and not preserve_on_error:
            note = _wipe(target)
            if isinstance(exc, PartitionError):
                raise PartitionError(f"{exc} ({note})") from exc
            if isinstance(exc, OSError):
                raise PartitionError(f"{target.path}: {exc.strerror or exc} ({note})") from exc
        raise
    return {
        "format": image.format,
        "detected": image.detected,
        "compression": image.compression,
        "virtual_size": end,
        "bytes_written": writer.data_bytes + len(head),
        "seconds": round(time.monotonic() - started, 3),
        "checksum": ({"algorithm": expected.algorithm, "value": digest, "verified": True}
                     if expected else None),
        "verified": verify,
    }


def _collect_head(reader: "_ReadAhead") -> tuple[bytearray, list]:
    """Read extents until the first MiB of the virtual disk is known; return it and the
    extents read so far (to be streamed next)."""
    head = bytearray()
    pending = []
    for extent in reader:
        pending.append(extent)
        offset, length, data = extent
        if offset < HOLD:
            part = min(length, HOLD - offset)
            head[offset: offset + part] = bytes(part) if data is None else data[:part]
        if offset + length >= HOLD:
            break
    return head, pending


def _chain(first: list, rest: Iterator) -> Iterator:
    yield from first
    yield from rest


def _refuse_misfit(image: Image, target: Target, head: bytes, pending: list) -> None:
    if not (target.created and not target.size) and len(head) > target.size:
        raise PartitionError(f"{image.name}: the image is larger than {target.path} "
                             f"({target.size} bytes)")
    if image.virtual_size is not None and target.size and image.virtual_size > target.size:
        raise PartitionError(f"{image.name}: virtual size {image.virtual_size} bytes "
                             f"({human(image.virtual_size)}) exceeds {target.path} "
                             f"({target.size} bytes)")
    image_sector = header_sector_size(bytes(head[:4104]))
    if image_sector and image_sector != target.sector_size:
        if target.sector_size_known:
            raise PartitionError(f"{image.name}: GPT made for {image_sector}-byte sectors, but "
                                 f"{target.path} has {target.sector_size}-byte logical sectors")
        target.sector_size = image_sector
    _refuse_crafted_table(image, target, head)


def _refuse_crafted_table(image: Image, target: Target, head: bytes) -> None:
    """The image's own partition table, read from the held-back first MiB with the checks
    the target's table gets after the copy (partitions inside the usable space, no
    overlaps, sane GPT arrays and EBR chains): a crafted one is refused now, with the target
    untouched, instead of after the whole image is written. What lies past the first MiB
    (the backup GPT, far EBRs) reads as zeros here; the check after the copy sees it, as it
    sees the table of a stream whose size is not known before its end."""
    from ..tables import read_table
    disk_bytes = image.virtual_size
    if not disk_bytes or disk_bytes < len(head):
        return
    view = io.BufferedReader(_HeadView(bytes(head), disk_bytes))
    try:
        read_table(view, disk_bytes, target.sector_size if target.sector_size_known else None,
                   source=f"{image.name} (its own partition table)")
    except PartitionError as exc:
        raise PartitionError(f"{exc}; nothing was written to {target.path}") from exc


class _HeadView(io.RawIOBase):
    """A read-only disk of ``size`` bytes that holds ``head`` and zeros after it (nothing
    of that size is allocated: a qcow2 may declare terabytes)."""

    def __init__(self, head: bytes, size: int):
        self.head, self.size, self.pos = head, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.pos = {io.SEEK_SET: offset, io.SEEK_CUR: self.pos + offset, io.SEEK_END: self.size + offset}[whence]
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, buf) -> int:
        n = max(0, min(len(buf), self.size - self.pos))
        piece = self.head[self.pos: self.pos + n]
        buf[:n] = piece + bytes(n - len(piece))
        self.pos += n
        return n


def _zero_ends(target: Target) -> None:
    """Zero the first and the last MiB so that no partition table, old or new, is seen
    until the image is complete and verified."""
    if not target.size:
        return
    target.write_zeros(0, min(HOLD, target.size))
    if target.size > HOLD:
        start = max(HOLD, target.size - HOLD)
        target.write_zeros(start, target.size - start)
    target.sync()


def _zeroed_already(target: Target) -> int:
    """The end of the range ``[HOLD, end)`` that reads back as zeros before anything is
    written to it (the writer skips zero extents there): all of a file this deploy made
    (new, sparse: what is not written is a hole, and copy_image grows it to the image's
    end; zeroing it would also race the zeroing thread's growing of the file against the
    data written past it); on any other target nothing is known to be zero (HOLD: none)."""
    return 1 << 63 if target.created else HOLD


def wipe_disk(device: "str | Target") -> str:
    """After a failure that came once the image was down (its table refused when the disk
    is read back, the config drive not placed): the same fresh empty table as a failed
    copy leaves, so that a deploy that failed never leaves a disk that boots. ``device``:
    the deploy's own ``Target`` (the disk it wrote, whatever its name names by now), or a
    path. Returns the note for the error line."""
    try:
        with held(device) as target:
            return _wipe(target)
    except (PartitionError, OSError) as exc:
        return f"{getattr(device, 'path', device)} could not be wiped either: {exc}"


def _wipe(target: Target) -> str:
    """After a failure: a fresh empty partition table (the disk is blank, not a wreck),
    and the kernel's view of it emptied too: a partition the kernel went on showing (the
    old disk's, or the unverified image's) would still be mounted by label or UUID."""
    from .rescan import reread
    try:
        if not target.is_block:
            target.grow_to(0)      # learn how far a file we created has grown
        write_empty_gpt(target.fileobj(), target.size, target.sector_size)
        target.sync()
        notes = reread(target, []).notes
    except (PartitionError, OSError) as exc:
        return f"{target.named} could not be wiped either: {exc}"
    return "; ".join([f"{target.named} now holds an empty partition table", *notes])


class _Writer:
    """pwrite data and write zeros, in the order given (any order after the head: see
    Image.in_order); report progress.

    Zero extents below ``zeroed_to`` are skipped (that range reads back as zeros already,
    see ``_zeroed_already``); neighbouring zero extents past it are merged into one zeroing
    call, made on a thread of its own (``_Background``) while data goes on being written:
    on a device that cannot zero without writing, the kernel writes each run's zeros
    (BLKZEROOUT) and the call returns only when it is done; made in line, 257 such calls
    held a 1 GiB deploy up for 0.84 s on a RAM-backed loop device, about as long as the
    data took. Only whole pages go to the thread: a zero run and the data beside it then
    never share a page of the device's page cache (which a zeroing call drops for its
    range), so their order does not matter; a run's part-page ends, rare (the grain is
    64 KiB, a qcow2 cluster at least 512 bytes), are zeroed in line. Everything handed out
    is complete by ``close``, which copy_image calls before its fsync and the head. The
    runs are zeroed only after both ends are zeroed and flushed (no table is seen until
    the head goes down), cover only bytes the image holds zeros in (dd semantics: nothing
    past its end), and fail like any write (the target is wiped).

    Data goes to a block device around the page cache (O_DIRECT, partition/writing/direct.py);
    what still goes through it (a file's data, part-sector ends, small pieces) is bounded
    without stalling: every SYNC_EVERY such bytes make a window that another thread has
    the kernel write out (``_writeback_job``), so that pwrite goes on filling the page
    cache while the disk is busy (on one thread the two took turns: a fifth of a 1 GiB
    deploy's time went to sync_file_range)."""

    def __init__(self, target: Target, limit: int | None, progress: Progress,
                 fingerprints: Fingerprints | None = None, zeroed_to: int = 0):
        self.target, self.limit, self.progress = target, limit, progress
        self.zeroed_to = zeroed_to                     # [HOLD, zeroed_to) reads as zeros
        self.fingerprints = fingerprints             # records each extent for a read-back
        self.end = 0                                   # the furthest byte written
        self.data_bytes = 0
        self._first: int | None = None                 # offset of the first extent
        self._covered = 0                              # bytes of extents written
        self._low = self._high = None                  # what the window's pages span
        self._zeros: tuple[int, int] | None = None     # a pending zero run (offset, length)
        self._dirty = 0                                # bytes it left in the page cache
        self._writeback: _Background | None = None     # started at the first window
        self._zeroing: _Background | None = None       # started at the first zero run
        self._data = DirectWrites(target)              # O_DIRECT onto a block device
        self._ahead = _Runs([])                        # zeroed ahead of the stream

    def zero_ahead(self, runs: list[tuple[int, int]]) -> None:
        """Zero ``runs`` (the image's own map of its zeros, Image.known_zeros) now, on the
        zeroing thread, rather than as the stream reaches each; the stream's zero extents
        inside them are then skipped, and data inside them fails the copy (the source
        changed since its map was read). Why: the writer writes one piece at a time and
        the device idles while it reads the next; zeroing already queued fills those
        gaps. A 4 GiB qcow2 holding 1 GiB of data ends in a 2 GiB zero run that the
        stream reached only after the last data, and the device then zeroed it alone:
        measured on the renewed RAM-backed loop device (5 runs each, medians), the runs
        zeroed beside the stream took 0.72 s, zeroed ahead 0.60 s."""
        # Not the first MiB nor, on a target of known size, its last (both zeroed already
        # by _zero_ends; the head and a wipe's backup GPT are written there).
        stop = None if self.limit is None else self.limit - HOLD
        ahead = []
        for offset, length in runs:
            start = max(offset, HOLD, self.zeroed_to)
            end = offset + length if stop is None else min(offset + length, stop)
            if start < end:
                ahead.append((start, end - start))
        self._ahead = _Runs(ahead)
        if ahead:
            self._zero(ahead)

    def write(self, offset: int, length: int, data) -> None:
        if self.limit is not None and offset + length > self.limit:
            raise PartitionError(f"the image is larger than {self.target.path} "
                                 f"({self.limit} bytes): it goes on past byte {self.limit}")
        if self.fingerprints is not None:
            self.fingerprints.add(offset, data, length)
        if data is None:
            start = max(offset, min(offset + length, self.zeroed_to))   # first byte to zero
            for start, end in self._ahead.outside(start, offset + length):
                if self._zeros and self._zeros[0] + self._zeros[1] == start:
                    self._zeros = (self._zeros[0], self._zeros[1] + end - start)
                else:
                    self._flush_zeros()
                    self._zeros = (start, end - start)
        else:
            if self._ahead.overlaps(offset, offset + length):
                raise PartitionError(f"the image changed while it was read: data at byte "
                                     f"{offset} ({length} bytes) where its map said zeros")
            if self._zeroing is not None:
                self._zeroing.check()     # a zeroing failure stops the data now, not at the end
            self._flush_zeros()
            cached = self._data.write(data, offset)    # O_DIRECT where it can (direct.py)
            self.data_bytes += length
            self._dirty += cached
            if cached:
                self._low = offset if self._low is None else min(self._low, offset)
                self._high = max(self._high or 0, offset + length)
        # Extents may come out of order (Image.in_order): the furthest end, the bytes
        # covered for progress, and a window spanning the pages written since the last.
        self.end = max(self.end, offset + length)
        self._first = offset if self._first is None else self._first
        self._covered += length
        if self._dirty >= SYNC_EVERY:
            if self._writeback is None:
                self._writeback = _Background(_writeback_job(self.target), 1, "writeback")
            self._writeback.submit((self._low, self._high - self._low))
            self._low = self._high = None
            self._dirty = 0
        self.progress.update(self._first + self._covered)

    def close(self) -> None:
        """Zero what is pending; wait for the work handed out (raising its error)."""
        self._flush_zeros()
        self.stop()

    def stop(self, discard: bool = False) -> None:
        """Wait for both threads (even when the first raises); raise the first error.
        The O_DIRECT descriptor is closed too (opened again by a later write). With
        ``discard`` (the deploy failed) the work still queued is dropped, not done."""
        self._data.close()
        workers = [w for w in (self._zeroing, self._writeback) if w is not None]
        self._zeroing = self._writeback = None
        error = None
        for worker in workers:
            try:
                worker.close(discard)
            except BaseException as exc:
                error = error or exc
        if error is not None:
            raise error

    def _flush_zeros(self) -> None:
        if self._zeros:
            runs, self._zeros = [self._zeros], None
            self._zero(runs)

    def _zero(self, runs: list[tuple[int, int]]) -> None:
        """Zero ``runs``: their part-page ends in line, their whole pages on the zeroing
        thread, all of them one item of its queue."""
        pages = []
        for offset, length in runs:
            first = -(-offset // PAGE) * PAGE              # whole pages: [first, last)
            last = (offset + length) // PAGE * PAGE
            if last <= first:
                self.target.write_zeros(offset, length)
                continue
            self.target.write_zeros(offset, first - offset)
            self.target.write_zeros(last, offset + length - last)
            pages.append((first, last - first))
        if not pages:
            return
        if self._zeroing is None:
            zeroing = _Background(lambda item: self._zero_pages(item, zeroing), ZEROING_DEPTH,
                                  "zeroing")
            self._zeroing = zeroing
        self._zeroing.submit(pages)

    def _zero_pages(self, runs: list[tuple[int, int]], worker: "_Background") -> None:
        """On the zeroing thread, ZERO_CHUNK at a time: a failed deploy stops it between
        two calls. A run may be terabytes long (a big image's empty tail, known at the
        start), and a device that cannot zero without writing takes hours for it: one
        call for all of it held the error line and the wipe back as long."""
        for offset, length in runs:
            for at in range(offset, offset + length, ZERO_CHUNK):
                if worker.discarding:
                    return
                self.target.write_zeros(at, min(ZERO_CHUNK, offset + length - at))


def _writeback_job(target: Target):
    """Write out windows of dirty pages: start one (sync_file_range WRITE), then wait
    for the one before it. With a queue of one window, the writer is held back only when
    the disk is two windows behind: dirty memory stays bounded."""
    previous = None

    def job(window: tuple[int, int]) -> None:
        nonlocal previous
        target.start_writeback(*window)
        if previous:
            target.wait_writeback(*previous)
        previous = window
    return job


class _Background:
    """Run ``job(item)`` for each item submitted, in order, on a thread of its own; at
    most ``depth`` items wait. The first error is handed back to the submitter (by the
    next ``submit`` or by ``close``); the items after it are dropped."""

    def __init__(self, job, depth: int, name: str):
        self._job, self._error, self.discarding = job, None, False
        self._queue: queue.Queue = queue.Queue(depth)
        self._thread = threading.Thread(target=self._run, daemon=True, name=name)
        self._thread.start()

    def submit(self, item) -> None:
        self._raise()
        self._queue.put(item)

    def check(self) -> None:
        """Raise the error of an item done, if any (between submissions)."""
        self._raise()

    def close(self, discard: bool = False) -> None:
        """Wait for the items submitted; with ``discard``, only for the one in progress.
        Why: after a failed deploy, the zero runs still queued (up to ZEROING_DEPTH, each
        as long as the image declares) used to be zeroed before the error line and the
        wipe; on a disk whose zeros the kernel writes itself, that can be gigabytes
        written to a disk about to be wiped."""
        self.discarding = self.discarding or discard
        self._queue.put(None)
        self._thread.join()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None and not self.discarding:
                try:
                    self._job(item)
                except BaseException as exc:     # handed to the submitter, which raises it
                    self._error = exc


class _Runs:
    """Sorted, disjoint runs (offset, length): what of a range they leave, whether they
    touch it (a binary search each: the extents may come in any order)."""

    def __init__(self, runs: list[tuple[int, int]]):
        self.starts = [offset for offset, _ in runs]
        self.ends = [offset + length for offset, length in runs]

    def outside(self, start: int, end: int) -> Iterator[tuple[int, int]]:
        """The parts of [start, end) no run covers, as (start, end)."""
        at = bisect.bisect_right(self.ends, start)
        while start < end:
            if at == len(self.starts) or self.starts[at] >= end:
                yield start, end
                return
            if self.starts[at] > start:
                yield start, self.starts[at]
            start = max(start, self.ends[at])
            at += 1

    def overlaps(self, start: int, end: int) -> bool:
        at = bisect.bisect_right(self.ends, start)
        return start < end and at < len(self.starts) and self.starts[at] < end


class _Lag:
    """Hold back the most recent ``size`` bytes of a stream of extents (the image's last
    MiB: where its backup GPT lives) until ``drain``."""

    def __init__(self, size: int):
        self.size, self.held, self.total = size, deque(), 0

    def push(self, offset: int, length: int, data) -> Iterator:
        self.held.append((offset, length, data))
        self.total += length
        while self.total > self.size:
            offset, length, data = self.held[0]
            excess = self.total - self.size
            if length <= excess:
                self.held.popleft()
                self.total -= length
                yield offset, length, data
            else:
                self.held[0] = (offset + excess, length - excess,
                                None if data is None else data[excess:])
                self.total -= excess
                yield offset, excess, None if data is None else data[:excess]

    def drain(self) -> Iterator:
        while self.held:
            yield self.held.popleft()
        self.total = 0


class _Above:
    """Hold back what lies at or past ``start`` (the disk's last MiB, where its backup GPT
    lives) until ``drain``, for extents that come in any order (Image.in_order False).
    What is held is copied: a slice would keep the whole read it came from alive."""

    def __init__(self, start: int):
        self.start, self.held = start, []

    def push(self, offset: int, length: int, data) -> Iterator:
        if offset + length <= self.start:
            yield offset, length, data
            return
        if offset < self.start:
            cut = self.start - offset
            yield offset, cut, None if data is None else data[:cut]
            offset, length, data = self.start, length - cut, None if data is None else data[cut:]
        self.held.append((offset, length, None if data is None else bytes(data)))

    def drain(self) -> Iterator:
        self.held.sort(key=lambda extent: extent[0])
        yield from self.held
        self.held = []


_END = object()


class _ReadAhead:
    """Run ``image.extents()`` on a thread, a few chunks ahead of the writer: reading,
    decompressing and writing overlap (they all release the GIL)."""

    def __init__(self, image: Image, buffers: Buffers = DEFAULT_BUFFERS):
        self._queue: queue.Queue = queue.Queue(buffers.queue_depth)
        # A batch is handed over at 1 MiB, or at one read when reads are smaller: the
        # queue then holds at most queue_depth reads' worth.
        self._batch = min(1 << 20, buffers.read_size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(image,), daemon=True,
                                        name="read-image")
        self._thread.start()
        # One generator for the writer's whole life: breaking out of a ``for`` over it
        # (after the first MiB) must not lose the rest of the current batch.
        self._items = self._iterate()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def _run(self, image: Image) -> None:
        try:
            batch, batch_bytes = [], 0
            for extent in image.extents():
                batch.append(extent)
                batch_bytes += extent[1] if extent[2] is not None else 0
                # Hand over whole chunks, not 64 KiB pieces: fewer queue round trips.
                if batch_bytes >= self._batch or len(batch) >= 64 or extent[2] is None:
                    if not self._put(batch):
                        return
                    batch, batch_bytes = [], 0
            if batch and not self._put(batch):
                return
            self._put(_END)
        except BaseException as exc:   # handed to the writer, which raises it
            self._put(exc)

    def __iter__(self):
        return self._items

    def _iterate(self):
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield from item

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
