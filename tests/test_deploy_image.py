"""``configdrive deploy --device DEV --image IMAGE`` as users run it, and the Python API."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from conftest import configdrive, loop_device, need_tool, run
from configdrive.deploy import deploy

MiB = 1 << 20


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> tuple[Path, Path]:
    """(raw disk with a GPT, the same as zstd-compressed qcow2 made by qemu-img + zstd)."""
    need_tool("sgdisk", "qemu-img", "zstd")
    d = tmp_path_factory.mktemp("deploy")
    raw = d / "disk.raw"
    raw.write_bytes(bytes(12 * MiB))
    run("sgdisk", "-n", "1:2048:+5M", "-c", "1:root", raw)
    with open(raw, "r+b") as fp:
        fp.seek(MiB)
        fp.write(random.Random(5).randbytes(2 * MiB))
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-c", raw, d / "disk.qcow2")
    run("zstd", "-q", d / "disk.qcow2", "-o", d / "disk.qcow2.zst")
    return raw, d / "disk.qcow2.zst"


def test_cli_deploy_to_loop_device_with_json(image, tmp_path):
    raw, packed = image
    sha = run("sha256sum", packed).stdout.split()[0].decode()
    backing = tmp_path / "target"
    backing.write_bytes(b"\x55" * 32 * MiB)
    with loop_device(backing) as dev:
        proc = configdrive("deploy", "--device", dev, "--image", packed,
                           "--checksum", f"sha256:{sha}", "--json")
        summary = json.loads(proc.stdout)
        assert summary["image"]["format"] == "qcow2"
        assert summary["image"]["compression"] == "zstd"
        assert summary["image"]["virtual_size"] == 12 * MiB
        assert summary["image"]["checksum"] == {"algorithm": "sha256", "value": sha, "verified": True}
        assert summary["config_drive"] is None
        with open(dev, "rb") as fp:
            # Between the tables the disk is the image; the tables themselves were fitted
            # to the larger disk (backup GPT moved to its end), which sgdisk must accept.
            fp.seek(MiB)
            assert fp.read(10 * MiB) == raw.read_bytes()[MiB:11 * MiB]
        assert "root" in run("sgdisk", "-p", dev).stdout.decode()
        assert "No problems found" in run("sgdisk", "-v", dev).stdout.decode()
        # not a terminal: plain progress lines, and the summary line
        assert "wrote" in proc.stderr.decode()


def test_cli_refusal_is_one_line_and_quiet_is_quiet(image, tmp_path):
    raw, _ = image
    target = tmp_path / "small.img"
    target.write_bytes(bytes(4 * MiB))
    proc = configdrive("deploy", "--device", target, "--image", raw, check=False)
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert err.count("\n") == 1 and err.startswith("configdrive: error: ") and "exceeds" in err
    assert target.read_bytes() == bytes(4 * MiB)
    proc = configdrive("deploy", "--quiet", "--create", "--device", tmp_path / "new.img", "--image", raw)
    assert proc.stdout == b"" and proc.stderr == b""
    assert (tmp_path / "new.img").read_bytes() == raw.read_bytes()


def test_python_api(image, tmp_path):
    raw, packed = image
    summary = deploy(str(tmp_path / "api.img"), str(packed), create=True)
    assert summary["image"]["format"] == "qcow2" and summary["image"]["bytes_written"] > 0
    assert (tmp_path / "api.img").read_bytes() == raw.read_bytes()


def test_small_buffers_bound_what_is_read_ahead(tmp_path, monkeypatch):
    """A deploy given small Buffers never holds more than queue_depth reads of read_size
    between the source and the disk, beyond what the copier holds back by design (the
    last MiB, until the checksum): counted in bytes read against bytes written."""
    need_tool("sgdisk")
    from partition.writing import copy
    from partition.images import image
    from partition.images.image import Buffers
    from partition.images.source import FileSource

    raw = tmp_path / "disk.raw"
    raw.write_bytes(bytes(16 * MiB))
    run("sgdisk", "-n", "1:2048:+12M", "-c", "1:root", raw)
    with open(raw, "r+b") as fp:
        fp.seek(MiB)
        fp.write(random.Random(7).randbytes(13 * MiB))   # no zero run ends a batch early
    buffers = Buffers(queue_depth=2, read_size=64 << 10)
    read = [0]

    class Counting(FileSource):
        """The image as a stream (no path, so it is read, not pread), every byte counted."""

        def readinto(self, buf) -> int:
            n = super().readinto(buf)
            read[0] += n
            return n

    monkeypatch.setattr(image, "open_source",
                        lambda spec, **_: Counting(open(spec, "rb", buffering=0), str(spec)))
    ahead = []
    write = copy._Writer.write

    def counted_write(self, offset, length, data):
        if data is not None:
            ahead.append(read[0] - (offset + length))
        # A slow disk, so that the reader runs as far ahead as it is let: the bound below
        # is checked on every write, whatever the timing.
        time.sleep(0.001)
        write(self, offset, length, data)

    monkeypatch.setattr(copy._Writer, "write", counted_write)
    deploy(str(tmp_path / "out.img"), str(raw), create=True, buffers=buffers)
    assert (tmp_path / "out.img").read_bytes() == raw.read_bytes()
    # Read and not yet written: the held-back last MiB, queue_depth reads in the queue,
    # one in the reader's hand waiting for room, one the writer is on.
    bound = copy.HOLD + (buffers.queue_depth + 2) * buffers.read_size
    assert ahead and max(ahead) <= bound, (max(ahead), bound)
    # ... and it did run ahead (1 MiB batches of 64 KiB reads would have gone past the bound).
    assert max(ahead) > copy.HOLD + buffers.read_size, max(ahead)


def test_declared_raw_is_checked_in_the_one_download(image, tmp_path):
    """ironic's disk_format raw ("raw-declared"): a qcow2 is refused before the target is
    touched, and a raw image is written, each from a single request for the file: the
    format is told from the bytes written, so a server cannot show a first look raw bytes
    and the download a qcow2."""
    import sys
    from conftest import ROOT
    from partition.errors import PartitionError
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from common import RangeServer
    raw, _ = image
    www = tmp_path / "www"
    www.mkdir()
    (www / "disk.raw").write_bytes(raw.read_bytes())
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, www / "disk.qcow2")
    target = tmp_path / "target.img"
    target.write_bytes(b"\xaa" * 12 * MiB)
    server = RangeServer(www)
    with server as base:
        with pytest.raises(PartitionError, match=r"disk\.qcow2\?q: declared disk_format raw, "
                                                 r"but its content is qcow2: refused"):
            deploy(str(target), f"{base}/disk.qcow2?q", image_format="raw-declared")
        assert target.read_bytes() == b"\xaa" * 12 * MiB
        deploy(str(target), f"{base}/disk.raw?r", image_format="raw-declared")
    assert target.read_bytes() == raw.read_bytes()
    assert server.clients["q"]["requests"] == 1 and server.clients["r"]["requests"] == 1
