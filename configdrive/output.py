"""Files we write appear whole or not at all: a temporary name beside the final one,
renamed into place only when writing completed."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import BinaryIO, Iterator

from .errors import ConfigDriveError


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[BinaryIO]:
    """A file that appears under ``path`` only when the block completes."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fp:
            yield fp
        os.replace(tmp, path)
    except OSError as exc:
        raise ConfigDriveError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    finally:
        tmp.unlink(missing_ok=True)
