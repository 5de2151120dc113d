"""Reading any ISO 9660 image back as a drive's file listing (Rock Ridge names, else
Joliet, else the primary names mapped back to nova's), bounded by a Budget."""

from __future__ import annotations

import io
import re
import struct
from typing import BinaryIO

from ..files.drivefiles import Budget, FileRef, Listing, check_name, check_unique, read_all
from ..errors import ConfigDriveError, one_line

BLOCK = 2048

# Volume descriptors start at block 16; in the primary one, the volume space size
# (blocks, little-endian) and the logical block size.
_DESCRIPTORS_OFFSET = 16 * BLOCK
_MAX_DESCRIPTORS = 32
_PRIMARY, _TERMINATOR = 1, 255
_PVD_SPACE_SIZE = struct.Struct("<I")
_PVD_BLOCK_SIZE = struct.Struct("<H")

# nova's dated directories, as the primary tree spells them (genisoimage turns "-" to "_").
_PRIMARY_DATED_DIR = re.compile(r"^(openstack|ec2)/(\d{4})_(\d{2})_(\d{2})(?=/|$)")
# The EC2 file names that genisoimage's "-" to "_" makes collide with nothing else.
_EC2_PRIMARY_FILES = {"meta_data.json": "meta-data.json", "user_data": "user-data"}

# Our own reader rather than pycdlib's: pycdlib builds an object for every record of every
# directory each time a record points at it, so cross-linked directories (records that
# point at their own directory, at a parent, or many at one large extent) made an 8.8 MB
# image take 1.6 GB. Here each directory extent is read once, every read is charged to
# a Budget (configdrive.files.drivefiles), and file data is only listed until it is needed.

_JOLIET_ESCAPES = (b"%/@", b"%/C", b"%/E")     # UCS-2 levels 1-3
_SUPPLEMENTARY = 2
_FLAG_DIRECTORY, _FLAG_ASSOCIATED, _FLAG_MULTI_EXTENT = 0x02, 0x04, 0x80
_MAX_CE_HOPS = 16          # continuation areas chained from one record
_VERSION = re.compile(r";\d*$")


def read(fp: BinaryIO, source: str = "ISO image") -> dict[str, bytes]:
    """Every file of the ISO 9660 image at byte 0 of ``fp``: {relative path: bytes}.

    Names come from Rock Ridge when present, else Joliet, else the primary tree with the
    ``;1`` version and a final ``.`` removed. A primary-only image cannot say where
    genisoimage turned ``-`` into ``_``; the dated version directories
    (``openstack/2012_08_10``) and ec2's ``meta-data.json``/``user-data`` are mapped
    back, any other such name is returned as the image spells it.
    """
    return read_all(fp, scan(fp, source))


def scan(fp: BinaryIO, source: str = "ISO image", budget: Budget | None = None) -> Listing:
    """Where every file of the image lies, without reading file data (see :func:`read`)."""
    size = fp.seek(0, io.SEEK_END)
    budget = budget or Budget(source)
    listing = Listing(source, size, budget)
    primary, joliet = _volume_descriptors(fp, source, size, budget)
    walker = _Walker(fp, listing, size)
    root = _root_record(primary, source)
    rock_ridge = walker.rock_ridge_skip(root)
    if rock_ridge is not None:
        walker.walk(root, names="rock_ridge", su_skip=rock_ridge)
    elif joliet is not None:
        walker.walk(_root_record(joliet, source), names="joliet", su_skip=0)
    else:
        walker.walk(root, names="primary", su_skip=0)
    return listing


def _volume_descriptors(fp: BinaryIO, source: str, size: int, budget: Budget):
    """The primary and the Joliet volume descriptors. Refuses an image shorter than the
    primary one says: the missing part of a file would be silently short data."""
    primary = joliet = None
    for index in range(_MAX_DESCRIPTORS):   # boot records may come first
        fp.seek(_DESCRIPTORS_OFFSET + index * BLOCK)
        budget.charge(BLOCK, "a volume descriptor")
        desc = fp.read(BLOCK)
        if len(desc) < BLOCK or desc[1:6] != b"CD001" or desc[0] == _TERMINATOR:
            break
        if desc[0] == _PRIMARY and primary is None:
            primary = desc
        elif desc[0] == _SUPPLEMENTARY and desc[88:91] in _JOLIET_ESCAPES and joliet is None:
            joliet = desc
    if primary is None:
        raise ConfigDriveError(
            f"{source}: not an ISO 9660 image (no primary volume descriptor from byte "
            f"{_DESCRIPTORS_OFFSET}; the file has {size} bytes)")
    block_size = _PVD_BLOCK_SIZE.unpack_from(primary, 128)[0]
    if block_size != BLOCK:
        raise ConfigDriveError(f"{source}: logical block size {block_size} at byte "
                               f"{_DESCRIPTORS_OFFSET + 128}: only {BLOCK} is in use")
    declared = _PVD_SPACE_SIZE.unpack_from(primary, 80)[0] * BLOCK
    if size < declared:
        raise ConfigDriveError(
            f"{source}: truncated ISO 9660 image: {size} bytes, its volume descriptor "
            f"declares {declared}")
    return primary, joliet


