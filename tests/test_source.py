"""Image sources: magic-byte detection, gzip/xz/zstd (made by the real gzip, xz and zstd
tools) around raw and qcow2, stdin, and http from a local server that fails first."""

from __future__ import annotations

import hashlib
import http.server
import random
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import configdrive, need_tool, run
from partition.writing.copy import write_image
from partition.errors import PartitionError
from partition.images.source import HttpSource

MiB = 1 << 20


@pytest.fixture(scope="module")
def disk(tmp_path_factory) -> Path:
    """A 6 MiB raw disk: random data, text, zeros; size not a multiple of 1 MiB."""
    path = tmp_path_factory.mktemp("src") / "disk.raw"
    rnd = random.Random(7)
    data = bytearray(6 * MiB + 3584)
    data[0:200_000] = rnd.randbytes(200_000)
    text = b"".join(b"row %07d\n" % i for i in range(100_000))
    data[2 * MiB: 2 * MiB + len(text)] = text
    data[-5000:] = rnd.randbytes(5000)
    path.write_bytes(bytes(data))
    return path


def compress(path: Path, tool: str) -> Path:
    need_tool(tool)
    suffix = {"gzip": ".gz", "xz": ".xz", "zstd": ".zst"}[tool]
    outp = path.with_name(path.name + suffix)
    with open(outp, "wb") as fp:
        fp.write(run(tool, "-c", "-q", path).stdout)
    return outp


def as_qcow2(disk: Path, *options: str) -> Path:
    need_tool("qemu-img")
    image = disk.with_name(disk.stem + "-".join(["", *options]).replace("=", "") + ".qcow2")
    if not image.exists():
        run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", *options, disk, image)
    return image


def same(a: Path, b: Path) -> bool:
    return run("cmp", a, b, check=False).returncode == 0


@pytest.mark.parametrize("tool", ["gzip", "xz", "zstd"])
@pytest.mark.parametrize("inner", ["raw", "qcow2", "qcow2-compressed"])
def test_compressed_images(tool, inner, disk, tmp_path):
    image = {"raw": lambda: disk, "qcow2": lambda: as_qcow2(disk),
             "qcow2-compressed": lambda: as_qcow2(disk, "-c")}[inner]()
    packed = compress(image, tool)
    target = tmp_path / "out.raw"
    summary = write_image(str(packed), str(target))
    assert summary["compression"] == tool
    assert summary["format"] == ("raw" if inner == "raw" else "qcow2")
    assert same(target, disk)


def test_detected_by_magic_not_name(disk, tmp_path):
    """A qcow2 called .raw and an xz called .img are what their bytes say."""
    misnamed = tmp_path / "really-qcow2.raw"
    misnamed.write_bytes(as_qcow2(disk).read_bytes())
    xz = tmp_path / "really-xz.img"
    xz.write_bytes(compress(disk, "xz").read_bytes())
    for image, fmt, comp in [(misnamed, "qcow2", None), (xz, "raw", "xz")]:
        target = tmp_path / f"{image.name}.out"
        summary = write_image(str(image), str(target))
        assert (summary["format"], summary["compression"]) == (fmt, comp)
        assert same(target, disk)


def test_concatenated_members_are_one_stream(disk, tmp_path):
    """gzip and zstd write concatenations that their own tools decompress as one."""
    half = disk.stat().st_size // 2
    first, second = tmp_path / "a", tmp_path / "b"
    first.write_bytes(disk.read_bytes()[:half])
    second.write_bytes(disk.read_bytes()[half:])
    for tool in ("gzip", "zstd"):
        joined = tmp_path / f"joined.{tool}"
        joined.write_bytes(compress(first, tool).read_bytes() + compress(second, tool).read_bytes())
        assert run(tool, "-dc", joined).stdout == disk.read_bytes()   # the tool agrees
        target = tmp_path / f"out-{tool}"
        write_image(str(joined), str(target))
        assert same(target, disk)


