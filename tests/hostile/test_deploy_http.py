"""A hostile or broken HTTP server as the image source: what it controls (timing, length,
headers, redirects, the file behind a URL) and what ``configdrive deploy`` promises anyway:
an overall deadline, one retry budget, resumes only of the same file, only http(s)
redirects, no success without bytes. The server listens on 127.0.0.1 in this process.
"""

from __future__ import annotations

import http.server
import os
import random
import threading
import time

import pytest

from conftest import make_gpt_disk
from harness import refused, run_measured

MiB = 1 << 20
VERSION_A = random.Random(1).randbytes(3 * MiB)
VERSION_B = random.Random(2).randbytes(3 * MiB)


class Hostile(http.server.BaseHTTPRequestHandler):
    """Behaviour by path; ``served`` counts GETs per path (to tell first from resumed)."""
    protocol_version = "HTTP/1.1"
    served: dict

    def do_GET(self):
        name = self.path.strip("/").split("?")[0]
        count = self.served[name] = self.served.get(name, 0) + 1
        getattr(self, "serve_" + name.replace("-", "_"))(count)

    # -- helpers
    def head(self, status, length=None, **headers):
        self.send_response(status)
        if length is not None:
            self.send_header("Content-Length", str(length))
        for key, value in headers.items():
            self.send_header(key.replace("_", "-"), value)
        self.end_headers()

    def body_from(self, data, etag, drop_after=None, honour_if_range=True):
        """Serve ``data`` honouring Range/If-Range as a correct server does; send only
        ``drop_after`` bytes and close when given."""
        start, status, extra = 0, 200, {}
        rng, if_range = self.headers.get("Range"), self.headers.get("If-Range")
        if rng and (not honour_if_range or if_range in (None, etag)):
            start = int(rng.split("=")[1].split("-")[0])
            status = 206
            extra["Content_Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        self.head(status, len(data) - start, ETag=etag, **extra)
        body = data[start:]
        self.wfile.write(body if drop_after is None else body[:drop_after])
        self.wfile.flush()
        if drop_after is not None:
            self.close_connection = True
            self.connection.shutdown(2)

    # -- behaviours
    def serve_good(self, count):
        self.body_from(VERSION_A, '"a"')

    def serve_empty(self, count):
        self.head(200, 0, ETag='"e"')

    def serve_empty_close(self, count):
        self.head(200, None)
        self.close_connection = True

    def serve_trickle(self, count):
        self.head(200, len(VERSION_A), ETag='"a"')
        for byte in VERSION_A:
            try:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            except OSError:
                return
            time.sleep(0.2)

    def serve_drops(self, count):
        self.body_from(VERSION_A, '"a"', drop_after=1000)

    def serve_changes(self, count):
        """The file is replaced after the first request (a new build published)."""
        if count == 1:
            self.body_from(VERSION_A, '"a"', drop_after=len(VERSION_A) // 4)
        else:
            self.body_from(VERSION_B, '"b"')

    def serve_changes_ignoring_if_range(self, count):
        """A server that ignores If-Range: 206 of the new file from the right offset but
        of another length."""
        if count == 1:
            self.body_from(VERSION_A, '"a"', drop_after=len(VERSION_A) // 4)
        else:
            self.body_from(VERSION_B + b"x" * 512, '"a"', honour_if_range=False)

    def serve_wrong_range(self, count):
        """A resume answered from another offset than asked."""
        if count == 1:
            self.body_from(VERSION_A, '"a"', drop_after=len(VERSION_A) // 4)
        else:
            self.head(206, len(VERSION_A), ETag='"a"',
                      Content_Range=f"bytes 0-{len(VERSION_A) - 1}/{len(VERSION_A)}")
            self.wfile.write(VERSION_A)

    def serve_no_validator(self, count):
        self.head(200, len(VERSION_A))
        self.wfile.write(VERSION_A[:1000])
        self.close_connection = True
        self.connection.shutdown(2)

    def serve_redirect_ftp(self, count):
        self.head(302, 0, Location="ftp://127.0.0.1/disk.img")

    def serve_redirect_file(self, count):
        self.head(302, 0, Location="file:///etc/passwd")

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    class Handler(Hostile):
        served = {}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield Handler, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture
def target(tmp_path):
    return make_gpt_disk(tmp_path / "old-disk.img", "0DD0DD00-1111-4222-8333-444455556666", seed=1)


def env(**settings):
    return {**os.environ, **{f"CONFIGDRIVE_HTTP_{k.upper()}": str(v) for k, v in settings.items()}}


def deploy_refused(target, url, names, **settings):
    return refused("deploy", "--quiet", "--device", target, "--image", url, watch=[target],
                   names=names, env=env(**settings), hang_guard=60)


def test_control_good_server_is_written(server, target):
    """The same server, behaving: the deploy succeeds (so refusals below are the faults')."""
    handler, url = server
    outcome = run_measured("deploy", "--quiet", "--device", target, "--image", f"{url}/good")
    assert outcome.returncode == 0, outcome.stderr
    with open(target, "rb") as fp:
        assert fp.read(len(VERSION_A)) == VERSION_A


@pytest.mark.parametrize("path", ["empty", "empty-close"])
def test_zero_byte_body_refused(server, target, path):
    handler, url = server
    deploy_refused(target, f"{url}/{path}", names="empty")


@pytest.mark.parametrize("deadline", [1, 3])
def test_trickling_server_meets_the_deadline(server, target, deadline):
    handler, url = server
    started = time.monotonic()
    deploy_refused(target, f"{url}/trickle", names="deadline", deadline=deadline)
    assert time.monotonic() - started < deadline + 30      # hang guard: minutes were possible


@pytest.mark.parametrize("retries", [0, 1, 3])
def test_dropping_server_spends_one_budget(server, target, retries):
    """Each answer brings 1000 new bytes then closes: a budget renewed per read would run
    for 3000 connections; one budget for the download ends after ``retries``."""
    handler, url = server
    before = handler.served.get("drops", 0)
    deploy_refused(target, f"{url}/drops", names="no retries left", retries=retries)
    assert handler.served["drops"] - before == retries + 1


@pytest.mark.parametrize("path,names", [
    ("changes", "the file changed"),
    ("changes-ignoring-if-range", "Content-Range"),
    ("wrong-range", "Content-Range"),
    ("no-validator", "cannot resume"),
])
def test_resume_only_continues_the_same_file(server, target, path, names):
    handler, url = server
    handler.served.pop(path, None)
    line = deploy_refused(target, f"{url}/{path}", names=names, retries=2)
    assert "byte" in line


@pytest.mark.parametrize("path,names", [("redirect-ftp", "only http and https"),
                                        ("redirect-file", "file:///etc/passwd")])
def test_redirects_only_to_http(server, target, path, names):
    """urllib itself refuses file://, and we refuse the ftp:// it would follow."""
    handler, url = server
    deploy_refused(target, f"{url}/{path}", names=names)


def test_bad_settings_are_one_line(server, target):
    handler, url = server
    for name, value in [("deadline", "soon"), ("retries", "-1"), ("deadline", "inf")]:
        deploy_refused(target, f"{url}/good", names=f"CONFIGDRIVE_HTTP_{name.upper()}",
                       **{name: value})
