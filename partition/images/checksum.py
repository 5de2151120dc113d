"""Expected image checksums and hashing while streaming.

``--checksum`` is ``ALGO:HEX`` (sha256, sha512, md5), or a checksum file or URL in the
usual ``HEX  NAME`` form written by sha256sum (BSD ``SHA256 (NAME) = HEX`` also works, and
a file holding one bare ``HEX`` too).
The digest is over the image as published (the bytes of the file or download, before any
decompression), as ironic and the *sum tools compute it.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass

from ..errors import PartitionError

ALGORITHMS = {"md5": 32, "sha256": 64, "sha512": 128}   # name -> hex digits
BY_LENGTH = {length: name for name, length in ALGORITHMS.items()}
MAX_CHECKSUM_FILE = 1 << 20

_SPEC = re.compile(r"^(md5|sha256|sha512):([0-9a-fA-F]+)$", re.IGNORECASE)
# The name is optional: a file holding the digest alone is what ironic's image_checksum
# URLs often serve (and IPA accepts), one line without a name.
_GNU_LINE = re.compile(r"^\\?([0-9a-fA-F]{32,128})(?:\s+[* ]?(.*))?$")
_BSD_LINE = re.compile(r"^(MD5|SHA256|SHA512)\s*\((.*)\)\s*=\s*([0-9a-fA-F]+)$", re.IGNORECASE)


@dataclass(frozen=True)
class Expected:
    algorithm: str
    hexdigest: str

    def new(self):
        return hashlib.new(self.algorithm)

    def check(self, actual: str, image_name: str) -> None:
        if actual.lower() != self.hexdigest:
            raise PartitionError(f"{image_name}: {self.algorithm} checksum mismatch: expected "
                                 f"{self.hexdigest}, got {actual.lower()}")


def parse_checksum(spec: str, image_name: str, http_options: dict | None = None) -> Expected:
    """``ALGO:HEX``, or a checksum file/URL whose line for ``image_name`` (by base name;
    a file with a single line needs no name) gives the digest. ``http_options``: as for
    the image's own download (partition.images.source.HttpSource)."""
    m = _SPEC.match(spec.strip())
    if m:
        return _expected(m.group(1).lower(), m.group(2), spec)
    text = _read_checksum_file(spec, http_options or {})
    wanted = os.path.basename(image_name.split("?")[0].rstrip("/"))
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        bsd, gnu = _BSD_LINE.match(line), _GNU_LINE.match(line)
        if bsd:
            entries.append((bsd.group(3), bsd.group(2), bsd.group(1).lower()))
        elif gnu:
            entries.append((gnu.group(1), gnu.group(2) or "", None))
    named = [e for e in entries if os.path.basename(e[1].strip().lstrip("*")) == wanted]
    chosen = named or (entries if len(entries) == 1 else [])
    if len(chosen) != 1:
        why = "no line names" if not chosen else "several lines name"
        raise PartitionError(f"{spec}: {why} {wanted!r}")
    hexdigest, _, algorithm = chosen[0]
    if algorithm is None:
        algorithm = BY_LENGTH.get(len(hexdigest))
        if algorithm is None:
            raise PartitionError(f"{spec}: a {len(hexdigest)}-digit checksum is none of "
                                 f"{', '.join(ALGORITHMS)}")
    return _expected(algorithm, hexdigest, spec)


def _expected(algorithm: str, hexdigest: str, spec: str) -> Expected:
    if len(hexdigest) != ALGORITHMS[algorithm]:
        raise PartitionError(f"{spec}: a {algorithm} checksum has {ALGORITHMS[algorithm]} hex "
                             f"digits, not {len(hexdigest)}")
    return Expected(algorithm, hexdigest.lower())


def _read_checksum_file(spec: str, http_options: dict) -> str:
    """The checksum file's text, read once. A local one is opened once and judged by what
    was opened (a regular file; non-blocking, so a FIFO cannot hold the open up), never
    by a look at its name first: a name looked at, then opened, can name a FIFO or a
    device by then."""
    from .source import is_url, open_source
    neither = PartitionError(f"--checksum {spec!r}: neither ALGO:HEX ({', '.join(ALGORITHMS)}) "
                             "nor a checksum file or URL")
    if is_url(spec):
        with open_source(spec, **http_options) as src:
            data = src.read_upto(MAX_CHECKSUM_FILE + 1)
    else:
        try:
            fd = os.open(spec, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise neither from None
        except OSError as exc:
            raise PartitionError(f"{spec}: cannot open: {exc.strerror}") from exc
        data = b""
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise neither
            while len(data) <= MAX_CHECKSUM_FILE and (piece := os.read(fd, MAX_CHECKSUM_FILE + 1)):
                data += piece
        finally:
            os.close(fd)
    if len(data) > MAX_CHECKSUM_FILE:
        raise PartitionError(f"{spec}: a checksum file over {MAX_CHECKSUM_FILE} bytes")
    return data.decode("utf-8", "replace")


class HashingReader:
    """Pass reads through, hashing and counting every byte (the chain's "verify" link)."""

    def __init__(self, inner, hasher=None):
        self._inner, self.hasher, self.count = inner, hasher, 0

    def readinto(self, buf) -> int:
        n = self._inner.readinto(buf)
        if n:
            if self.hasher is not None:
                self.hasher.update(memoryview(buf)[:n])
            self.count += n
        return n

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        if data:
            if self.hasher is not None:
                self.hasher.update(data)
            self.count += len(data)
        return data
