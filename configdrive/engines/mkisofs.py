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
import resource
import sys
from pathlib import Path
from typing import Sequence

from partition.writing.device import identity_of, unlink_if_still

from ..files.dirfd import HeldFile, Refused, walk
from ..errors import ConfigDriveError, one_line

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


def read_source_tree(root: str) -> dict[str, HeldFile]:
    """Every file under ``root`` as {relative path: the file, open}, its bytes read only
    while the image is written (a 3 GiB file once took 3 GiB of memory here).

    Our tree holds regular files only; a symlink, device, or empty directory has no place
    in it, so it is refused instead of silently left out of the image. Each file is judged
    by fstat of the descriptor its bytes come from (configdrive/files/dirfd.py), so an entry
    swapped for a link to a host file after the look cannot put that file in the image."""
    tree: dict[str, HeldFile] = {}
    try:
        for entry in walk(root):
            full = os.path.join(root, entry.rel)
            if entry.fd is None:
                raise ConfigDriveError(f"{full}: {entry.why} (configdrive-mkisofs writes regular files only)")
            tree[entry.rel] = HeldFile(entry.fd, entry.st.st_size, full)
    except Refused as exc:
        close_all(tree)
        raise ConfigDriveError(f"{os.path.join(root, *exc.parts)}: {exc.why}") from exc
    except BaseException:
        close_all(tree)
        raise
    return tree


def close_all(tree: dict[str, HeldFile]) -> None:
    for held in tree.values():
        held.close()


def _raise_fd_limit() -> None:
    """Every file stays open until the image is written: let the process hold as many
    descriptors as it is allowed to (the soft limit is often 1024, the hard one far more)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def make_image(options: dict[str, str]) -> None:
    from ..formats import iso
    from ..drives.builder import source_date_epoch
    from ..version import version
    _raise_fd_limit()
    tree = read_source_tree(options["source"])   # every file judged before the output is touched
    try:
        parent, name, fd, created = _open_output(Path(options["output"]))
        try:
            with open(fd, "wb", closefd=False) as fp:
                iso.write(tree, fp, label=options["label"], publisher=options["publisher"],
                          epoch=source_date_epoch(), application=f"configdrive-mkisofs {version()}")
        except BaseException:
            # No partial image is left: an output that was there is emptied (its caller
            # holds it open), one this build made is removed; both through what was
            # opened, never the name: a link renamed over it since would lead elsewhere.
            if created:
                unlink_if_still(parent, name, identity_of(fd))
            else:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
            raise
        finally:
            os.close(fd)
            os.close(parent)
    finally:
        close_all(tree)


def _open_output(output: Path) -> tuple[int, str, int, bool]:
    """The output file opened once, in its directory (held open too, for the clean-up):
    (directory, name, descriptor, created). An existing file is truncated in place, not
    replaced: openstacksdk hands over a temporary file's name and reads the image back
    through its own descriptor of that inode."""
    flags = os.O_WRONLY | os.O_CLOEXEC
    try:
        parent = os.open(output.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigDriveError(f"{output}: cannot write ({exc.strerror})") from exc
    try:
        try:
            return parent, output.name, os.open(output.name, flags | os.O_CREAT | os.O_EXCL,
                                                0o666, dir_fd=parent), True
        except FileExistsError:
            return parent, output.name, os.open(output.name, flags | os.O_TRUNC, dir_fd=parent), False
    except OSError as exc:
        os.close(parent)
        raise ConfigDriveError(f"{output}: cannot write ({exc.strerror})") from exc


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        options = parse(argv)
    except UsageError as exc:
        print(one_line(f"{PROG}: error: {exc}"), file=sys.stderr)
        return 2
    try:
        make_image(options)
    except ConfigDriveError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(one_line(f"{PROG}: error: {where}{exc.strerror or exc}"), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
