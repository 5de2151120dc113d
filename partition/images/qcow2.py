"""A pure-Python qcow2 reader: the image's virtual disk as a stream of extents.

Versions 2 and 3, cluster sizes 512 B to 2 MiB, deflate and zstd compressed clusters,
zero clusters, extended L2 entries (subclusters); unallocated clusters read as zeros
(there is never a backing file: images that name one are refused). Only the active L1
table is read; snapshots and refcounts are not needed to convert to raw.

Everything that could make the conversion read outside the image or past qemu's own
limits is refused when the image is opened, before a byte reaches any target: the header,
the extensions, the L1 table and every L2 table and entry are checked up front (the L2
tables are read again while converting, one at a time, so memory stays small).

Work is bounded by the file, not by what it declares: every cluster of the file has one
owner. Two L1 entries sharing an L2 table, an L2 table lying on the header, the L1 or the
refcount table, a data cluster that is also metadata or is mapped twice, a compressed
cluster mapped twice: all refused (a 786 KB image whose L1 entries all named one L2 table
once kept a deploy busy for minutes). So each L2 table is read at most twice and each
data byte once; ``work`` counts the bytes read, and the fuzz tests hold it proportional
to the file's size.

The file must allow random access: ``os.pread`` on a descriptor, or any object with
``pread(offset, length)`` (partition/images/ranged.py reads an http(s) image by Range requests).
The L2 tables converted are the tables checked: each one's digest is kept from the check
and compared when it is read again, so a file changed in between (or a server answering
the same Range differently) fails instead of feeding unchecked entries to the converter.
Compressed clusters are read on the converting thread, in file order, neighbours in one
read (a stream then reads forward), and only inflated on all cores.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
import zlib
from dataclasses import dataclass
from typing import Iterator

from ..errors import PartitionError
from .zeromap import ZeroMap

try:
    from deflate import DeflateError as _libdeflate_error
    from deflate import deflate_decompress as _libdeflate
except ImportError:          # zlib alone is correct, only slower
    _libdeflate, _libdeflate_error = None, Exception

MAGIC = b"QFI\xfb"
HEADER_V2 = struct.Struct(">4sIQIIQIIQQIIQ")          # up to snapshots_offset (72 bytes)
HEADER_V3 = struct.Struct(">QQQII")                   # incompatible .. header_length (@72)

INCOMPAT_DIRTY, INCOMPAT_CORRUPT, INCOMPAT_DATA_FILE = 1 << 0, 1 << 1, 1 << 2
INCOMPAT_COMPRESSION, INCOMPAT_EXTL2 = 1 << 3, 1 << 4
INCOMPAT_KNOWN = (1 << 5) - 1

EXT_END, EXT_BACKING_FORMAT, EXT_FEATURES = 0, 0xE2792ACA, 0x6803F857
EXT_BITMAPS, EXT_ENCRYPTION, EXT_DATA_FILE = 0x23852875, 0x0537BE77, 0x44415441

OFFSET_MASK = 0x00FFFFFFFFFFFE00      # bits 9-55: L1 entries and standard L2 entries
COMPRESSED = 1 << 62
ZERO_FLAG = 1

# qemu's own limits (block/qcow2.h): anything larger is refused by qemu too.
MAX_L1_BYTES = 32 << 20
MAX_REFCOUNT_TABLE_BYTES = 8 << 20
MAX_SNAPSHOTS = 65536
MAX_BACKING_NAME = 1023
READ_RUN = 4 << 20     # the most we read (and hand on) at once, unless told (``read_run``)
COMPRESSED_READ_FACTOR = 8   # compressed clusters may read at most this many times the file
OWNER_PAGE = 64        # clusters per page of the ownership map


@dataclass(frozen=True)
class Header:
    version: int
    cluster_bits: int
    size: int
    l1_size: int
    l1_table_offset: int
    incompatible: int
    header_length: int
    compression_type: int

    @property
    def cluster_size(self) -> int:
        return 1 << self.cluster_bits

    @property
    def extended_l2(self) -> bool:
        return bool(self.incompatible & INCOMPAT_EXTL2)


def is_qcow2(head: bytes) -> bool:
    return head.startswith(MAGIC)


class Qcow2:
    """An opened, fully checked qcow2 image read through ``fd`` (``file_size`` bytes): a
    file descriptor, or an object with ``pread(offset, length)``."""

    def __init__(self, fd, file_size: int, name: str, *, head_first: int | None = None,
                 read_run: int = READ_RUN):
        """``head_first``: convert in the file's order (``extents_by_host``), giving the
        first ``head_first`` bytes of the virtual disk before the rest; ``fd`` must then
        also have ``read_spans`` (partition/images/ranged.py). ``read_run``: the most read (and
        handed on) at once (partition/images/image.py's ``Buffers.read_size``)."""
        self.fd, self.file_size, self.name = fd, file_size, name
        self.read_run = read_run
        self.head_first = head_first
        self._read_at = (lambda offset, length: os.pread(fd, length, offset)) \
            if isinstance(fd, int) else fd.pread
        self._l2_digests: bytearray | None = None   # 8 bytes per L1 entry, from the check
        self.work = 0          # bytes read from the file so far
        self._work_lock = threading.Lock()
        self.header = self._read_header()
        h = self.header
        self.cluster = h.cluster_size
        self.virtual_size = h.size
        self.entry_words = 2 if h.extended_l2 else 1
        self.l2_entries = self.cluster // (8 * self.entry_words)
        self.subcluster = self.cluster // 32 if h.extended_l2 else self.cluster
        # Compressed L2 entries: offset in the low x bits, extra 512-byte sectors above.
        self.csize_shift = 62 - (h.cluster_bits - 8)
        self.coffset_mask = (1 << self.csize_shift) - 1
        self.csize_mask = (1 << (h.cluster_bits - 8)) - 1
        self._local = threading.local()   # a zstd context per thread (they are not shared)
        self._pool = None      # inflating threads, made for the first compressed run
        # Who owns each cluster claimed so far (an owner tag, below), in pages of
        # OWNER_PAGE clusters made as entries claim them: sized by the entries read, never
        # by the file's size (a server may claim a terabyte for a 3.5 KB file, a sparse
        # file may be 256 GiB apparent; one byte per cluster of that once took 2 GiB of
        # RSS). About 3 bytes per cluster of a dense image, under 200 per scattered entry.
        # The header, the L1 and the refcount table are kept as ranges.
        self._owner: dict[int, bytearray] = {}
        self._metadata_ranges: list[tuple[int, int]] = []
        self._claim_metadata()
        self._compressed_seen: set[int] = set()
        self._compressed_bytes = 0
        self.l1 = self._read_l1()
        self._l2_digests = bytearray(8 * len(self.l1))
        self._l2_checked = False
        self._map = (_HostMap(head_first, self.coffset_mask, read_run)
                     if head_first is not None else None)
        self.zeros = ZeroMap()            # the virtual disk's zero runs, from the tables
        for index, l2 in self._tables():
            self._check_l2(index, l2)
            if self._map is not None:
                self._map.add(self._table_pieces(index, l2))
            for voff, length in self._table_zeros(index, l2):
                self.zeros.add(voff, length)
        if self._map is not None:
            self._map.close()
        # Neighbouring compressed clusters share a sector (each read runs to the end of
        # its last sector), so their reads may overlap by under 512 bytes each: far less
        # than this, which holds fuzzed entries that all read the same stretch again.
        if self._compressed_bytes > COMPRESSED_READ_FACTOR * file_size + self.cluster:
            raise self._refuse(f"compressed clusters would read {self._compressed_bytes} bytes "
                               f"from a file of {file_size} (overlapping compressed data)")
        self._owner = {}                  # only needed for the checks
        self._compressed_seen = set()
        self._l2_checked = True

    # -- header -----------------------------------------------------------------------
    def _refuse(self, why: str) -> PartitionError:
        return PartitionError(f"{self.name}: qcow2 {why}: refused")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def _read_header(self) -> Header:
        raw = self._pread(0, 4096, "header")
        if len(raw) < HEADER_V2.size:
            raise self._refuse(f"header is truncated ({len(raw)} bytes)")
        (magic, version, backing_offset, backing_size, cluster_bits, size, crypt_method,
         l1_size, l1_offset, refcount_offset, refcount_clusters, nb_snapshots,
         snapshots_offset) = HEADER_V2.unpack_from(raw)
        if magic != MAGIC:
            raise self._refuse("magic is missing")
        if version not in (2, 3):
            raise self._refuse(f"version {version} is unknown (only 2 and 3 exist)")
        if not 9 <= cluster_bits <= 21:
            raise self._refuse(f"cluster_bits {cluster_bits} is outside 9..21 (byte 20)")
        cluster = 1 << cluster_bits
        if cluster > len(raw):    # extensions may fill the whole first cluster
            raw = self._pread(0, cluster, "header")
        incompatible, header_length, compression_type = 0, HEADER_V2.size, 0
        if version == 3:
            if len(raw) < 104:
                raise self._refuse("version 3 header is truncated")
            incompatible, _compatible, _autoclear, refcount_order, header_length = \
                HEADER_V3.unpack_from(raw, 72)
            if not 104 <= header_length <= min(cluster, len(raw)):
                raise self._refuse(f"header_length {header_length} is outside 104..{cluster} (byte 100)")
            if refcount_order > 6:
                raise self._refuse(f"refcount_order {refcount_order} is over 6 (byte 96)")
            if header_length > 104:
                compression_type = raw[104]
        if backing_offset:
            name = self._pread(backing_offset, min(backing_size, MAX_BACKING_NAME), "backing file name")
            raise self._refuse(f"names a backing file ({name.decode('utf-8', 'replace')!r}): a "
                               "file of this host would be read as the image's data "
                               "(CVE-2011-3147, CVE-2024-44082)")
        if incompatible & INCOMPAT_DATA_FILE:
            raise self._refuse("keeps its data in an external data file")
        if crypt_method:
            raise self._refuse(f"is encrypted ({ {1: 'AES', 2: 'LUKS'}.get(crypt_method, crypt_method)}) "
                               "and cannot be deployed without its key")
        if incompatible & INCOMPAT_CORRUPT:
            raise self._refuse("is marked corrupt (incompatible feature bit 1); run qemu-img check -r")
        unknown = incompatible & ~INCOMPAT_KNOWN
        if unknown:
            bits = ", ".join(str(b) for b in range(64) if unknown >> b & 1)
            raise self._refuse(f"uses unknown incompatible feature bit(s) {bits} (byte 72)")
        if (incompatible & INCOMPAT_COMPRESSION) and compression_type not in (0, 1):
            raise self._refuse(f"compression type {compression_type} is unknown (byte 104)")
        if not incompatible & INCOMPAT_COMPRESSION and compression_type != 0:
            raise self._refuse("compression type is set without its incompatible feature bit")
        if incompatible & INCOMPAT_EXTL2 and cluster_bits < 14:
            raise self._refuse("extended L2 entries with clusters under 16 KiB")
        self._read_extensions(raw, header_length, cluster)

        entry_bytes = 16 if incompatible & INCOMPAT_EXTL2 else 8
        l2_coverage = (cluster // entry_bytes) * cluster
        needed_l1 = -(-size // l2_coverage)
        if size >= 1 << 63 or l1_size * 8 > MAX_L1_BYTES:
            raise self._refuse(f"L1 table of {l1_size} entries is over qemu's limit of "
                               f"{MAX_L1_BYTES // 8} (byte 36)")
        if l1_size < needed_l1:
            raise self._refuse(f"L1 table of {l1_size} entries is too small for a virtual size "
                               f"of {size} bytes (byte 36)")
        self._check_table("L1 table", l1_offset, l1_size * 8, cluster, "byte 40")
        if refcount_clusters * cluster > MAX_REFCOUNT_TABLE_BYTES:
            raise self._refuse(f"refcount table of {refcount_clusters} clusters is over qemu's "
                               f"limit of {MAX_REFCOUNT_TABLE_BYTES} bytes (byte 56)")
        self._check_table("refcount table", refcount_offset, refcount_clusters * cluster,
                          cluster, "byte 48")
        self._refcount_offset, self._refcount_bytes = refcount_offset, refcount_clusters * cluster
        if nb_snapshots > MAX_SNAPSHOTS:
            raise self._refuse(f"{nb_snapshots} snapshots is over qemu's limit of {MAX_SNAPSHOTS}")
        if nb_snapshots:
            self._check_table("snapshot table", snapshots_offset, 1, cluster, "byte 64")
        return Header(version, cluster_bits, size, l1_size, l1_offset, incompatible,
                      header_length, compression_type)

    def _read_extensions(self, raw: bytes, offset: int, cluster: int) -> None:
        end = min(cluster, len(raw))
        while offset + 8 <= end:
            kind, length = struct.unpack_from(">II", raw, offset)
            if kind == EXT_END:
                return
            if offset + 8 + length > end:
                raise self._refuse(f"header extension {kind:#x} at byte {offset} runs past "
                                   "the first cluster")
            if kind == EXT_ENCRYPTION:
                raise self._refuse("carries a full-disk-encryption header")
            if kind == EXT_DATA_FILE:
                name = raw[offset + 8: offset + 8 + length].decode("utf-8", "replace")
                raise self._refuse(f"names an external data file ({name!r})")
            offset += 8 + ((length + 7) & ~7)

    def _check_table(self, what: str, offset: int, length: int, align: int, field: str) -> None:
        if offset % align:
            raise self._refuse(f"{what} offset {offset} is not aligned to {align} ({field})")
        if offset < align:
            raise self._refuse(f"{what} offset {offset} points into the header ({field})")
        if offset + length > self.file_size:
            raise self._refuse(f"{what} at byte {offset} ({length} bytes) is beyond the end "
                               f"of the file ({self.file_size} bytes; {field})")

    # -- cluster ownership ------------------------------------------------------------
    _METADATA, _DATA = 1, 2

    def _claim_metadata(self) -> None:
        """The header cluster, the L1 table and the refcount table belong to metadata."""
        h = self.header
        self._metadata_ranges = [(0, 0)]
        for offset, length in ((h.l1_table_offset, h.l1_size * 8),
                               (self._refcount_offset, self._refcount_bytes)):
            first, last = offset // self.cluster, (offset + max(length, 1) - 1) // self.cluster
            self._metadata_ranges.append((first, last))

    def _owner_of(self, index: int) -> int:
        page = self._owner.get(index // OWNER_PAGE)
        if page is not None and page[index % OWNER_PAGE]:
            return page[index % OWNER_PAGE]
        for first, last in self._metadata_ranges:
            if first <= index <= last:
                return self._METADATA
        return 0

    def _claim(self, offset: int, owner: int, what: str) -> None:
        index = offset // self.cluster
        previous = self._owner_of(index)
        if previous:
            other = "qcow2 metadata" if previous == self._METADATA else "a data cluster"
            raise self._refuse(f"{what} at byte {offset} overlaps {other} (shared or cyclic "
                               "metadata)")
        page = self._owner.get(index // OWNER_PAGE)
        if page is None:
            page = self._owner[index // OWNER_PAGE] = bytearray(OWNER_PAGE)
        page[index % OWNER_PAGE] = owner

    # -- tables ----------------------------------------------------------------------
    def _pread(self, offset: int, length: int, what: str) -> bytes:
        if offset >= self.file_size:
            return b""    # what pread gives there; a header field over 2**63 would overflow it
        try:
            data = self._read_at(offset, length)
            with self._work_lock:
                self.work += len(data)
            return data
        except OSError as exc:
            raise PartitionError(f"{self.name}: reading the {what} at byte {offset} failed: "
                                 f"{exc.strerror}") from exc

    def _read_l1(self) -> list[int]:
        h = self.header
        needed = -(-h.size // (self.l2_entries * self.cluster))
        raw = self._pread(h.l1_table_offset, needed * 8, "L1 table")
        l1 = [e & OFFSET_MASK for e in struct.unpack(f">{needed}Q", raw)]
        for index, offset in enumerate(l1):
            if offset:
                where = f"L1 entry {index} at byte {h.l1_table_offset + 8 * index}"
                if offset < self.cluster:
                    raise self._refuse(f"L2 table at byte {offset} points into the header ({where})")
                if offset % self.cluster:
                    raise self._refuse(f"L2 table offset {offset} is not cluster aligned ({where})")
                if offset + self.cluster > self.file_size:
                    raise self._refuse(f"L2 table at byte {offset} is beyond the end of the file "
                                       f"({self.file_size} bytes; {where})")
                self._claim(offset, self._METADATA, f"L2 table ({where})")
        return l1

    def _tables(self) -> Iterator[tuple[int, tuple[int, ...] | None]]:
        """(L1 index, its L2 table's entries or None when unallocated) for every L1
        entry: in L1 order, or, converting in the file's order, by the tables' place in
        the file, all read in one pass (read_spans: a few Range requests, not one per
        table wherever they lie)."""
        if self._map is None:
            for index, table in enumerate(self.l1):
                yield index, self._read_l2(index, table) if table else None
            return
        # Two passes by Range: the tables that map the head; then the other tables and
        # the head's clusters together (their place is known by then), in one pass.
        span = self.l2_entries * self.cluster
        heads = -(-min(self.head_first, self.virtual_size) // span)
        first = [(table, self.cluster) for table in self.l1[:heads] if table]
        by_place = {table: index for index, table in enumerate(self.l1) if table}
        for table, _, raw in self.fd.read_spans(first):
            yield by_place[table], self._read_l2(by_place[table], table, raw)
        # Where the head's clusters lie before all others in the file (as qemu-img writes
        # them), the stream brings them first anyway: no Range request of their own. Told
        # first by the other tables' places, proven once all tables are read.
        head_spans = self._map.head_spans(self)
        rest = {(table, self.cluster) for table in self.l1[heads:] if table}
        head_end = max((offset + length for offset, length in head_spans), default=0)
        leads = all(table >= head_end for table, _ in rest)
        self._head_data = {}
        for offset, length, raw in self.fd.read_spans([*rest, *([] if leads else head_spans)],
                                                      last=not leads):
            with self._work_lock:
                self.work += length
            if (offset, length) in rest:
                yield by_place[offset], self._read_l2(by_place[offset], offset, raw)
            else:
                self._head_data[offset, length] = raw
        self._head_leads = leads and self._map.head_leads(head_end)
        if leads and not self._head_leads:
            for offset, length, raw in self.fd.read_spans(head_spans, last=True):
                with self._work_lock:
                    self.work += length
                self._head_data[offset, length] = raw
        for index, table in enumerate(self.l1):
            if not table:
                yield index, None

    def _read_l2(self, index: int, offset: int, raw: bytes | None = None) -> tuple[int, ...]:
        if raw is None:
            raw = self._pread(offset, self.cluster, f"L2 table {index}")
        if len(raw) != self.cluster:
            raise self._refuse(f"L2 table {index} at byte {offset} is cut short by the end of "
                               "the file")
        digest = hashlib.blake2b(raw, digest_size=8).digest()
        slot = slice(8 * index, 8 * index + 8)
        if not self._l2_checked:
            self._l2_digests[slot] = digest
        elif self._l2_digests[slot] != digest:
            raise self._refuse(f"L2 table {index} at byte {offset} changed between its check "
                               "and the conversion")
        return struct.unpack(f">{self.cluster // 8}Q", raw)

    def _check_l2(self, l1_index: int, l2: tuple[int, ...] | None) -> None:
        """Every entry that the virtual size reaches must point inside the file, past the
        header, aligned; subcluster bitmaps must be consistent."""
        if l2 is None:
            return
        first = l1_index * self.l2_entries
        count = min(self.l2_entries, -(-self.virtual_size // self.cluster) - first)
        table = self.l1[l1_index]
        for i in range(count):
            entry = l2[i * self.entry_words]
            if not entry & ~ZERO_FLAG and not self.entry_words == 2:
                continue
            where = f"L2 entry {i} of the table at byte {table}"
            if entry & COMPRESSED:
                coffset = entry & self.coffset_mask
                if coffset < self.cluster or coffset >= self.file_size:
                    raise self._refuse(f"compressed cluster at byte {coffset} is outside the "
                                       f"image data ({where})")
                if coffset in self._compressed_seen:
                    raise self._refuse(f"compressed cluster at byte {coffset} is mapped twice "
                                       f"({where})")
                if self._owner_of(coffset // self.cluster) == self._METADATA:
                    raise self._refuse(f"compressed cluster at byte {coffset} overlaps qcow2 "
                                       f"metadata ({where})")
                self._compressed_seen.add(coffset)
                self._compressed_bytes += self._compressed_extent(entry)[1]
                continue
            host = entry & OFFSET_MASK
            bitmap = l2[i * 2 + 1] if self.entry_words == 2 else None
            if bitmap is not None and bitmap & (bitmap >> 32) & 0xFFFFFFFF:
                raise self._refuse(f"subcluster both allocated and zero ({where})")
            if bitmap is not None and bitmap & 0xFFFFFFFF and not host:
                raise self._refuse(f"allocated subclusters without a host cluster ({where})")
            reads_host = host and (bitmap & 0xFFFFFFFF if bitmap is not None
                                   else not entry & ZERO_FLAG)
            if not reads_host:
                continue
            if host < self.cluster:
                raise self._refuse(f"data cluster at byte {host} points into the header ({where})")
            if host % self.cluster:
                raise self._refuse(f"data cluster offset {host} is not cluster aligned ({where})")
            # Only the start must be inside: qemu writes the last cluster of a file only
            # as far as its allocated subclusters go, and reads the rest as zeros.
            if host >= self.file_size:
                raise self._refuse(f"data cluster at byte {host} is beyond the end of the file "
                                   f"({self.file_size} bytes; {where})")
            self._claim(host, self._DATA, f"data cluster ({where})")

    # -- conversion ------------------------------------------------------------------
    def _pieces(self) -> Iterator[tuple[int, int, str, int]]:
        """(virtual offset, length, kind, where) for every cluster or subcluster in
        order; kind is "zero", "data" (where = host offset) or "compressed" (where = the
        L2 entry)."""
        for index, table in enumerate(self.l1):
            yield from self._table_pieces(index, self._read_l2(index, table) if table else None)

    def _table_pieces(self, index: int, l2) -> Iterator[tuple[int, int, str, int]]:
        """The pieces one L1 entry maps (``l2``: its table's entries, None: unallocated)."""
        size, cluster = self.virtual_size, self.cluster
        span = self.l2_entries * cluster
        base = index * span
        if l2 is None:
            yield base, min(span, size - base), "zero", 0
            return
        count = min(self.l2_entries, -(-(size - base) // cluster))
        for i in range(count):
            voff = base + i * cluster
            length = min(cluster, size - voff)
            entry = l2[i * self.entry_words]
            if entry & COMPRESSED:
                yield voff, length, "compressed", entry
                continue
            host = entry & OFFSET_MASK
            if self.entry_words == 1:
                if host and not entry & ZERO_FLAG:
                    yield voff, length, "data", host
                else:
                    yield voff, length, "zero", 0
                continue
            alloc = l2[i * 2 + 1] & 0xFFFFFFFF
            if alloc == 0xFFFFFFFF or not alloc:
                yield voff, length, ("data" if alloc else "zero"), host
                continue
            sub = self.subcluster
            for s in range(32):
                soff = voff + s * sub
                if soff >= size:
                    break
                slen = min(sub, size - soff)
                if alloc >> s & 1:
                    yield soff, slen, "data", host + s * sub
                else:
                    yield soff, slen, "zero", 0

    def _table_zeros(self, index: int, l2) -> Iterator[tuple[int, int]]:
        """The runs that one L1 entry maps to zeros, as ``_table_pieces`` tells them (an
        entry with no host cluster, or the zero flag; never a compressed one): one pass
        over the entries makes a byte each, then bytes.find gives the runs; a loop over
        the pieces cost 1 µs a cluster, four times the tables' own check."""
        if l2 is None or self.entry_words != 1:
            for voff, length, kind, _ in self._table_pieces(index, l2):
                if kind == "zero":
                    yield voff, length
            return
        size, cluster = self.virtual_size, self.cluster
        base = index * self.l2_entries * cluster
        count = min(self.l2_entries, -(-(size - base) // cluster))
        zero = bytes(not entry & COMPRESSED and (not entry & OFFSET_MASK or entry & ZERO_FLAG)
                     for entry in l2[:count])
        start = zero.find(1)
        while start >= 0:
            end = zero.find(0, start)
            end = count if end < 0 else end
            voff = base + start * cluster
            yield voff, min(base + end * cluster, size) - voff
            start = zero.find(1, end)

    def extents(self) -> Iterator[tuple[int, int, bytes | None]]:
        """The virtual disk in order as (offset, length, data or None for zeros);
        neighbouring pieces of one kind are merged (contiguous host data is read with
        one pread of up to ``read_run`` bytes). Each extent is handed on once the next
        has been read and, if compressed, handed to the inflating threads: they inflate
        one run while this thread joins and hands on the one before, instead of waiting
        idle while it does (one more run in memory)."""
        run_kind, run_start, run_len, run_host = None, 0, 0, 0
        compressed: list[tuple[int, int, int]] = []     # (entry, virtual offset, length)
        pending = None
        for voff, length, kind, where in self._pieces():
            contiguous = (kind == run_kind and run_len + length <= self.read_run
                          and (kind != "data" or where == run_host + run_len))
            if kind == "zero" and run_kind == "zero":
                contiguous = True
            if not contiguous and run_kind is not None:
                started = self._flush(run_kind, run_start, run_len, run_host, compressed)
                if pending is not None:
                    yield self._joined(pending)
                pending = started
                compressed = []
                run_kind = None
            if run_kind is None:
                run_kind, run_start, run_len, run_host = kind, voff, 0, where
            if kind == "compressed":
                compressed.append((where, voff, length))
            run_len += length
        if run_kind is not None:
            started = self._flush(run_kind, run_start, run_len, run_host, compressed)
            if pending is not None:
                yield self._joined(pending)
            pending = started
        if pending is not None:
            yield self._joined(pending)

    def _flush(self, kind, start, length, host, compressed):
        """A run as (start, length, data, None for zeros, or its clusters being inflated)."""
        if kind == "zero":
            return start, length, None
        if kind == "compressed":
            return start, length, self._inflate_run(compressed, self._read_compressed(compressed))
        data = self._pread(host, length, f"data at virtual byte {start}")
        return start, length, self._whole(data, host, length)

    @staticmethod
    def _joined(extent):
        start, length, data = extent
        if data is None or isinstance(data, (bytes, bytearray)):
            return extent
        return start, length, b"".join(data)

    def _whole(self, data, host: int, length: int):
        """``data`` read at ``host``: short only at the end of the file, read as zeros."""
        if len(data) != length:
            if host + len(data) < self.file_size:
                raise PartitionError(f"{self.name}: short read of data at byte {host}")
            data = bytes(data) + bytes(length - len(data))     # past the end of the file
        return data

    def _inflate_run(self, compressed, raw):
        """Each (entry, virtual offset, length) of ``compressed`` inflated from its ``raw``
        bytes; zlib and zstd release the GIL, so a run's clusters go to all cores."""
        workers = os.cpu_count() or 2
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor   # only when needed
            self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="qcow2-inflate")
        # A job per share of the run, not per cluster: a future per 64 KiB cluster cost
        # more than a tenth of the inflating itself (measured on 256 MiB of text).
        step = -(-len(compressed) // (2 * workers))
        jobs = [self._pool.submit(self._inflate_share, compressed[at: at + step], raw[at: at + step])
                for at in range(0, len(compressed), step)]
        return (data for job in jobs for data in job.result())

    def _inflate_share(self, compressed, raw) -> list:
        out = []
        for (entry, voff, length), data in zip(compressed, raw):
            data = self._inflate(data, entry, voff)
            out.append(data if length == len(data) else data[:length])   # a cut copies
        return out

    def extents_by_host(self, before_data=None) -> Iterator[tuple[int, int, bytes | None]]:
        """The virtual disk as extents in the file's order, for a reader that goes forward
        (partition/images/ranged.py): first the pieces below ``head_first`` in virtual order
        (their bytes fetched by read_spans, or by the stream where they lie first), then,
        after ``before_data()``, the data and compressed clusters in the order they lie in
        the file, each at its virtual offset, with the zero runs (known from the tables): one forward pass whatever
        the order of the clusters (read in virtual order, an image whose clusters lie in
        descending order made one Range request per cluster: 28,666 of them, 7.5 GB for a
        15 MB file)."""
        m, head = self._map, self.head_first
        if self._head_leads:        # qemu-img's layout: the stream brings the head first
            if before_data is not None:
                before_data()
            pieces = list(self._in_file_order(i for i in m.by_host if m.voff[i] < head))
        else:
            pieces = []
            for i in m.head_pieces():
                where, n = self._extent_of(i)
                raw = self._head_data.pop((where, n))
                if m.entry[i]:
                    data = self._inflate(raw, m.entry[i], m.voff[i])[:m.length[i]]
                else:
                    data = self._whole(raw, where, n)
                pieces.append((m.voff[i], m.length[i], data))
        zeros = range(len(m.zero_voff))
        pieces += [(m.zero_voff[j], m.zero_length[j], None) for j in zeros if m.zero_voff[j] < head]
        pieces.sort(key=lambda p: p[0])
        yield from pieces
        del pieces
        if before_data is not None and not self._head_leads:
            before_data()
        # Each zero run goes out just before the first data past it: in virtual order when
        # the file is (the writer zeroes beside the data, as for a local file), and all of
        # them early when it is not.
        j = next((j for j in zeros if m.zero_voff[j] >= head), len(zeros))
        for extent in self._in_file_order(i for i in m.by_host if m.voff[i] >= head):
            while j < len(zeros) and m.zero_voff[j] < extent[0]:
                yield m.zero_voff[j], m.zero_length[j], None
                j += 1
            yield extent
        for j in range(j, len(zeros)):
            yield m.zero_voff[j], m.zero_length[j], None

    def _in_file_order(self, pieces) -> Iterator[tuple[int, int, bytes]]:
        """The map's ``pieces`` (indices in the file's order) read and inflated, each at
        its virtual offset; neighbours in the file of one kind read at once."""
        m = self._map
        group: list[int] = []
        group_bytes = 0
        for i in pieces:
            where, n = self._extent_of(i)
            if group and (bool(m.entry[i]) != bool(m.entry[group[0]])
                          or group_bytes + n > self.read_run
                          or (not m.entry[i] and where != m.host[group[-1]] + m.length[group[-1]])):
                yield from self._group_extents(group)
                group, group_bytes = [], 0
            group.append(i)
            group_bytes += n
        if group:
            yield from self._group_extents(group)

    def data_pass_start(self) -> int:
        """Where in the file the data pass of ``extents_by_host`` begins (the end of the
        file when there is nothing to read)."""
        m = self._map
        return min((m.host[i] for i in m.by_host if m.voff[i] >= self.head_first
                    or self._head_leads), default=self.file_size)

    def _extent_of(self, i: int) -> tuple[int, int]:
        """Where piece ``i`` of the map lies in the file, and how many bytes to read."""
        m = self._map
        return self._compressed_extent(m.entry[i]) if m.entry[i] else (m.host[i], m.length[i])

    def _group_extents(self, group: list[int]) -> Iterator[tuple[int, int, bytes]]:
        m = self._map
        if m.entry[group[0]]:
            compressed = [(m.entry[i], m.voff[i], m.length[i]) for i in group]
            for (_entry, voff, length), data in zip(compressed, self._inflate_run(
                    compressed, self._read_compressed(compressed))):
                yield voff, length, data
            return
        start = m.host[group[0]]
        total = sum(m.length[i] for i in group)
        data = self._whole(self._pread(start, total, f"data at byte {start}"), start, total)
        if len(group) == 1:
            yield m.voff[group[0]], total, data
            return
        at = 0
        for i in group:
            yield m.voff[i], m.length[i], data[at: at + m.length[i]]
            at += m.length[i]

    def _compressed_extent(self, entry: int) -> tuple[int, int]:
        """(host offset, bytes to read) of a compressed cluster: up to the end of the last
        512-byte sector its L2 entry counts."""
        coffset = entry & self.coffset_mask
        sectors = ((entry >> self.csize_shift) & self.csize_mask) + 1
        return coffset, sectors * 512 - (coffset & 511)

    def _read_compressed(self, compressed) -> list:
        """The bytes of each (entry, virtual offset, length) of a run, read in order on
        this thread; clusters that follow on from (or share a sector with) the one before,
        as qemu-img writes them, are read with one pread."""
        spans: list[list] = []         # [start, end, [(index, offset, size)]]
        for index, (entry, _voff, _length) in enumerate(compressed):
            coffset, csize = self._compressed_extent(entry)
            last = spans[-1] if spans else None
            if (last and last[0] <= coffset <= last[1]
                    and coffset + csize - last[0] <= self.read_run):
                last[1] = max(last[1], coffset + csize)
                last[2].append((index, coffset, csize))
            else:
                spans.append([coffset, coffset + csize, [(index, coffset, csize)]])
        out: list = [b""] * len(compressed)
        for start, end, members in spans:
            data = memoryview(self._pread(start, end - start, f"compressed clusters at byte {start}"))
            for index, coffset, csize in members:
                out[index] = data[coffset - start: coffset - start + csize]
        return out

    def _inflate(self, data, entry: int, voff: int) -> bytes:
        coffset = entry & self.coffset_mask
        if self.header.compression_type == 0:
            errors: tuple = (zlib.error,)
        else:
            import zstandard      # imported by the images that need it, not by every deploy
            errors = (zstandard.ZstdError,)
        try:
            if self.header.compression_type == 0:
                out = _inflate_deflate(data, self.cluster)
            else:
                dctx = getattr(self._local, "zstd", None)
                if dctx is None:
                    dctx = self._local.zstd = zstandard.ZstdDecompressor()
                out = dctx.stream_reader(data).read(self.cluster)
        except errors as exc:
            raise PartitionError(f"{self.name}: compressed cluster at byte {coffset} (virtual "
                                 f"byte {voff}) does not decompress: {exc}") from exc
        if len(out) != self.cluster:
            raise PartitionError(f"{self.name}: compressed cluster at byte {coffset} (virtual "
                                 f"byte {voff}) holds {len(out)} bytes, not {self.cluster}")
        return out


def _inflate_deflate(data, cluster: int):
    """Raw deflate (no zlib header) into one cluster; the data may run past its stream.
    libdeflate (the ``deflate`` package) inflates a whole buffer in one call at about
    twice zlib's speed (measured: 0.30 s against 0.67 s of CPU for 256 MiB of text in
    64 KiB clusters), releasing the GIL. Where it refuses, zlib decides, as qemu does: a
    stream that fills the cluster need not end within the sectors its entry counts."""
    if _libdeflate is not None:
        try:
            out = _libdeflate(data, cluster)
        except _libdeflate_error:
            out = None
        if out is not None and len(out) == cluster:
            return out
    return zlib.decompressobj(-15).decompress(data, cluster)


class _HostMap:
    """Where each piece of the virtual disk lies in the file, kept from the tables' check
    for a conversion in the file's order: zero runs by virtual offset, data and compressed
    clusters by host offset (``by_host``). Compact arrays, one entry per run of pieces
    that follow on in both the file and the virtual disk (a file qemu-img wrote is a few
    runs; one with its clusters shuffled is one per cluster: 32 bytes each, sized by the
    entries read). Data runs are cut at ``head`` (given first, see extents_by_host)."""

    def __init__(self, head: int, coffset_mask: int, read_run: int = READ_RUN):
        from array import array
        self.head, self.coffset_mask, self.read_run = head, coffset_mask, read_run
        self.zero_voff, self.zero_length = array("Q"), array("Q")
        self.host, self.voff, self.length, self.entry = array("Q"), array("Q"), array("Q"), array("Q")
        self.by_host = array("Q")

    def add(self, pieces) -> None:
        for voff, length, kind, where in pieces:
            if kind == "zero":
                if self.zero_voff and self.zero_voff[-1] + self.zero_length[-1] == voff:
                    self.zero_length[-1] += length
                else:
                    self.zero_voff.append(voff)
                    self.zero_length.append(length)
                continue
            if kind == "compressed":
                self._append(where & self.coffset_mask, voff, length, where)
                continue
            if voff < self.head < voff + length:      # cut at the head's end
                cut = self.head - voff
                self.add([(voff, cut, kind, where), (self.head, length - cut, kind, where + cut)])
                continue
            if (self.host and not self.entry[-1] and voff != self.head
                    and self.host[-1] + self.length[-1] == where
                    and self.voff[-1] + self.length[-1] == voff
                    and self.length[-1] + length <= self.read_run):
                self.length[-1] += length
            else:
                self._append(where, voff, length, 0)

    def head_pieces(self) -> list[int]:
        """The data and compressed pieces below ``head`` (they are mapped by the first
        tables read, and are given first)."""
        return [i for i in range(len(self.voff)) if self.voff[i] < self.head]

    def head_spans(self, qcow) -> list[tuple[int, int]]:
        return [qcow._extent_of(i) for i in self.head_pieces()]

    def head_leads(self, head_end: int) -> bool:
        """Whether every cluster past the head lies at or after ``head_end`` in the file."""
        return all(self.host[i] >= head_end for i in range(len(self.host))
                   if self.voff[i] >= self.head)

    def _append(self, host: int, voff: int, length: int, entry: int) -> None:
        self.host.append(host)
        self.voff.append(voff)
        self.length.append(length)
        self.entry.append(entry)

    def close(self) -> None:
        """Order the data by its place in the file (a compressed cluster's is its offset),
        the zero runs by virtual offset."""
        from array import array
        self.by_host = array("Q", sorted(range(len(self.host)), key=self.host.__getitem__))
        order = sorted(range(len(self.zero_voff)), key=self.zero_voff.__getitem__)
        voffs, lengths = array("Q"), array("Q")
        for j in order:      # runs that meet across two tables become one
            if voffs and voffs[-1] + lengths[-1] == self.zero_voff[j]:
                lengths[-1] += self.zero_length[j]
            else:
                voffs.append(self.zero_voff[j])
                lengths.append(self.zero_length[j])
        self.zero_voff, self.zero_length = voffs, lengths
