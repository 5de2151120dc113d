"""configdrive: build, read and deploy OpenStack config-drive-v2 images.

The public API: :class:`Content` (what a drive carries), :func:`build` (content -> ISO 9660
or vfat image), :func:`open_drive` (an image, a directory or a whole disk -> a
:class:`Drive` with its tree), :class:`ConfigDriveError` (every refusal, one line), and
for booted guests (configdrive.engines.boot) :class:`Verdict` and :class:`DriveRefused`.

The names are imported on first use (PEP 562): the pytest plugin
(configdrive.engines.pytest_plugin) is loaded by every pytest run of everyone who installed
configdrive, and importing this package must not cost them the drive modules.
"""

from __future__ import annotations

import importlib

# (Also so that `configdrive --help` and a deploy agent that only writes images do not
# pay for the drive builder's modules at start-up.)
_PUBLIC = {"Content": "model.content", "InjectedFile": "model.content",
           "content_from_files": "model.inputs", "Drive": "drives.drive", "build": "drives.builder",
           "open_drive": "drives.reader", "ConfigDriveError": "errors",
           "Verdict": "engines.verdict", "DriveRefused": "engines.boot"}

__all__ = list(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
