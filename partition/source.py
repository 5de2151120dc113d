"""Where an image's bytes come from: a local file, stdin (``-``), or an http(s) URL.

Every source is a plain binary reader (``read(n)``, ``readinto``) with a ``name`` for
messages, a ``size`` when it is known, and ``path`` when it is a local regular file that
can be read at random (the qcow2 reader then needs no spool).

http: urllib from the standard library. A 5xx answer or a dropped connection is retried a
bounded number of times with exponential backoff; a dropped connection resumes where it
stopped (a Range request), so a long download does not start over. A 4xx is final.
"""

from __future__ import annotations

import io
import os
import stat
import sys
import time
from typing import BinaryIO

from .errors import PartitionError

RETRIES = 5            # attempts after the first one
BACKOFF = 1.0          # seconds before the first retry; doubles each time
TIMEOUT = 60           # seconds without a byte before the connection counts as dropped


class Source(io.RawIOBase):
    """A sequential byte source. Subclasses implement ``readinto``."""

    name: str = "?"
    size: int | None = None       # total bytes, when known in advance
    path: str | None = None       # a local regular file we may also pread

    def readable(self) -> bool:
        return True


class FileSource(Source):
    def __init__(self, fp: BinaryIO, name: str, path: str | None = None, size: int | None = None):
        self._fp, self.name, self.path, self.size = fp, name, path, size

    def readinto(self, buf) -> int:
        try:
            return self._fp.readinto(buf)
        except OSError as exc:
            raise PartitionError(f"{self.name}: read failed: {exc.strerror}") from exc

    def close(self) -> None:
        if not self.closed:
            self._fp.close()
        super().close()


class HttpSource(Source):
    """GET ``url``, retrying 5xx answers and dropped connections (resuming with Range)."""

    def __init__(self, url: str, *, retries: int = RETRIES, backoff: float = BACKOFF,
                 timeout: float = TIMEOUT):
        self.name, self.url = url, url
        self._retries, self._backoff, self._timeout = retries, backoff, timeout
        self._pos = 0
        self._resp = self._open()
        length = self._resp.headers.get("Content-Length")
        self.size = int(length) if length and length.isdigit() else None

    def _open(self):
        import http.client
        import urllib.error
        import urllib.request
        delay = self._backoff
        for attempt in range(self._retries + 1):
            request = urllib.request.Request(self.url, headers={"User-Agent": "configdrive"})
            if self._pos:
                request.add_header("Range", f"bytes={self._pos}-")
            try:
                resp = urllib.request.urlopen(request, timeout=self._timeout)
            except urllib.error.HTTPError as exc:
                exc.close()
                if exc.code < 500 or attempt == self._retries:
                    raise PartitionError(f"{self.url}: HTTP {exc.code} {exc.reason}") from None
                why = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                if attempt == self._retries:
                    raise PartitionError(f"{self.url}: {getattr(exc, 'reason', exc)}") from None
                why = str(getattr(exc, "reason", exc))
            else:
                if self._pos and resp.status != 206:
                    # The server ignored Range: skip what we already have.
                    _discard(resp, self._pos, self.url)
                return resp
            print(f"configdrive: {self.url}: {why}; retrying in {delay:g}s", file=sys.stderr)
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def readinto(self, buf) -> int:
        import http.client
        for attempt in range(self._retries + 1):
            try:
                n = self._resp.readinto(buf)
            except (OSError, http.client.HTTPException) as exc:
                n, error = None, exc
            else:
                if n or self.size is None or self._pos >= self.size:
                    self._pos += n
                    return n
                error = f"connection closed at byte {self._pos} of {self.size}"
            if attempt == self._retries:
                raise PartitionError(f"{self.url}: {error}")
            self._resp.close()
            time.sleep(self._backoff * (2 ** attempt))
            self._resp = self._open()
        raise AssertionError("unreachable")

    def close(self) -> None:
        if not self.closed:
            self._resp.close()
        super().close()


def _discard(resp, count: int, url: str) -> None:
    while count:
        chunk = resp.read(min(count, 1 << 20))
        if not chunk:
            raise PartitionError(f"{url}: connection closed while skipping to byte {count}")
        count -= len(chunk)


def is_url(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


def open_source(spec: str | os.PathLike, **http_options) -> Source:
    """A reader for ``spec``: ``-`` (stdin), an http(s) URL, or a local path."""
    spec = os.fspath(spec)
    if spec == "-":
        return FileSource(open(sys.stdin.fileno(), "rb", buffering=0, closefd=False), "stdin")
    if is_url(spec):
        return HttpSource(spec, **http_options)
    try:
        fp = open(spec, "rb", buffering=0)
    except OSError as exc:
        raise PartitionError(f"{spec}: cannot open: {exc.strerror}") from None
    st = os.fstat(fp.fileno())
    if stat.S_ISREG(st.st_mode):
        return FileSource(fp, spec, path=spec, size=st.st_size)
    # A pipe, FIFO or character device: sequential only, size unknown.
    return FileSource(fp, spec)
