"""Guest paths as checked lists of components, so no step can name a place outside the
guest's root.

nova's CVE-2012-3360/3361 came from joining ``..`` into a host path. Here a guest path is
parsed once into plain names (no ``..``, no empty names, no NUL) and every guest root
resolves those names one at a time from its own top, refusing symbolic links
(CVE-2012-3447) - see :mod:`.hostroot` and :mod:`.debugfs`.
"""

from __future__ import annotations

from ..errors import ConfigDriveError, one_line

GuestPath = tuple[str, ...]


class GuestPathError(ConfigDriveError):
    """A guest path that could lead outside the guest (``..``, a symlink on the way)."""


# Linux's NAME_MAX (ext4's EXT2_NAME_LEN) and PATH_MAX, in bytes: no guest filesystem
# holds more, and a request to a tool stays well inside the line it reads.
NAME_MAX = 255
PATH_MAX = 4096


def parse(path: str) -> GuestPath:
    """``/root/.ssh/authorized_keys`` -> ``("root", ".ssh", "authorized_keys")``.

    A leading ``/`` is allowed (paths are always taken from the guest's root); ``.`` and
    repeated slashes are dropped; ``..`` is refused rather than collapsed, because
    collapsing it would silently write somewhere the caller did not name."""
    if "\0" in path:
        raise GuestPathError(f"guest path {path!r}: contains a NUL byte")
    names = tuple(name for name in path.split("/") if name not in ("", "."))
    if ".." in names:
        raise GuestPathError(f"guest path {one_line(path)}: '..' is not allowed in a guest path")
    if not names:
        raise GuestPathError(f"guest path {path!r}: names no file")
    if len(_bytes(path)) > PATH_MAX:
        raise GuestPathError(f"guest path {path[:40]!r}...: longer than {PATH_MAX} bytes")
    for name in names:
        if len(_bytes(name)) > NAME_MAX:
            raise GuestPathError(f"guest path {path[:40]!r}...: a name longer than {NAME_MAX} bytes")
    return names


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def show(path: GuestPath) -> str:
    """How messages name a guest path: relative to the guest's root, as nova logged them,
    with characters that are not printable escaped (a guest's names are a stranger's)."""
    return one_line("/".join(path) or ".")
