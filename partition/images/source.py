"""Where an image's bytes come from: a local file, stdin (``-``), or an http(s) URL.

Every source is a plain binary reader (``read(n)``, ``readinto``) with a ``name`` for
messages, a ``size`` when it is known, and ``path`` when it is a local regular file that
can be read at random (the qcow2 reader then needs no spool).

http: urllib from the standard library, held to limits a hostile or broken server cannot
stretch (a server that dropped every response after a few bytes, or sent one byte a
minute, once kept a deploy alive for hours):

- an overall deadline for the whole download (``deadline``, CONFIGDRIVE_HTTP_DEADLINE,
  default 2 hours) besides the idle timeout per read (``timeout``, 60 s);
- one retry budget for the whole download (``retries``, CONFIGDRIVE_HTTP_RETRIES,
  default 5), spent by 5xx answers and dropped connections alike, never renewed;
- a dropped connection resumes only the same entity: the Range request carries the first
  answer's strong ETag (or Last-Modified) as If-Range, and the answer's Content-Range must
  start where we stopped. A changed file, or a server that names no validator, fails the
  download instead of stitching two files together;
- redirects only to http and https (urllib would follow one to ftp://);
- a 4xx is final; a URL that does not parse is one line, not a traceback.
"""

from __future__ import annotations

import io
import logging
import os
import re
import stat
import sys
import time
from typing import BinaryIO

from ..errors import PartitionError

RETRIES = 5            # retries for the whole download, after the first attempt
BACKOFF = 1.0          # seconds before the first retry; doubles each time
TIMEOUT = 60           # seconds without a byte before the connection counts as dropped
DEADLINE = 2 * 3600    # seconds for the whole download, retries included
READ_PIECE = 1 << 20   # at most this much per socket read, so the deadline is checked often
ENV_RETRIES, ENV_DEADLINE = "CONFIGDRIVE_HTTP_RETRIES", "CONFIGDRIVE_HTTP_DEADLINE"
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
# Each retry is logged at INFO; the caller decides where that goes (the command prints it
# on stderr unless --quiet, an ironic agent sends it to its own log).
log = logging.getLogger(__name__)


class Source(io.RawIOBase):
    """A sequential byte source. Subclasses implement ``readinto``."""

    name: str = "?"
    size: int | None = None       # total bytes, when known in advance
    path: str | None = None       # a local regular file we may also pread
    stat: os.stat_result | None = None   # what a local source is (never the target itself)

    def readable(self) -> bool:
        return True

    def read_upto(self, limit: int) -> bytes:
        """``limit`` bytes, or all of the source when it is shorter. ``read`` returns what
        one read gave (an HTTP source hands over at most READ_PIECE at a time), so a
        caller that wants a whole small document loops here, never on a single read."""
        out = bytearray()
        while len(out) < limit and (piece := self.read(min(limit - len(out), READ_PIECE))):
            out += piece
        return bytes(out)


class FileSource(Source):
    def __init__(self, fp: BinaryIO, name: str, path: str | None = None, size: int | None = None):
        self._fp, self.name, self.path, self.size = fp, name, path, size

    def fileno(self) -> int:
        return self._fp.fileno()

    def readinto(self, buf) -> int:
        try:
            return self._fp.readinto(buf)
        except OSError as exc:
            raise PartitionError(f"{self.name}: read failed: {exc.strerror}") from exc

    def close(self) -> None:
        if not self.closed:
            self._fp.close()
        super().close()


class _Budget:
    """One deadline and one retry budget for a whole download, however many requests it
    takes (a qcow2 read by Range requests shares them across all of its requests)."""

    def __init__(self, url: str, retries: int, deadline: float, backoff: float):
        self.url, self.retries, self.deadline, self.delay = url, retries, deadline, backoff
        self.ends_at = time.monotonic() + deadline

    def left(self, at: str) -> float:
        left = self.ends_at - time.monotonic()
        if left <= 0:
            raise PartitionError(f"{self.url}: no complete download within the deadline of "
                                 f"{self.deadline:g} s ({at}; {ENV_DEADLINE} sets it)")
        return left

    def spend_retry(self, why: str, at: str) -> None:
        """One retry from the download's budget, after a backoff that the deadline cuts."""
        if self.retries <= 0:
            raise PartitionError(f"{self.url}: {why} (no retries left; {ENV_RETRIES} sets them)")
        self.retries -= 1
        delay = min(self.delay, self.left(at))
        log.info("%s: %s; retrying in %gs", self.url, why, delay)
        time.sleep(delay)
        self.delay *= 2


