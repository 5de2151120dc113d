"""Hypothesis strategies that turn valid seeds into hostile inputs.

Two kinds: blind byte mutations (flip, overwrite, insert, delete, truncate, biased to the
first KiBs and to each format's hot region, where the metadata lives), and field
mutations that know a format's header layout and set one field to an edge value - with
the CRCs fixed afterwards where the format has them, so the parser gets past its
checksum and meets the field.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from typing import Callable, Sequence

from hypothesis import strategies as st

EDGE_VALUES = (0, 1, 2, 7, 8, 9, 0x7F, 0x80, 0xFF, 0x100, 0x1FF, 0x200, 0xFFFF, 0x10000,
               0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 32, 1 << 40, (1 << 63) - 1, 1 << 63,
               (1 << 64) - 1)
Field = tuple[int, int, str]          # byte offset, width in bytes, "<" or ">"


class Blob(bytes):
    """An input as hypothesis prints it: a megabyte of repr helps no one (the failing
    input itself is saved to a file, see test_fuzz_parsers.check)."""

    def __repr__(self) -> str:
        return f"<{len(self)} bytes, sha256 {hashlib.sha256(self).hexdigest()[:16]}>"


def _position(draw, size: int, hot: Sequence[tuple[int, int]]) -> int:
    if size == 0:
        return 0
    regions = [(a, min(b, size)) for a, b in hot if a < size] + [(0, min(size, 4096)), (0, size)]
    start, end = draw(st.sampled_from(regions))
    return draw(st.integers(start, max(start, end - 1)))


@st.composite
def _byte_mutation(draw, data: bytearray, hot) -> None:
    kind = draw(st.sampled_from(("flip", "set", "word", "delete", "insert", "copy")))
    at = _position(draw, len(data), hot)
    if kind == "flip" and data:
        data[at] ^= 1 << draw(st.integers(0, 7))
    elif kind == "set" and data:
        data[at] = draw(st.sampled_from((0, 0xFF, 0x7F, 0x80, 1))) if draw(st.booleans()) \
            else draw(st.integers(0, 255))
    elif kind == "word":
        width = draw(st.sampled_from((2, 4, 8)))
        value = draw(st.sampled_from(EDGE_VALUES) | st.integers(0, (1 << 64) - 1))
        data[at:at + width] = (value % (1 << 8 * width)).to_bytes(width, draw(st.sampled_from(("little", "big"))))
    elif kind == "delete":
        del data[at:at + draw(st.integers(1, 512))]
    elif kind == "insert":
        data[at:at] = draw(st.binary(min_size=1, max_size=64))
    elif kind == "copy" and data:      # a block of the input elsewhere (records repeat)
        src = _position(draw, len(data), hot)
        n = draw(st.integers(1, 256))
        data[at:at + n] = data[src:src + n]


def mutated(seeds: Sequence[bytes], hot: Sequence[tuple[int, int]] = (),
            fix: Callable[[bytearray], None] | None = None) -> st.SearchStrategy[bytes]:
    """A seed with 1 to 8 byte mutations, sometimes truncated; ``fix`` (e.g. GPT CRCs) is
    applied to half of the results."""
    @st.composite
    def build(draw):
        data = bytearray(draw(st.sampled_from(seeds)))
        for _ in range(draw(st.integers(1, 8))):
            draw(_byte_mutation(data, hot))
        if draw(st.integers(0, 15)) == 0:
            data = data[:draw(st.integers(0, len(data)))]
        if fix is not None and draw(st.booleans()):
            fix(data)
        return Blob(data)
    return build()


def field_mutated(seeds: Sequence[bytes], fields_of: Callable[[bytes], list[Field]],
                  fix: Callable[[bytearray], None] | None = None) -> st.SearchStrategy[bytes]:
    """A seed with 1 to 4 of its format's fields set to edge or random values."""
    @st.composite
    def build(draw):
        data = bytearray(draw(st.sampled_from(seeds)))
        fields = fields_of(bytes(data))
        for _ in range(draw(st.integers(1, 4))):
            offset, width, order = draw(st.sampled_from(fields))
            top = (1 << 8 * width) - 1
            value = draw(st.sampled_from(EDGE_VALUES) | st.integers(0, top)
                         | st.integers(0, 64)) & top
            if offset + width <= len(data):
                data[offset:offset + width] = value.to_bytes(width, "little" if order == "<" else "big")
        if fix is not None:
            fix(data)
        return Blob(data)
    return build()


