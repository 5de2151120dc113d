"""Files we write appear whole or not at all: a temporary name beside the final one,
renamed into place only when writing completed."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import BinaryIO, Iterator

from ..errors import ConfigDriveError


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[BinaryIO]:
    """A file that appears under ``path`` only when the block completes.

    The temporary file is made with O_EXCL|O_NOFOLLOW, and made, renamed and removed
    relative to the output directory's descriptor: a link planted at the temporary name
    (by anyone who can write that directory) once had the drive written into its target."""
    tmp = f".{path.name}.tmp{os.getpid()}"
    parent, made = None, False
    try:
        parent = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o666, dir_fd=parent)
        made = True
        with open(fd, "wb") as fp:
            yield fp
        os.replace(tmp, path.name, src_dir_fd=parent, dst_dir_fd=parent)
        made = False
    except OSError as exc:
        raise ConfigDriveError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    finally:
        if made:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=parent)
        if parent is not None:
            os.close(parent)
