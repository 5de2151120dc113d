"""The form drives travel in through the ironic API: gzip, then base64 (openstacksdk's
``pack``), and back. Unpacking is bounded: a drive may be at most 64 MiB, as ironic says,
so a small hostile string cannot inflate into gigabytes."""

from __future__ import annotations

import base64
import binascii
import gzip
import zlib

from .drive import MAX_DRIVE_BYTES
from .errors import ConfigDriveError


def pack(image: bytes) -> str:
    """gzip + base64 of a drive image. mtime 0 keeps the output reproducible."""
    return base64.b64encode(gzip.compress(image, compresslevel=9, mtime=0)).decode("ascii")


def unpack(text: str | bytes, source: str = "input", limit: int = MAX_DRIVE_BYTES) -> bytes:
    """The drive image inside a packed string. Like ironic-python-agent, a payload that
    is base64 but not gzip is taken as the raw image."""
    if isinstance(text, str):
        text = text.encode("ascii", "replace")
    compact = b"".join(text.split())
    try:
        raw = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigDriveError(f"{source}: not base64 ({exc})") from None
    if not raw:
        raise ConfigDriveError(f"{source}: empty payload")
    if raw[:2] != b"\x1f\x8b":
        if len(raw) > limit:
            raise ConfigDriveError(f"{source}: drive is {len(raw)} bytes, over the {limit}-byte limit")
        return raw
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        image = inflater.decompress(raw, limit + 1)
    except zlib.error as exc:
        raise ConfigDriveError(f"{source}: corrupt gzip data ({exc})") from None
    if len(image) > limit:
        raise ConfigDriveError(f"{source}: drive inflates past the {limit}-byte limit")
    if not inflater.eof:
        raise ConfigDriveError(f"{source}: gzip data is truncated")
    if inflater.unused_data.strip(b"\0"):
        raise ConfigDriveError(f"{source}: {len(inflater.unused_data)} bytes of trailing data after the gzip stream")
    return image