# -- format layouts -------------------------------------------------------------------

def qcow2_fields(seed: bytes) -> list[Field]:
    """Header fields (QEMU docs/interop/qcow2.txt), and the first L1 and L2 entries."""
    header = [(0, 4, ">"), (4, 4, ">"), (8, 8, ">"), (16, 4, ">"), (20, 4, ">"), (24, 8, ">"),
              (32, 4, ">"), (36, 4, ">"), (40, 8, ">"), (48, 8, ">"), (56, 4, ">"), (60, 4, ">"),
              (64, 8, ">"), (72, 8, ">"), (80, 8, ">"), (88, 8, ">"), (96, 4, ">"), (100, 4, ">"),
              (104, 1, ">"), (112, 4, ">"), (116, 4, ">")]
    l1 = struct.unpack_from(">Q", seed, 40)[0]
    entries = [(l1 + 8 * i, 8, ">") for i in range(4)]
    first_l2 = struct.unpack_from(">Q", seed, l1)[0] & 0x00FFFFFFFFFFFE00 if l1 + 8 <= len(seed) else 0
    if first_l2:
        entries += [(first_l2 + 8 * i, 8, ">") for i in range(16)]
    return header + entries


def gpt_fields(seed: bytes) -> list[Field]:
    fields = []
    for ss in (512, 4096):
        if seed[ss:ss + 8] == b"EFI PART":
            h = ss
            fields += [(h + o, w, "<") for o, w in ((8, 4), (12, 4), (24, 8), (32, 8), (40, 8),
                                                    (48, 8), (72, 8), (80, 4), (84, 4))]
            array = struct.unpack_from("<Q", seed, h + 72)[0] * ss
            for i in range(4):
                fields += [(array + 128 * i + o, w, "<") for o, w in ((0, 8), (32, 8), (40, 8), (48, 8))]
            fields += [(446 + 16 * i + o, w, "<") for i in range(4) for o, w in ((4, 1), (8, 4), (12, 4))]
    return fields or [(0, 8, "<")]