class HttpSource(Source):
    """GET ``url`` within a deadline and a retry budget, resuming only the same entity."""

    def __init__(self, url: str, *, retries: int | None = None, backoff: float = BACKOFF,
                 timeout: float = TIMEOUT, deadline: float | None = None, handlers: tuple = ()):
        """``handlers``: extra urllib handlers for every request of this download (a
        deploy agent's proxies and TLS context, e.g. ProxyHandler, HTTPSHandler)."""
        check_url(url)
        self.name, self.url = url, url
        self._handlers = tuple(handlers)
        self._budget = _Budget(url, _setting(retries, ENV_RETRIES, RETRIES, int),
                               _setting(deadline, ENV_DEADLINE, DEADLINE, float), backoff)
        self._timeout = timeout
        self._exact = False      # a Range answered with the whole file: refused (``range``)
        self._pos, self._end = 0, None
        self._again = False      # another request for the same file (see ``range``)
        self._validator: tuple[str, str] | None = None     # ("ETag" | "Last-Modified", value)
        self._resp = self._open()
        self.size = _content_length(self._resp.headers.get("Content-Length"))
        # Ranges may be asked for (qcow2 read in place): the server says it serves them.
        self.ranges = self._resp.headers.get("Accept-Ranges", "").strip().lower() == "bytes"
        etag = self._resp.headers.get("ETag")
        modified = self._resp.headers.get("Last-Modified")
        if etag and not etag.startswith("W/"):       # a weak ETag may not go in If-Range
            self._validator = ("ETag", etag)
        elif modified:
            self._validator = ("Last-Modified", modified)

    @property
    def provable(self) -> bool:
        """Whether another request can be proven to get the same file (a length and a
        strong ETag or Last-Modified): what ``range`` needs."""
        return self._validator is not None and self.size is not None

    def range(self, start: int, end: int | None = None,
              within: "_Budget | None" = None) -> "HttpSource":
        """Another GET of the same entity for bytes ``start`` up to ``end`` (exclusive;
        None: to its end), sharing this download's deadline and retry budget. Like a
        resume, it sends If-Range and checks Content-Range: a changed file fails. A
        server that answers with the whole file is skipped to ``start``.

        ``within``: a budget of its own, for a read the caller can do without (an xz
        index, see RangePreads): its failures spend none of the download's retries, and a
        server answering with the whole file fails it before a byte of the body is read."""
        if self._validator is None or self.size is None:
            raise PartitionError(f"{self.url}: cannot read ranges: the server names no size, "
                                 "ETag or Last-Modified that would prove it is the same file")
        other = HttpSource.__new__(HttpSource)
        other.__dict__.update(name=self.name, url=self.url, _budget=within or self._budget,
                              _timeout=self._timeout, _validator=self._validator,
                              _handlers=self._handlers,
                              size=self.size, ranges=self.ranges, stat=None, path=None)
        other._pos, other._end = start, min(end, self.size) if end is not None else None
        other._again = True      # even from byte 0: it must be the same file
        other._exact = within is not None
        other._resp = other._open()
        return other

    def _left(self, at: str) -> float:
        return self._budget.left(at)

    def _spend_retry(self, why: str) -> None:
        self._budget.spend_retry(why, f"at byte {self._pos}")

    def _open(self):
        import http.client
        import urllib.error
        import urllib.request
        opener = urllib.request.build_opener(_redirect_handler(), *self._handlers)
        while True:
            timeout = min(self._timeout, self._left(f"connecting at byte {self._pos}"))
            request = urllib.request.Request(self.url, headers={"User-Agent": "configdrive"})
            if self._pos or self._end is not None or self._again:
                last = "" if self._end is None else self._end - 1
                request.add_header("Range", f"bytes={self._pos}-{last}")
                request.add_header("If-Range", self._validator[1])
            try:
                resp = opener.open(request, timeout=timeout)
            except urllib.error.HTTPError as exc:
                exc.close()
                if exc.code < 500:
                    raise PartitionError(f"{self.url}: HTTP {exc.code} {exc.reason}") from exc
                why = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
                if isinstance(exc, PartitionError):
                    raise
                why = str(getattr(exc, "reason", exc))
            else:
                if self._pos or self._end is not None or self._again:
                    self._same_entity(resp)
                return resp
            self._spend_retry(why)

    def _same_entity(self, resp) -> None:
        """A resumed answer must continue the file we were reading, where we stopped."""
        kind, value = self._validator
        if resp.status == 206:
            m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
            start = int(m.group(1)) if m else None
            total = m.group(3) if m else None
            if start != self._pos or (self.size is not None and total != str(self.size)):
                resp.close()
                raise PartitionError(f"{self.url}: resumed at byte {self._pos}, but the server "
                                     f"sent Content-Range {resp.headers.get('Content-Range')!r}")
            return
        # 200: the server ignored Range (same validator: skip what we have) or the file
        # changed (If-Range did not match): never stitch two files together.
        if self._exact:
            resp.close()
            raise PartitionError(f"{self.url}: asked for bytes from {self._pos}, the server "
                               f"answered HTTP {resp.status} with the whole file")
        if resp.headers.get(kind) != value:
            resp.close()
            raise PartitionError(f"{self.url}: the file changed while downloading ({kind} "
                                 f"{value!r} became {resp.headers.get(kind)!r} at byte "
                                 f"{self._pos}): refused")
        _discard(resp, self._pos, self.url)

    def readinto(self, buf) -> int:
        import http.client
        while True:
            self._left(f"at byte {self._pos}")
            want = min(len(buf), READ_PIECE)
            if self._end is not None:
                want = min(want, self._end - self._pos)
                if want <= 0:
                    return 0
            try:
                data = self._resp.read1(want)
            except (OSError, http.client.HTTPException) as exc:
                error = f"{exc.__class__.__name__} at byte {self._pos}: {exc}"
            else:
                goal = self.size if self._end is None else self._end
                if data or goal is None or self._pos >= goal:
                    buf[: len(data)] = data
                    self._pos += len(data)
                    return len(data)
                error = f"connection closed at byte {self._pos} of {self.size}"
            self._resp.close()
            if self._validator is None:
                raise PartitionError(f"{self.url}: {error}; cannot resume: the server names no "
                                     "ETag or Last-Modified that would prove it is the same file")
            self._spend_retry(error)
            self._resp = self._open()

    def close(self) -> None:
        if not self.closed:
            self._resp.close()
        super().close()


