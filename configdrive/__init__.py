"""configdrive: build, read and deploy OpenStack config-drive-v2 images.

The public API: :class:`Content` (what a drive carries), :func:`build` (content -> ISO 9660
or vfat image), :func:`open_drive` (an image, a directory or a whole disk -> a
:class:`Drive` with its tree), and :class:`ConfigDriveError` (every refusal, one line).
"""

from .content import Content, InjectedFile, content_from_files
from .drive import Drive, build, open_drive
from .errors import ConfigDriveError

__all__ = ["Content", "InjectedFile", "content_from_files", "Drive", "build", "open_drive", "ConfigDriveError"]