@pytest.mark.parametrize("tool", ["gzip", "xz", "zstd"])
def test_truncated_and_trailing_garbage_refused(tool, disk, tmp_path):
    packed = compress(disk, tool).read_bytes()
    cut = tmp_path / "cut"
    cut.write_bytes(packed[: len(packed) * 2 // 3])
    assert run(tool, "-t", cut, check=False).returncode != 0       # the tool says so too
    with pytest.raises(PartitionError, match="truncated|corrupt"):
        write_image(str(cut), str(tmp_path / "t1"))
    garbage = tmp_path / "garbage"
    garbage.write_bytes(packed + b"this is not compressed data")
    with pytest.raises(PartitionError, match="trailing garbage|corrupt"):
        write_image(str(garbage), str(tmp_path / "t2"))


def test_double_compression_refused(disk, tmp_path):
    twice = compress(compress(disk, "gzip"), "xz")
    with pytest.raises(PartitionError, match="compressed twice"):
        write_image(str(twice), str(tmp_path / "out"))


@pytest.mark.parametrize("kind", ["raw", "qcow2.zst"])
def test_stdin(kind, disk, tmp_path):
    image = disk if kind == "raw" else compress(as_qcow2(disk, "-c"), "zstd")
    target = tmp_path / "out.raw"
    proc = configdrive("deploy", "--create", "--device", target, "--image", "-", "--json",
                       input=image.read_bytes())
    assert same(target, disk)
    assert b'"format": "%s"' % (b"raw" if kind == "raw" else b"qcow2") in proc.stdout


# -- http ----------------------------------------------------------------------------

class Flaky(http.server.BaseHTTPRequestHandler):
    """Serves files from ``root``; ``fail`` is a list of what the next requests get:
    an HTTP status, "drop" (send half the body, then close) or None (serve)."""
    root: Path
    fail: list
    seen: list

    def do_GET(self):
        self.seen.append((self.path, self.headers.get("Range")))
        action = self.fail.pop(0) if self.fail else None
        path = self.root / self.path.lstrip("/")
        if isinstance(action, int):
            self.send_error(action)
            return
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        # What every real server sends, and what a resume needs to prove the same file.
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()[:16]}"')
        self.end_headers()
        body = data[start:]
        if action == "drop":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    class Handler(Flaky):
        root, fail, seen = tmp_path, [], []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield Handler, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


FAST = {"backoff": 0.01}


def test_http_503_then_success(server, disk, tmp_path):
    handler, url = server
    (tmp_path / "img.qcow2").write_bytes(as_qcow2(disk).read_bytes())
    handler.fail += [503, 502]
    target = tmp_path / "out.raw"
    write_image(f"{url}/img.qcow2", str(target), http_options=FAST)
    assert same(target, disk)
    assert len(handler.seen) == 3


def test_http_dropped_connection_resumes_with_range(server, disk, tmp_path):
    handler, url = server
    (tmp_path / "img.raw.gz").write_bytes(compress(disk, "gzip").read_bytes())
    handler.fail += ["drop"]
    target = tmp_path / "out.raw"
    write_image(f"{url}/img.raw.gz", str(target), http_options=FAST)
    assert same(target, disk)
    assert handler.seen[1][1] and handler.seen[1][1].startswith("bytes=")


def test_http_4xx_is_final(server, tmp_path):
    handler, url = server
    with pytest.raises(PartitionError, match="HTTP 404"):
        HttpSource(f"{url}/missing.img", **FAST)
    assert len(handler.seen) == 1
    handler.fail += [503] * 10
    with pytest.raises(PartitionError, match="HTTP 503"):
        HttpSource(f"{url}/missing.img", retries=2, backoff=0.01)
    assert len(handler.seen) == 1 + 3


def test_checksum_file_over_http(server, disk, tmp_path):
    handler, url = server
    image = tmp_path / "disk.img"
    image.write_bytes(disk.read_bytes())
    sums = subprocess.run(["sha256sum", "disk.img"], cwd=tmp_path, capture_output=True,
                          check=True).stdout
    (tmp_path / "SHA256SUMS").write_bytes(b"0" * 64 + b"  other.img\n" + sums)
    target = tmp_path / "out.raw"
    summary = write_image(f"{url}/disk.img", str(target), checksum=f"{url}/SHA256SUMS",
                          http_options=FAST)
    assert summary["checksum"]["verified"] and same(target, disk)


def test_http_retry_lines_are_the_commands_and_quiet_silences_them(server, disk, tmp_path):
    """partition/ only logs a retry; the command prints it (one line naming the URL and the
    status), and --quiet leaves stderr empty on success."""
    handler, url = server
    (tmp_path / "img.raw").write_bytes(disk.read_bytes())
    for quiet in (False, True):
        handler.fail += [503]
        target = tmp_path / f"out-{quiet}.raw"
        target.write_bytes(bytes(disk.stat().st_size))
        proc = configdrive("deploy", *(["--quiet"] if quiet else []), "--device", target,
                           "--image", f"{url}/img.raw", "--http-retries", "1")
        assert same(target, disk)
        retries = [line for line in proc.stderr.decode().splitlines() if "retrying in" in line]
        if quiet:
            assert proc.stderr == b""
        else:
            assert retries == [f"configdrive: {url}/img.raw: HTTP 503; retrying in 1s"]