class RangePreads:
    """``pread(offset, length)`` over an http(s) file by Range requests of the same entity
    (``HttpSource.range``: If-Range sent, Content-Range checked, a changed file fails),
    for the few reads at random that finding a compressed file's units takes: an xz
    file's index lies at its end (partition/images/xzblocks.py). Each request asks for at
    least WINDOW bytes ending where the read ends, and the last answer is kept, so that a
    stream's padding, footer and index come in one request.

    These reads only make the deploy faster, so any failure of theirs raises ValueError
    (the caller then reads the file serially, from the download it has) and they never
    cost what the download needs: every byte asked for is charged to ``budget`` (a file
    of many small streams, each costing a request and a window, cannot turn into more
    requests and bytes than that); all of them share a deadline of DEADLINE seconds and
    no retries, apart from the download's own (a server refusing ranges with 416 or 503,
    or stalling them, once failed the deploy, or spent its retries and minutes of
    backoff first, where the serial reader would have succeeded)."""

    WINDOW = 64 << 10
    DEADLINE = 30.0

    def __init__(self, source: HttpSource, budget: int):
        self._source, self._left = source, budget
        self._start, self._data = 0, b""
        self._time = _Budget(source.url, 0, min(self.DEADLINE, source._left("reading the index")),
                             BACKOFF)

    def __call__(self, offset: int, length: int) -> bytes:
        kept = offset - self._start
        if 0 <= kept and offset + length <= self._start + len(self._data):
            return self._data[kept: kept + length]
        end = offset + length
        start = max(0, min(offset, end - self.WINDOW))
        if end - start > self._left:
            raise ValueError(f"reads at random past their budget at byte {start}")
        self._left -= end - start
        try:
            reader = self._source.range(start, end, within=self._time)
            try:
                data = read_full(reader, end - start)
            finally:
                reader.close()
        except PartitionError as exc:    # refused, stalled, answered with the whole file, ...
            raise ValueError(str(exc)) from exc
        self._start, self._data = start, data
        return data[offset - start:]


