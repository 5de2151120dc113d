"""Shared measuring for the side-by-side benchmarks: medians of repeated runs, peak
memory of a child process, and one table format, so every figure is a ratio against the
tool a user would pick instead, measured in the same run."""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import time
from typing import Callable, Sequence


def median_seconds(fn: Callable[[], object], runs: int = 5, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def run_measured(cmd: Sequence[str], **kw) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one child process run to completion."""
    start = time.perf_counter()
    proc = subprocess.Popen(list(map(str, cmd)), stdout=subprocess.DEVNULL, **kw)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {proc.returncode}")
    return elapsed, usage.ru_maxrss * 1024


def drop_caches() -> None:
    """Best effort: start each timed run from a cold page cache (needs root)."""
    subprocess.run(["sync"])
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        pass


def table(title: str, rows: list[tuple[str, float, float]], unit: str = "s") -> str:
    """rows: (what, ours, theirs); prints the ratio theirs/ours (>1 means we are faster)."""
    lines = [f"## {title}", f"{'case':44} {'ours':>10} {'peer':>10} {'peer/ours':>10}"]
    for what, ours, theirs in rows:
        lines.append(f"{what:44} {ours:>9.3f}{unit} {theirs:>9.3f}{unit} {theirs / ours:>10.2f}")
    return "\n".join(lines)


def workdir(given: str | None, prefix: str):
    """``--workdir`` (made if missing), or a new temporary directory named ``prefix``."""
    import tempfile
    from pathlib import Path
    work = Path(given or tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    return work


def self_peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class RangeServer:
    """Serve the files of ``root`` on 127.0.0.1 as a CDN does: Accept-Ranges, a strong
    ETag, ``Range: bytes=a-`` / ``a-b`` honoured when If-Range matches. Python's own
    http.server (3.11) serves no ranges. ``with RangeServer(root) as url: ...``

    A query string names the client (``/disk.qcow2?node-3``): ``clients[query]`` counts
    the requests and body bytes sent for it; the file served is the path without it."""

    def __init__(self, root):
        import http.server
        import threading
        from pathlib import Path
        outer = self
        self.root, self.requests = Path(root), []
        self.clients: dict[str, dict[str, int]] = {}
        self._counting = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                outer.serve(self)

            def log_message(self, *args):
                pass
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def body(self, piece: bytes, start: int, end: int, bounded: bool) -> bytes:
        """What is sent for ``piece`` (ending at byte ``end`` of a range); a hook for tests."""
        return piece

    def count(self, client: str, requests: int = 0, sent: int = 0) -> None:
        with self._counting:
            seen = self.clients.setdefault(client, {"requests": 0, "bytes": 0})
            seen["requests"] += requests
            seen["bytes"] += sent

    def serve(self, handler) -> None:
        name, _, client = handler.path.partition("?")
        path = self.root / name.lstrip("/")
        if not path.is_file():
            handler.send_error(404)
            return
        size = path.stat().st_size
        etag = f'"{size}-{path.stat().st_mtime_ns}"'
        rng, if_range = handler.headers.get("Range"), handler.headers.get("If-Range")
        self.requests.append(rng)
        self.count(client, requests=1)
        start, end, status = 0, size, 200
        if rng and if_range in (None, etag):
            first, _, last = rng.split("=")[1].partition("-")
            start, end, status = int(first), (int(last) + 1 if last else size), 206
        handler.send_response(status)
        handler.send_header("Accept-Ranges", "bytes")
        handler.send_header("ETag", etag)
        handler.send_header("Content-Length", str(end - start))
        if status == 206:
            handler.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        handler.end_headers()
        bounded = bool(rng and rng.split("-")[1])
        with open(path, "rb") as fp:
            fp.seek(start)
            try:
                while start < end:
                    piece = fp.read(min(1 << 20, end - start))
                    body = self.body(piece, start, end, bounded)
                    handler.wfile.write(body)
                    self.count(client, sent=len(body))
                    start += len(piece)
            except (BrokenPipeError, ConnectionResetError):
                pass      # the reader closed a stream it no longer needs

    def __enter__(self) -> str:
        return self.url

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
