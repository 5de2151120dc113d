"""A hostile server behind a qcow2 read in place by Range requests (partition/images/ranged.py).

It controls every answer: the bytes, Content-Range, the ETag between requests, how much
of a range it sends. What we promise: a range that is not the one asked for, of another
file, or cut short is refused in one line before the target is touched (the qcow2 header
and tables are read by Range before the first write); bytes that differ between a Range
answer and the download fail the deploy when a checksum is given (tests/test_fast_paths.py
::test_server_answering_ranges_differently_is_caught_by_the_checksum).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from conftest import need_tool, run
from harness import refused

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from common import RangeServer  # noqa: E402

MiB = 1 << 20


class Hostile(RangeServer):
    """Misbehaves on bounded Range requests only (the first GET, which tells the image's
    kind, is served honestly), in the way ``mode`` names."""
    mode = "honest"

    def serve(self, handler) -> None:
        rng = handler.headers.get("Range") or ""
        if self.mode == "honest" or not rng.split("-")[-1]:
            return super().serve(handler)
        first, last = (int(x) for x in rng.split("=")[1].split("-"))
        size = (self.root / handler.path.lstrip("/")).stat().st_size
        length = last + 1 - first
        if self.mode == "wrong-start":         # the right length from somewhere else
            start, etag, status = first + 512, None, 206
        elif self.mode == "other-file":        # the file was replaced: If-Range fails
            start, etag, status = 0, '"replaced"', 200
            length = size
        elif self.mode == "short":             # promises the range, sends half of it
            start, etag, status = first, None, 206
        else:
            raise AssertionError(self.mode)
        path = self.root / handler.path.lstrip("/")
        etag = etag or f'"{size}-{path.stat().st_mtime_ns}"'
        handler.send_response(status)
        handler.send_header("Accept-Ranges", "bytes")
        handler.send_header("ETag", etag)
        handler.send_header("Content-Length", str(length))
        if status == 206:
            handler.send_header("Content-Range", f"bytes {start}-{start + length - 1}/{size}")
        handler.end_headers()
        with open(path, "rb") as fp:
            fp.seek(start)
            body = fp.read(length if self.mode != "short" else length // 2)
        try:
            handler.wfile.write(body)
            if self.mode == "short":
                handler.close_connection = True
                handler.connection.shutdown(2)
        except OSError:
            pass


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    need_tool("qemu-img", "qemu-io")
    root = tmp_path_factory.mktemp("ranged")
    run("qemu-img", "create", "-f", "qcow2", root / "img.qcow2", str(8 * MiB))
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 1M 2M", root / "img.qcow2")
    server = Hostile(root)
    with server as url:
        yield server, f"{url}/img.qcow2"


@pytest.fixture
def target(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(b"\x55" * 8 * MiB)
    return path


@pytest.mark.parametrize("mode,names", [
    ("wrong-start", "Content-Range"),
    ("other-file", "the file changed"),
    ("short", "no retries left"),
])
@pytest.mark.parametrize("checksum", [False, True], ids=["plain", "with-checksum"])
def test_bad_range_answers_are_refused_before_the_disk(served, target, mode, names, checksum):
    server, url = served
    extra = ["--checksum", "sha256:" + "0" * 64] if checksum else []
    server.mode = mode
    try:
        refused("deploy", "--quiet", "--device", target, "--image", url, "--http-retries", "1",
                *extra, watch=[target], names=names,
                env={**__import__("os").environ, "CONFIGDRIVE_HTTP_DEADLINE": "30"})
    finally:
        server.mode = "honest"


def test_control_honest_server_is_written(served, target):
    server, url = served
    from harness import run_measured
    outcome = run_measured("deploy", "--quiet", "--device", target, "--image", url)
    assert outcome.returncode == 0, outcome.stderr
    assert target.read_bytes()[MiB: 3 * MiB] == b"\x5a" * 2 * MiB