def _content_length(text: str | None) -> int | None:
    """The length a server states, or None when it states none we can use: ASCII digits
    only (``str.isdigit`` accepts "²", which ``int`` then rejects with a traceback)."""
    text = (text or "").strip()
    return int(text) if text.isascii() and text.isdigit() else None


def _setting(given, env: str, default, kind):
    """An explicit value, else the environment's, else the default; positive numbers only."""
    if given is not None:
        return given
    text = os.environ.get(env)
    if text is None:
        return default
    try:
        value = kind(text)
    except ValueError:
        value = -1
    if not value >= 0 or value == float("inf"):
        raise PartitionError(f"{env}={text!r}: not a non-negative finite number")
    return value


def _redirect_handler():
    import urllib.request

    class HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
        """Follow redirects to http and https only (urllib would follow one to ftp://)."""

        def redirect_request(self, req, fp, code, msg, headers, newurl):
            import urllib.parse
            scheme = urllib.parse.urlsplit(newurl).scheme.lower()
            if scheme not in ("http", "https"):
                raise PartitionError(f"{req.full_url}: redirected to {newurl!r}: only http and "
                                     "https are followed")
            return super().redirect_request(req, fp, code, msg, headers, newurl)
    return HttpOnlyRedirects


def check_url(url: str) -> None:
    """Refuse, in one line, a URL that urllib would choke on later with a traceback."""
    import urllib.parse
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise PartitionError(f"{url!r}: not a valid URL (white space or control characters)")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port     # parsing the port raises for a bad one
    except ValueError as exc:
        raise PartitionError(f"{url}: not a valid URL ({exc})") from exc
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise PartitionError(f"{url}: not a valid http(s) URL (no host)")


def _discard(resp, count: int, url: str) -> None:
    while count:
        chunk = resp.read(min(count, 1 << 20))
        if not chunk:
            raise PartitionError(f"{url}: connection closed while skipping to byte {count}")
        count -= len(chunk)


def read_full(reader, n: int) -> bytes:
    """Up to ``n`` bytes; fewer only at the end (pipes and sockets return short reads)."""
    parts, got = [], 0
    while got < n:
        data = reader.read(n - got)
        if not data:
            break
        parts.append(data)
        got += len(data)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def is_url(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


def open_source(spec: str | os.PathLike, **http_options) -> Source:
    """A reader for ``spec``: ``-`` (stdin), an http(s) URL, or a local path."""
    spec = os.fspath(spec)
    if spec == "-":
        source = FileSource(open(sys.stdin.fileno(), "rb", buffering=0, closefd=False), "stdin")
        source.stat = os.fstat(sys.stdin.fileno())
        return source
    if is_url(spec):
        return HttpSource(spec, **http_options)
    try:
        fp = open(spec, "rb", buffering=0)
    except OSError as exc:
        raise PartitionError(f"{spec}: cannot open: {exc.strerror}") from exc
    st = os.fstat(fp.fileno())
    if stat.S_ISREG(st.st_mode):
        source = FileSource(fp, spec, path=spec, size=st.st_size)
    else:   # a pipe, FIFO or device: sequential only, size unknown
        source = FileSource(fp, spec)
    source.stat = st
    return source
