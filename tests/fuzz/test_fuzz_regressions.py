"""Every crash the fuzzers found, as the smallest input that showed it, built by the
tools we did not write where the input is a disk (sgdisk). Each must now end in a
result or our own one-line error."""

from __future__ import annotations

import io
import json
import struct
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fuzz"))
from mutations import fix_gpt_crcs  # noqa: E402
from targets import run_case  # noqa: E402

from conftest import need_tool, run  # noqa: E402
from configdrive.documents.checks import pointer  # noqa: E402
from configdrive.model.content import Content  # noqa: E402
from configdrive.errors import ConfigDriveError  # noqa: E402
from partition.errors import PartitionError  # noqa: E402
from partition.images.qcow2 import Qcow2  # noqa: E402
from partition.tables import read_table  # noqa: E402


def sgdisk_disk(tmp_path: Path) -> bytearray:
    need_tool("sgdisk")
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(256 << 10))
    run("sgdisk", "--set-alignment=1", "-n", "1:40:+64", "-c", "1:root", disk)
    return bytearray(disk.read_bytes())


def test_qcow2_backing_offset_over_2_63_is_refused(tmp_path):
    """qcow2.py: a backing_file_offset of 2**63 or more overflowed os.pread."""
    need_tool("qemu-img")
    img = tmp_path / "a.qcow2"
    run("qemu-img", "create", "-f", "qcow2", img, "1M")
    data = bytearray(img.read_bytes())
    struct.pack_into(">QI", data, 8, 1 << 63, 16)
    img.write_bytes(data)
    assert "Could not open" in run("qemu-img", "info", img, check=False).stderr.decode()
    with open(img, "rb") as fp:
        with pytest.raises(PartitionError, match="backing file"):
            Qcow2(fp.fileno(), len(data), str(img))


def test_gpt_entry_array_lba_past_any_offset_is_no_table(tmp_path):
    """gpt.py: an entry-array LBA near 2**64 (valid CRCs) overflowed the seek."""
    data = sgdisk_disk(tmp_path)
    struct.pack_into("<Q", data, 512 + 72, (1 << 64) - 1)
    fix_gpt_crcs(data)
    assert run_case("gpt", bytes(data)) == "ok"
    assert run_case("tables", bytes(data)) in ("ok", "refused")


def test_gpt_partition_outside_the_disk_is_refused(tmp_path):
    """tables.py: a GPT entry starting at LBA 2**62 made inspect seek there (ValueError
    from the partition window, OverflowError from the probe). sgdisk -v calls such an
    entry a problem; we refuse the table, naming the partition."""
    data = sgdisk_disk(tmp_path)
    array = struct.unpack_from("<Q", data, 512 + 72)[0] * 512
    struct.pack_into("<Q", data, array + 32, 1 << 62)
    fix_gpt_crcs(data)
    disk = tmp_path / "bad.img"
    disk.write_bytes(data)
    assert "No problems found" not in run("sgdisk", "-v", disk, check=False).stdout.decode()
    with pytest.raises(PartitionError, match=r"GPT partition 1 \(LBA 4611686018427387904 .*outside"):
        read_table(io.BytesIO(data), len(data), None, source="bad.img")
    assert run_case("drive", bytes(data)) == "refused"


def test_json_key_with_a_newline_stays_one_line():
    """content.py/checks.py: a key holding a newline made a two-line error message."""
    with pytest.raises(ConfigDriveError) as caught:
        Content.from_ironic({"meta_data": {}, "a\nb": 1}, "x.json")
    assert "\n" not in str(caught.value) and "/a\\u000ab" in str(caught.value)
    assert pointer("links", 0, "x\u2028y") == "/links/0/x\\u2028y"


def test_network_type_that_is_an_object_is_a_schema_error_not_a_crash():
    """checks.py: networks[].type holding an object was looked up in a dict (unhashable)."""
    doc = {"links": [], "services": [], "networks": [{"id": "n", "link": "l", "type": {"a": 1}}]}
    assert run_case("json", json.dumps(doc).encode()) in ("ok", "refused")
    assert run_case("json", json.dumps({"network_data": doc}).encode()) in ("ok", "refused")


def test_deeply_nested_json_is_refused_not_a_recursion_error():
    assert run_case("json", b"[" * 100000) == "refused"
    assert run_case("json", b'{"meta_data": ' + b"[" * 5000 + b"]" * 5000 + b"}") in ("ok", "refused")


def test_non_ascii_random_seed_is_reported_not_a_crash():
    """checks.py: base64.b64decode raises ValueError (not binascii.Error) for non-ASCII."""
    from configdrive.documents.validate import validate_document
    problems = validate_document("meta_data", {"uuid": "83679162-1378-4288-a2d4-70e13ec132aa",
                                               "random_seed": "é"}, "m.json")
    assert any(p.pointer == "/random_seed" and "not base64" in p.message for p in problems)


def test_fat32_root_cluster_below_2_probes_without_a_negative_seek(tmp_path):
    """probe.py: a FAT32 root cluster of 0 with one reserved sector and FATs of size 0
    put the root directory before byte 0 (seek raised EINVAL)."""
    need_tool("mkfs.vfat")
    img = tmp_path / "fat32.img"
    run("mkfs.vfat", "-F", "32", "-n", "config-2", "-C", img, str(40 * 1024))
    data = bytearray(img.read_bytes())
    struct.pack_into("<H", data, 14, 1)     # reserved sectors
    struct.pack_into("<I", data, 36, 0)     # sectors per FAT (FAT32 field)
    struct.pack_into("<I", data, 44, 0)     # root directory's first cluster
    from partition.tables.probe import probe_filesystem
    fs = probe_filesystem(io.BytesIO(bytes(data)))
    assert fs is not None and fs.type == "vfat" and fs.label == "config-2"   # the boot sector's label
    assert run_case("probe", bytes(data)) == "ok"
    assert run_case("drive", bytes(data)) in ("ok", "refused")
