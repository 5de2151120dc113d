"""The machine's shared state (loop devices, mounts), judged by the identity of what one
test made, never by a word in a path.

Other things on the same machine attach loop devices and mount file systems at the same
time: another test run, the e2e guest build (proc and sys mounted under tests/.cache/ of
a checkout that a plain ``git clone`` names ``configdrive``), another engineer's suite.
A test that searched /proc/mounts for "configdrive" failed because of them. So a test
names its loop devices by the backing file's inode and device, and its mounts by the
exact mount point it saw made.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from conftest import out


def loops_backed_by(path) -> list[str]:
    """The loop devices attached to this very file (its st_dev and st_ino, as the kernel
    records them for the backing file), whatever name it was attached by."""
    st = os.stat(path)
    listing = json.loads(out("losetup", "--list", "--json", "--output", "NAME,BACK-INO,BACK-MAJ:MIN")
                         or '{"loopdevices": []}')
    found = []
    for loop in listing.get("loopdevices", []):
        ino, majmin = loop.get("back-ino"), (loop.get("back-maj:min") or "").strip()
        if ino is None or ":" not in majmin:
            continue
        major, minor = (int(n) for n in majmin.split(":"))
        if int(ino) == st.st_ino and os.makedev(major, minor) == st.st_dev:
            found.append(loop["name"])
    return found


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash in paths as octal escapes.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts() -> dict[str, str]:
    """{mount point: major:minor of what is mounted there}, from /proc/self/mountinfo."""
    table = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        table[_unescape(fields[4])] = fields[2]
    return table


def is_mount_point(path) -> bool:
    """Whether exactly ``path`` is a mount point (not a path that contains it or a word)."""
    return os.path.realpath(path) in mounts()


def device_number(node: str) -> str:
    """major:minor of a device node, as mountinfo writes it."""
    rdev = os.stat(node).st_rdev
    return f"{os.major(rdev)}:{os.minor(rdev)}"
