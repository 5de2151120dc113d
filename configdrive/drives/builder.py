"""Building a drive: content -> checked tree (configdrive/model/layout.py, or a NoCloud seed)
-> ISO 9660 or vfat image, written to a path (atomically), a stream or bytes."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, BinaryIO, Mapping

from ..model.content import Content
from ..errors import ConfigDriveError
from ..model.layout import build_tree
from ..model.nocloud import FORMATS as NOCLOUD_FORMATS, LABEL as NOCLOUD_LABEL
from ..files.output import atomic_output

FORMATS = ("iso", "vfat", *NOCLOUD_FORMATS)
DEFAULT_LABEL = "config-2"


def source_date_epoch() -> int | None:
    """SOURCE_DATE_EPOCH (reproducible-builds.org) as an int, or None when unset."""
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise ConfigDriveError(f"SOURCE_DATE_EPOCH={value!r}: not a whole number of seconds") from exc


def write_image(tree: Mapping[str, bytes], out: BinaryIO, *, format: str = "iso",
                label: str = DEFAULT_LABEL, size: int | None = None,
                sector_size: int | None = None) -> None:
    """Write ``tree`` as a filesystem image of ``format`` to the binary stream ``out``.
    ``size`` and ``sector_size`` (the FAT's logical sector, 512 unless given) are vfat's;
    ISO 9660 has its own fixed 2048-byte blocks and ignores both."""
    epoch = source_date_epoch()
    if format == "iso":
        from ..formats import iso
        iso.write(tree, out, label=label, epoch=epoch)
    elif format == "vfat":
        from ..formats import vfat
        vfat.write(tree, out, label=label, size=size, epoch=epoch, sector_size=sector_size or vfat.SECTOR)
    else:
        raise ConfigDriveError(f"format {format!r}: unknown (use one of {', '.join(FORMATS)})")


def default_label(format: str) -> str:
    """config-2 for a config drive, cidata for a NoCloud seed."""
    return NOCLOUD_LABEL if format in NOCLOUD_FORMATS else DEFAULT_LABEL


def drive_tree(content: Content, format: str = "iso", versions: str | list[str] | None = None,
               ec2: bool = True) -> tuple[dict[str, bytes], str]:
    """The files a drive of ``format`` holds, and the filesystem ("iso" or "vfat") that
    carries them: a config drive's tree, or the same content as a NoCloud seed."""
    if format in NOCLOUD_FORMATS:
        from ..model.nocloud import seed_tree
        return seed_tree(content), NOCLOUD_FORMATS[format]
    return build_tree(content, versions=versions, ec2=ec2), format


def build(content: Content, out: str | os.PathLike | BinaryIO | None = None, *,
          format: str = "iso", label: str | None = None, size: int | None = None,
          versions: str | list[str] | None = None, ec2: bool = True,
          validate: bool = True, sector_size: int | None = None) -> bytes | None:
    """Build a config drive. Returns the image bytes when ``out`` is None, else writes
    it to the path or binary stream ``out`` and returns None.

    With ``validate`` the content is checked first and every error is raised at once.
    ``size`` and ``sector_size`` are the vfat image's (see :func:`write_image`).
    """
    label = label or default_label(format)
    tree, fs = checked_tree(content, format=format, label=label, versions=versions, ec2=ec2,
                            validate=validate)
    return write_drive(tree, out, format=fs, label=label, size=size, sector_size=sector_size)


def checked_tree(content: Content, *, format: str = "iso", label: str | None = None,
                 versions: str | list[str] | None = None, ec2: bool = True,
                 validate: bool = True) -> tuple[dict[str, bytes], str]:
    """The tree :func:`build` writes and its filesystem, after the same checks (every
    error raised at once): what a deploy runs before its image goes down, so that content
    that would be refused never costs the target its old disk."""
    content.fill_defaults()
    label = label or default_label(format)
    tree, fs = drive_tree(content, format, versions=versions, ec2=ec2)
    if validate:
        from .buildcheck import check_build   # jsonschema: only when a build is checked
        check_build(content, tree, label=label, versions=versions, ec2=ec2,
                    consumers=format not in NOCLOUD_FORMATS)
    return tree, fs


def write_drive(tree: Mapping[str, bytes], out: str | os.PathLike | BinaryIO | None = None,
                **options: Any) -> bytes | None:
    """Write ``tree`` as an image (options of :func:`write_image`) to the path or binary
    stream ``out``, or return its bytes when ``out`` is None."""
    if out is None:
        buffer = io.BytesIO()
        write_image(tree, buffer, **options)
        return buffer.getvalue()
    if isinstance(out, (str, os.PathLike)):
        # Straight into the file (vfat leaves its zeros as a hole), under a temporary name
        # so that a failed build never leaves a half-written image under the final one.
        with atomic_output(Path(out)) as fp:
            write_image(tree, fp, **options)
    elif _seekable(out):
        write_image(tree, out, **options)
    else:  # a pipe: the writers seek, so build in memory first
        buffer = io.BytesIO()
        write_image(tree, buffer, **options)
        out.write(buffer.getbuffer())
    return None


def _seekable(fp: BinaryIO) -> bool:
    try:
        return fp.seekable()
    except (AttributeError, OSError, ValueError):
        return False
