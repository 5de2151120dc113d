"""The bare-metal job: write an OS image to a disk, then place the config drive on it.

    deploy("/dev/sda", image="https://.../disk.qcow2", checksum="sha256:...")

The image part lives in ``partition.writing.copy`` (dd semantics, hold-back, checksum,
wipe on failure); the config drive part beside this module, in ``placement`` (with
``convert`` and ``fetch``, the drive in the form the disk can mount). This module only puts
them in order, on one ``Target``: the device is looked up by its name, opened and locked once,
and every step (copy, verify, drive, re-read, wipe, the summary) acts on that handle, so
a name re-pointed meanwhile (a /dev/disk/by-id link udev moves) changes nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from partition.writing.copy import wipe_disk, write_image
from partition.writing.device import Target, held
from partition.errors import PartitionError
from partition.images.image import DEFAULT_BUFFERS, Buffers
from partition.progress import Progress

from ..model.content import Content
from ..errors import ConfigDriveError

# What the copy has to say on the way (a hybrid ISO, a spool to disk): logged; the command
# prints it on stderr unless --quiet.
log = logging.getLogger(__name__)


def deploy(device: str | Target, image: str | None = None, *, checksum: str | None = None,
           drive: Any = None, preserve_on_error: bool = False, verify: bool = False,
           quiet: bool = True, progress_stream=None, create: bool = False,
           image_format: str = "auto", http_options: dict | None = None,
           buffers: Buffers = DEFAULT_BUFFERS, **drive_options) -> dict:
    """Write ``image`` (path, ``-`` or http(s) URL) to ``device`` (a block device or a
    disk image file), verifying ``checksum`` (``ALGO:HEX`` or a checksum file/URL) before
    the image's first MiB goes down; with ``verify``, read the written image back from the
    disk and compare; then place ``drive`` (when given) on the disk. The device is locked
    for all of it (a second deploy onto it is refused); a missing one is made as a disk
    image file only with ``create``. ``image_format``: "auto" (by content), "raw" (the
    bytes as they are), "qcow2", or "raw-declared" (by content, a qcow2 refused:
    open_image says why); ``http_options``: retries, deadline, timeout;
    ``buffers``: how much image data is in flight (partition.images.image.Buffers).

    Returns a summary: {"device": the name given, "target": the device written (kind,
    major:minor, kernel name, by-id name, disk sequence number; a file's device and inode),
    "image": {...} or None, "config_drive": {...} or None}.
    Raises PartitionError / ConfigDriveError with a one-line message."""
    if image is None and drive is None:
        raise ConfigDriveError("deploy: nothing to do (give an image, a config drive, or both)")
    if checksum and image is None:
        raise ConfigDriveError("deploy: --checksum needs --image")
    if verify and image is None:
        raise ConfigDriveError("deploy: --verify needs --image")
    if image is not None and isinstance(drive, Content):
        # The drive's content is checked before the image goes down: a refusal then leaves
        # the target as it was (the drive itself is built after the image, for the disk's
        # sector size).
        from ..drives.builder import checked_tree
        checked_tree(drive, **{k: drive_options[k] for k in ("format", "label", "versions", "ec2", "validate")
                               if drive_options.get(k) is not None})
    with held(device, create=create and image is not None) as target:
        return _deploy(target, image, checksum, drive, preserve_on_error, verify, quiet,
                       progress_stream, image_format, http_options, buffers, drive_options)


def _deploy(target: Target, image, checksum, drive, preserve_on_error, verify, quiet,
            progress_stream, image_format, http_options, buffers, drive_options) -> dict:
    summary: dict[str, Any] = {"device": target.path, "target": target.describe(),
                               "image": None, "config_drive": None}

    if image is not None:
        # A held old partition would outlive the new table in the kernel's view (and the
        # config partition would get no node): refuse before the first byte goes down.
        from partition.writing.rescan import refuse_held_partitions
        refuse_held_partitions(target)
        say = None if quiet else log.info
        progress = Progress(f"writing {image}", None, stream=progress_stream, enabled=not quiet)
        result = write_image(image, target, checksum=checksum, progress=progress,
                             preserve_on_error=preserve_on_error, say=say, verify=verify,
                             image_format=image_format, http_options=http_options,
                             buffers=buffers)
        summary["image"] = {"source": str(image), **result}

    try:
        if drive is not None:
            # The config drive goes in after the image (configdrive/deploy/placement.py).
            from .placement import place_config_drive
            summary["config_drive"] = place_config_drive(target, drive, **drive_options)
        elif image is not None:
            # No drive, but the image's GPT still has to fit this disk (backup at its end).
            from .placement import refresh_disk
            summary["table"] = refresh_disk(target)
    except (ConfigDriveError, PartitionError, KeyboardInterrupt) as exc:
        if image is None or preserve_on_error:
            raise
        # The image is down but the job failed or was stopped (its table refused once read
        # back whole, the drive not placed, Ctrl-C or SIGTERM, which the command turns into
        # KeyboardInterrupt): as after a failed copy, leave no disk that boots.
        note = wipe_disk(target)
        if isinstance(exc, KeyboardInterrupt):
            log.info(note)
            raise
        kind = ConfigDriveError if isinstance(exc, ConfigDriveError) else PartitionError
        raise kind(f"{exc} ({note})") from exc
    return summary
