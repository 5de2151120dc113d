"""The bare-metal job: write an OS image to a disk, then place the config drive on it.

    deploy("/dev/sda", image="https://.../disk.qcow2", checksum="sha256:...")

The image part lives in ``partition.copy`` (dd semantics, hold-back, checksum, wipe on
failure); the config drive part in ``configdrive.placement``. This module only puts them
in order and turns command-line options into calls.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from partition.copy import write_image
from partition.progress import Progress

from .errors import ConfigDriveError


def deploy(device: str, image: str | None = None, *, checksum: str | None = None,
           drive: Any = None, preserve_on_error: bool = False, quiet: bool = True,
           progress_stream=None, **drive_options) -> dict:
    """Write ``image`` (path, ``-`` or http(s) URL) to ``device`` (a block device or a
    disk image file), verifying ``checksum`` (``ALGO:HEX`` or a checksum file/URL) before
    the image's first MiB goes down; then place ``drive`` (when given) on the disk.

    Returns a summary: {"device", "image": {...} or None, "config_drive": {...} or None}.
    Raises PartitionError / ConfigDriveError with a one-line message."""
    if image is None and drive is None:
        raise ConfigDriveError("deploy: nothing to do (give an image, a config drive, or both)")
    if checksum and image is None:
        raise ConfigDriveError("deploy: --checksum needs --image")
    summary: dict[str, Any] = {"device": str(device), "image": None, "config_drive": None}

    if image is not None:
        say = None if quiet else (lambda line: print(f"configdrive: {line}", file=sys.stderr))
        progress = Progress(f"writing {image}", None, stream=progress_stream, enabled=not quiet)
        result = write_image(image, device, checksum=checksum, progress=progress,
                             preserve_on_error=preserve_on_error, say=say)
        summary["image"] = {"source": str(image), **result}

    if drive is not None:
        # The config drive goes in after the image (configdrive/placement.py).
        summary["config_drive"] = _place_config_drive(device, drive, **drive_options)
    elif image is not None:
        # No drive, but the image's GPT still has to fit this disk (backup at its end).
        from .placement import refresh_disk
        summary["table"] = refresh_disk(device)
    return summary


def _place_config_drive(device: str, drive: Any, **options) -> dict:
    try:
        from .placement import place_config_drive
    except ImportError:
        raise ConfigDriveError("deploy: placing a config drive is not available in this build") from None
    return place_config_drive(device, drive, **options)


def deploy_from_args(args: argparse.Namespace, content_factory: Callable | None) -> dict:
    """``configdrive deploy``: the image options here; the drive options (a ready
    ``--config-drive`` or content options) become ``drive`` for the placement step."""
    drive = None
    if args.config_drive:
        drive = args.config_drive
    elif content_factory is not None:
        drive = content_factory(args)
    # How the drive is built (as for ``build``) and where it goes (configdrive/placement.py).
    drive_options = dict(config_size=args.config_size, mbr_type=args.mbr_type, format=args.format,
                         label=args.label, size=args.size, versions=args.versions, ec2=args.ec2,
                         validate=args.validate)
    summary = deploy(args.device, args.image, checksum=args.checksum, drive=drive,
                     preserve_on_error=args.preserve_on_error, quiet=args.quiet, **drive_options)
    if not args.quiet and summary["image"]:
        s = summary["image"]
        print(f"configdrive: wrote {s['source']} ({s['format']}"
              f"{', ' + s['compression'] if s['compression'] else ''}) to {args.device}: "
              f"{s['virtual_size']} bytes in {s['seconds']:.1f}s"
              f"{', ' + s['checksum']['algorithm'] + ' verified' if s['checksum'] else ''}",
              file=sys.stderr)
    if not args.quiet and summary["config_drive"]:
        c, p = summary["config_drive"], summary["config_drive"]["partition"]
        print(f"configdrive: wrote the {c['drive']['format']} drive labelled {c['drive']['label']} to "
              f"partition {p['number']} ({'created, ' if p['created'] else ''}found by {p['identity']}) "
              f"at byte {p['start']} of {args.device}{', node ' + p['node'] if p['node'] else ''}",
              file=sys.stderr)
        for note in c["notes"]:
            print(f"configdrive: note: {note}", file=sys.stderr)
    return summary