def _root_record(desc: bytes, source: str) -> bytes:
    record = desc[156:190]
    if record[0] < 34 or not record[25] & _FLAG_DIRECTORY:
        raise ConfigDriveError(f"{source}: the root directory record of a volume descriptor "
                               f"is damaged")
    return record


class _Walker:
    """One walk over a directory tree, each directory extent read once."""

    def __init__(self, fp: BinaryIO, listing: Listing, size: int):
        self.fp, self.listing, self.size = fp, listing, size
        self.source = listing.source
        self.blocks: dict[int, bytes] = {}     # continuation areas, read once per block

    def _read(self, start: int, length: int, what: str) -> bytes:
        if start + length > self.size:
            raise ConfigDriveError(f"{self.source}: {what} at byte {start} ({length} bytes) lies "
                                   f"past the end of the {self.size}-byte image")
        self.listing.budget.charge(length, what)
        self.fp.seek(start)
        data = self.fp.read(length)
        if len(data) < length:
            raise ConfigDriveError(f"{self.source}: {what}: the image ends at byte {start + len(data)}")
        return data

    def rock_ridge_skip(self, root: bytes) -> int | None:
        """SUSP's SP entry in the root's "." record: Rock Ridge is in use, and its bytes
        to skip in every System Use area. None without it."""
        extent, length = _extent(root)
        if length < 34:
            return None
        first = self._read(extent * BLOCK, min(length, BLOCK), "the root directory")
        size = first[0]
        if size < 34 or size > len(first):
            return None
        su = _system_use(first[:size])
        if len(su) >= 7 and su[:2] == b"SP" and su[4:6] == b"\xbe\xef":
            return su[6]
        return None

    def walk(self, root: bytes, *, names: str, su_skip: int) -> None:
        stack = [(root, "")]
        while stack:
            record, path = stack.pop()
            extent, length = _extent(record)
            where = f"directory {one_line(path or '/')}"
            self.listing.claim(extent * BLOCK, length, where)
            data = self._read(extent * BLOCK, length, where)
            children = []
            for name, child, offset in self._entries(data, extent, path, names, su_skip):
                rel = f"{path}/{name}" if path else name
                self.listing.budget.count_entry(one_line(rel))
                if child is not None:
                    children.append((child, rel))
            stack.extend(reversed(children))

    def _entries(self, data: bytes, extent: int, path: str, names: str, su_skip: int):
        """(name, directory record or None, byte offset) for each entry of one directory;
        files go straight into the listing."""
        seen: dict[str, str] = {}
        pending: list[tuple[int, int]] = []    # a multi-extent file's earlier parts
        pos = 0
        while pos < len(data):
            size = data[pos]
            if size == 0:     # records never cross a block: the rest of this block is empty
                pos = (pos // BLOCK + 1) * BLOCK
                continue
            at = extent * BLOCK + pos
            if size < 34 or pos + size > len(data) or pos // BLOCK != (pos + size - 1) // BLOCK:
                raise ConfigDriveError(f"{self.source}: damaged directory record at byte {at}")
            record = data[pos:pos + size]
            pos += size
            name_len = record[32]
            raw_name = record[33:33 + name_len]
            if 33 + name_len > size:
                raise ConfigDriveError(f"{self.source}: directory record at byte {at}: its name "
                                       f"runs past the record")
            if raw_name in (b"\0", b"\1"):
                continue
            flags = record[25]
            if flags & _FLAG_ASSOCIATED:
                continue
            rr = self._rock_ridge(record, su_skip, at) if names == "rock_ridge" else {}
            if rr.get("relocated"):
                continue    # shown where its CL entry points, not in rr_moved
            name = rr.get("name") if names == "rock_ridge" else None
            if name is None:
                name = _decode_name(raw_name, names == "joliet", self.source, at)
            check_name(self.source, path, name)
            key = name if names != "primary" else name.upper()
            is_dir = flags & _FLAG_DIRECTORY or "child" in rr
            extent_no, length = _extent(record)
            if rr.get("child") is not None:
                record = self._relocated(rr["child"], at)
                extent_no, length = _extent(record)
            if rr.get("symlink"):
                continue     # a symlink is not a file of the drive
            if flags & _FLAG_MULTI_EXTENT and not is_dir:
                pending.append((extent_no * BLOCK, length))
                continue
            check_unique(self.source, path, seen, {key}, name)
            rel = f"{path}/{name}" if path else name
            if is_dir:
                yield name, record, at
                continue
            runs = tuple(pending) + ((extent_no * BLOCK, length),)
            pending = []
            self.listing.add(rel if names != "primary" else _from_primary(rel),
                             FileRef(sum(run for _, run in runs), runs))
            yield name, None, at
        if pending:
            raise ConfigDriveError(f"{self.source}: directory {one_line(path or '/')} ends inside a "
                                   f"multi-extent file")

    def _relocated(self, block: int, at: int) -> bytes:
        """The "." record of a directory that Rock Ridge moved (CL entry at ``at``)."""
        dot = self._read(block * BLOCK, 34, f"the relocated directory of the record at byte {at}")
        if dot[0] < 34 or not dot[25] & _FLAG_DIRECTORY:
            raise ConfigDriveError(f"{self.source}: record at byte {at}: its CL entry points at "
                                   f"block {block}, which holds no directory")
        return dot

    def _rock_ridge(self, record: bytes, su_skip: int, at: int) -> dict:
        """The Rock Ridge entries of one record that matter to the tree: NM (the name),
        CL/RE (relocated directories), SL (symlinks)."""
        found: dict = {}
        name_parts: list[bytes] = []
        area = _system_use(record)[su_skip:]
        for _hop in range(_MAX_CE_HOPS):
            next_area = None
            pos = 0
            while pos + 4 <= len(area):
                sig, size = area[pos:pos + 2], area[pos + 2]
                if size < 4 or pos + size > len(area):
                    break
                body = area[pos + 4:pos + size]
                if sig == b"NM" and body:
                    if body[0] & 0x06:     # CURRENT or PARENT: "." and ".." as a name
                        name_parts.append(b"." if body[0] & 0x02 else b"..")
                    else:
                        name_parts.append(body[1:])
                elif sig == b"CE" and len(body) >= 24:
                    next_area = struct.unpack_from("<I4xI4xI", body, 0)
                elif sig == b"CL" and len(body) >= 4:
                    found["child"] = struct.unpack_from("<I", body, 0)[0]
                elif sig == b"RE":
                    found["relocated"] = True
                elif sig == b"SL":
                    found["symlink"] = True
                elif sig == b"ST":
                    break
                pos += size
            if next_area is None:
                break
            block, offset, length = next_area
            if offset + length > BLOCK:
                raise ConfigDriveError(f"{self.source}: record at byte {at}: its continuation area "
                                       f"crosses the end of block {block}")
            if block not in self.blocks:
                self.blocks[block] = self._read(block * BLOCK, BLOCK, f"the continuation area of "
                                                f"the record at byte {at}")
            area = self.blocks[block][offset:offset + length]
        else:
            raise ConfigDriveError(f"{self.source}: record at byte {at}: more than {_MAX_CE_HOPS} "
                                   f"chained continuation areas")
        if name_parts:
            try:
                found["name"] = b"".join(name_parts).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ConfigDriveError(f"{self.source}: record at byte {at}: its Rock Ridge name "
                                       f"{one_line(repr(b''.join(name_parts)))} is not UTF-8") from exc
        return found


def _extent(record: bytes) -> tuple[int, int]:
    return struct.unpack_from("<I", record, 2)[0], struct.unpack_from("<I", record, 10)[0]


def _system_use(record: bytes) -> bytes:
    name_len = record[32]
    start = 33 + name_len + (1 - name_len % 2)    # a pad byte keeps it at an even offset
    return record[start:record[0]]


def _decode_name(raw: bytes, joliet: bool, source: str, at: int) -> str:
    try:
        name = raw.decode("utf-16-be") if joliet else raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise ConfigDriveError(f"{source}: record at byte {at}: its name {one_line(repr(raw))} is "
                               f"not {'UCS-2' if joliet else 'ASCII'}") from exc
    return _VERSION.sub("", name)     # the file version, ";1"


def _from_primary(path: str) -> str:
    """A primary-tree path as the producer most likely named it (see :func:`read`)."""
    parts = [name.split(";", 1)[0] for name in path.split("/")]
    parts[-1] = parts[-1][:-1] if parts[-1].endswith(".") else parts[-1]
    rel = _PRIMARY_DATED_DIR.sub(r"\1/\2-\3-\4", "/".join(parts))
    if rel.startswith("ec2/") and rel.count("/") == 2:
        head, _, name = rel.rpartition("/")
        rel = f"{head}/{_EC2_PRIMARY_FILES.get(name, name)}"
    return rel

