"""A ready drive image from a file or an http(s) URL, as the image itself or in the ironic
API's packed form (gzip+base64), never more than a config drive holds."""

from __future__ import annotations

import io

from partition.tables.probe import probe_filesystem
from partition.images.source import open_source

from ..files.drivefiles import MAX_DRIVE_BYTES
from ..errors import ConfigDriveError
from ..formats.pack import unpack


def load_drive(spec: str, http_options: dict | None = None) -> bytes:
    """A drive image from a file or http(s) URL holding either the image itself or the
    ironic API's packed form (gzip+base64), at most MAX_DRIVE_BYTES. ``http_options``: as
    for an image's download (partition.images.source.HttpSource)."""
    with open_source(spec, **(http_options or {})) as src:
        data = src.read_upto(MAX_DRIVE_BYTES + 1)
    if len(data) > MAX_DRIVE_BYTES:
        raise ConfigDriveError(f"{spec}: larger than the {MAX_DRIVE_BYTES}-byte limit for a config drive")
    if probe_filesystem(io.BytesIO(data)) is not None:
        return data
    return unpack(data, source=spec)