def fix_gpt_crcs(data: bytearray) -> None:
    """Recompute the entry-array and header CRCs of both GPT headers where they are."""
    for ss in (512, 4096):
        for lba in (1, len(data) // ss - 1):
            h = lba * ss
            if lba <= 0 or data[h:h + 8] != b"EFI PART" or h + ss > len(data):
                continue
            size, = struct.unpack_from("<I", data, h + 12)
            array_lba, count, entry = struct.unpack_from("<QII", data, h + 72)
            start = array_lba * ss
            if count * entry <= 1 << 22 and start + count * entry <= len(data):
                struct.pack_into("<I", data, h + 88, zlib.crc32(data[start:start + count * entry]))
            if 92 <= size <= ss:
                struct.pack_into("<I", data, h + 16, 0)
                struct.pack_into("<I", data, h + 16, zlib.crc32(data[h:h + size]))


def mbr_fields(seed: bytes) -> list[Field]:
    fields = [(446 + 16 * i + o, w, "<") for i in range(4) for o, w in ((0, 1), (4, 1), (8, 4), (12, 4))]
    for i in range(4):     # the EBRs of an extended partition
        entry = 446 + 16 * i
        if seed[entry + 4] in (0x05, 0x0F, 0x85):
            ebr = struct.unpack_from("<I", seed, entry + 8)[0] * 512
            fields += [(ebr + 446 + 16 * j + o, w, "<") for j in range(2) for o, w in ((4, 1), (8, 4), (12, 4))]
    return fields


def fat_fields(seed: bytes) -> list[Field]:
    """The BIOS parameter block, and the first root directory entries' cluster and size."""
    bpb = [(11, 2, "<"), (13, 1, "<"), (14, 2, "<"), (16, 1, "<"), (17, 2, "<"), (19, 2, "<"),
           (22, 2, "<"), (32, 4, "<"), (36, 4, "<"), (44, 4, "<"), (48, 2, "<")]
    bps, spc, reserved, fats, root_entries, _, _, fat16 = struct.unpack_from("<HBHBHHBH", seed, 11)
    root = (reserved + fats * fat16) * bps
    entries = [(root + 32 * i + o, w, "<") for i in range(8) for o, w in ((11, 1), (20, 2), (26, 2), (28, 4))]
    fat = reserved * bps
    chains = [(fat + 2 * i, 2, "<") for i in range(2, 16)]
    return bpb + entries + chains


def iso_fields(seed: bytes) -> list[Field]:
    """Primary and supplementary volume descriptors: sizes, path tables, root record."""
    fields = []
    for index in range(4):
        d = 32768 + 2048 * index
        if seed[d + 1:d + 6] != b"CD001":
            break
        fields += [(d, 1, "<"), (d + 80, 4, "<"), (d + 84, 4, ">"), (d + 128, 2, "<"),
                   (d + 130, 2, ">"), (d + 132, 4, "<"), (d + 140, 4, "<"), (d + 148, 4, ">"),
                   (d + 156, 1, "<"), (d + 158, 4, "<"), (d + 162, 4, ">"), (d + 166, 4, "<"),
                   (d + 170, 4, ">"), (d + 181, 1, "<"), (d + 188, 1, "<")]
        root, = struct.unpack_from("<I", seed, d + 158)
        r = root * 2048
        for _ in range(6):      # the records of the root directory
            if r >= len(seed) or seed[r] == 0:
                break
            fields += [(r, 1, "<"), (r + 2, 4, "<"), (r + 10, 4, "<"), (r + 25, 1, "<"), (r + 32, 1, "<")]
            r += seed[r]
    return fields or [(32768, 1, "<")]


# -- JSON -----------------------------------------------------------------------------

KEYS = ("meta_data", "network_data", "user_data", "vendor_data", "uuid", "name", "hostname",
        "public_keys", "keys", "type", "data", "files", "path", "content_path", "meta",
        "launch_index", "random_seed", "devices", "links", "networks", "services", "id",
        "link", "ethernet_mac_address", "mtu", "bond_links", "bond_mode", "vlan_link",
        "vlan_id", "ip_address", "netmask", "routes", "gateway", "network", "address",
        "dns_nameservers", "dedicated_cpus", "network_config", "cloud-init", "availability_zone")

json_scalars = (st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70)
                | st.floats(allow_nan=False) | st.text(max_size=20)
                | st.sampled_from(("ipv4", "ipv6", "phy", "bond", "vlan", "dns", "ssh", "x",
                                   "10.0.0.1", "fe80::1", "255.255.255.0", "64", "a/b", "/etc/x",
                                   "../x", "00:11:22:33:44:55", "ipv4_dhcp", "ipv6_slaac", "")))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=5),
    max_leaves=25)


@st.composite
def json_edited(draw, seeds: Sequence[bytes]) -> bytes:
    """A seed document with values at random places replaced by random JSON (types the
    checks do not expect), encoded back; sometimes also byte-mutated text."""
    import json
    doc = json.loads(draw(st.sampled_from([s for s in seeds if _parses(s)])).decode("utf-8-sig"))
    for _ in range(draw(st.integers(1, 4))):
        doc = _replace_somewhere(draw, doc)
    return Blob(json.dumps(doc).encode())


def _replace_somewhere(draw, node):
    if isinstance(node, dict) and node and draw(st.integers(0, 3)):
        key = draw(st.sampled_from(sorted(node)))
        node[key] = _replace_somewhere(draw, node[key])
        return node
    if isinstance(node, list) and node and draw(st.integers(0, 3)):
        i = draw(st.integers(0, len(node) - 1))
        node[i] = _replace_somewhere(draw, node[i])
        return node
    if isinstance(node, dict) and draw(st.booleans()):
        node[draw(st.sampled_from(KEYS))] = draw(json_values)
        return node
    return draw(json_values)


def _parses(data: bytes) -> bool:
    import json
    try:
        json.loads(data.decode("utf-8-sig"))
    except ValueError:
        return False
    return True
