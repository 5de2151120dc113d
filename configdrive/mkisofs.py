"""``configdrive-mkisofs``: genisoimage's command line as nova and openstacksdk call it,
with our ISO writer behind it.

nova runs ``CONF.mkisofs_cmd`` (genisoimage by default) and openstacksdk (through it,
ironic's JSON config drives) the first of genisoimage, mkisofs or xorrisofs on PATH, so an
operator switches to us by configuration alone (``mkisofs_cmd = configdrive-mkisofs``, or
a symlink named genisoimage ahead on PATH). They pass exactly::

    -o PATH -ldots -allow-lowercase -allow-multidot -l [-publisher STRING] -quiet -J -r
    -V LABEL DIR

That list is what we implement; our writer always produces what those flags ask for
(genisoimage's primary names under -l -ldots -allow-lowercase -allow-multidot, Joliet,
Rock Ridge with -r's rationalised modes). Any other option, or one of those missing, would
ask for an image we do not make, so it is refused (exit 2) with one line naming it, rather
than ignored: a caller must never get an image other than the one it asked for.

The image is written into the -o file itself, never renamed over it: openstacksdk passes
the name of a NamedTemporaryFile it holds open and reads the image back through that open
descriptor, so a new file renamed into place would leave it reading the old, empty one.
Exit 0 means the image is complete; on failure a file we created is removed and one that
existed is left empty, so no half-written image is ever taken for a drive.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from pathlib import Path
from typing import Sequence

PROG = "configdrive-mkisofs"

# Flags whose behaviour our writer always has, so they must be present (-quiet may be left
# out: we print nothing on success either way).
REQUIRED_FLAGS = ("-ldots", "-allow-lowercase", "-allow-multidot", "-l", "-J", "-r")
OPTIONAL_FLAGS = ("-quiet",)
# Options that take a value, and where it goes.
VALUE_OPTIONS = {"-o": "output", "-V": "label", "-publisher": "publisher"}


class UsageError(Exception):
    """A command line we cannot honour (exit 2)."""


def parse(argv: Sequence[str]) -> dict[str, str]:
    """The output path, label, publisher and source directory of a genisoimage command
    line, or UsageError naming the first thing we do not implement."""
    found: dict[str, str] = {}
    flags: set[str] = set()
    sources: list[str] = []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg in VALUE_OPTIONS:
            if not args:
                raise UsageError(f"option {arg} needs a value")
            key = VALUE_OPTIONS[arg]
            if key in found:
                raise UsageError(f"option {arg} given twice")
            found[key] = args.pop(0)
        elif arg in REQUIRED_FLAGS or arg in OPTIONAL_FLAGS:
            flags.add(arg)
        elif arg.startswith("-") and arg != "-":
            raise UsageError(f"option {arg} is not implemented (only nova's and openstacksdk's "
                             f"genisoimage options are)")
        else:
            sources.append(arg)
    missing = [f for f in REQUIRED_FLAGS if f not in flags]
    if missing:
        raise UsageError(f"without {missing[0]}: configdrive-mkisofs always writes the image "
                         f"that nova's flags ask for ({' '.join(REQUIRED_FLAGS)})")
    if "output" not in found:
        raise UsageError("option -o PATH is required (writing to standard output is not implemented)")
    if "label" not in found:
        raise UsageError("option -V LABEL is required (a config drive is found by its label)")
    if len(sources) != 1:
        raise UsageError(f"expected one source directory, got {len(sources)}")
    found["source"] = sources[0]
    found.setdefault("publisher", "")
    return found


def read_source_tree(root: str) -> dict[str, bytes]:
    """Every file under ``root`` as {relative path: bytes}.

    Our tree holds regular files only; a symlink, device, or empty directory has no place
    in it, so it is refused instead of silently left out of the image."""
    from .errors import ConfigDriveError
    top = Path(root)
    if not top.is_dir():
        raise ConfigDriveError(f"{root}: not a directory")
    tree: dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(top, onerror=_raise):
        dirnames.sort()
        if not dirnames and not filenames and Path(dirpath) != top:
            raise ConfigDriveError(f"{dirpath}: empty directory (configdrive-mkisofs writes files only)")
        for name in sorted(filenames) + [d for d in dirnames if Path(dirpath, d).is_symlink()]:
            full = Path(dirpath, name)
            mode = os.lstat(full).st_mode
            if not stat.S_ISREG(mode):
                raise ConfigDriveError(f"{full}: not a regular file (configdrive-mkisofs writes files only)")
            tree[full.relative_to(top).as_posix()] = full.read_bytes()
    return tree


def _raise(exc: OSError) -> None:
    raise exc


def make_image(options: dict[str, str]) -> None:
    from . import iso
    from .builder import source_date_epoch
    from .version import version
    tree = read_source_tree(options["source"])   # everything read before the output is touched
    output = Path(options["output"])
    existed = output.exists()
    try:
        with open(output, "wb") as fp:           # O_TRUNC: the same inode the caller holds
            iso.write(tree, fp, label=options["label"], publisher=options["publisher"],
                      epoch=source_date_epoch(), application=f"configdrive-mkisofs {version()}")
    except BaseException:
        with contextlib.suppress(OSError):
            if existed:
                os.truncate(output, 0)
            else:
                output.unlink()
        raise


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        options = parse(argv)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    from .errors import ConfigDriveError
    try:
        make_image(options)
    except ConfigDriveError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{PROG}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
