"""What the command line's files say: each read with a bound, parsed and type-checked, and
gathered into a :class:`~configdrive.model.content.Content` (build) or
:class:`~configdrive.model.remaster.Changes` (build --from). ``-`` is standard input."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Iterable

from .content import Content, InjectedFile
from ..files.dirfd import Refused, open_regular
from ..errors import ConfigDriveError
from ..documents.jsondoc import parse_json
from .nocloud import parse_network_config
from .remaster import Changes
from ..documents.schema import parse_checked


def content_from_files(
    *,
    ironic: str | None = None,
    meta_data: str | None = None,
    user_data: str | None = None,
    network_data: str | None = None,
    vendor_data: str | None = None,
    vendor_data2: str | None = None,
    ec2: str | None = None,
    network_config: str | None = None,
    files: Iterable[str] = (),
    ssh_keys: Iterable[str] = (),
    uuid: str | None = None,
    name: str | None = None,
    hostname: str | None = None,
    admin_pass: str | None = None,
    random_seed: bool = False,
) -> Content:
    """The content that the command-line options describe (paths, ``-`` for stdin).

    An ironic object is the base; separate files replace its parts; shortcuts win last.
    """
    content = Content()
    if ironic is not None:
        content = Content.from_ironic(parse_json(read_bytes(ironic, "ironic configdrive", MAX_INPUT_BYTES), ironic),
                                      ironic)
    if meta_data is not None:
        content.meta_data = load_document(meta_data, "meta_data")
        content.files.extend(carry_over_files(content.meta_data, meta_data))
    if user_data is not None:
        content.user_data = read_bytes(user_data, "user data", MAX_INPUT_BYTES)
    if network_data is not None:
        content.network_data = load_document(network_data, "network_data")
    if vendor_data is not None:
        content.vendor_data = load_document(vendor_data, "vendor_data")
    if vendor_data2 is not None:
        content.vendor_data2 = load_document(vendor_data2, "vendor_data2")
    if ec2 is not None:
        content.ec2 = load_document(ec2, "ec2_meta_data")
    if network_config is not None:
        content.network_config = read_bytes(network_config, "network config", MAX_INPUT_BYTES)
        parse_network_config(content.network_config, network_config)   # refused here, naming the file
    content.files.extend(parse_file_option(spec) for spec in files)
    keys = [pair for path in ssh_keys for pair in read_ssh_keys(path)]
    content.apply_shortcuts(uuid=uuid, name=name, hostname=hostname, ssh_keys=keys, admin_pass=admin_pass)
    content.random_seed = random_seed
    content.fill_defaults()
    return content


def changes_from_options(*, ironic: str | None = None, meta_data: str | None = None,
                         user_data: str | None = None, network_data: str | None = None,
                         vendor_data: str | None = None, vendor_data2: str | None = None,
                         ec2: str | None = None, files: Iterable[str] = (), ssh_keys: Iterable[str] = (),
                         random_seed: bool = False, **shortcuts: str | None) -> Changes:
    """The changes that ``build --from`` options name (paths, ``-`` for stdin)."""
    changes = Changes(random_seed=random_seed)
    if ironic is not None:
        obj = parse_json(read_bytes(ironic, "ironic configdrive", MAX_INPUT_BYTES), ironic)
        given = Content.from_ironic(obj, ironic)
        if "meta_data" in obj:
            changes.meta_data = given.meta_data
        if "user_data" in obj:
            changes.user_data = given.user_data
        for name, doc in (("network_data.json", given.network_data), ("vendor_data2.json", given.vendor_data2)):
            if doc is not None:
                changes.documents[name] = doc
    if meta_data is not None:
        # its files entries are kept as they are: they point into the drive's own content/
        changes.meta_data = load_document(meta_data, "meta_data")
    if user_data is not None:
        changes.user_data = read_bytes(user_data, "user data", MAX_INPUT_BYTES)
    for name, path, what in (("network_data.json", network_data, "network_data"),
                             ("vendor_data.json", vendor_data, "vendor_data"),
                             ("vendor_data2.json", vendor_data2, "vendor_data2")):
        if path is not None:
            changes.documents[name] = load_document(path, what)
    if ec2 is not None:
        changes.ec2 = load_document(ec2, "ec2_meta_data")
    changes.files = [parse_file_option(spec) for spec in files]
    keys = [pair for path in ssh_keys for pair in read_ssh_keys(path)]
    changes.shortcuts = {k: v for k, v in shortcuts.items() if v is not None}
    if keys:
        changes.shortcuts["ssh_keys"] = keys
    return changes


# The most we read of one metadata input (a JSON document, user data, a key file): the
# largest config drive (ironic's 64 MiB, drive.MAX_DRIVE_BYTES) could not hold more, and
# a sparse file or /dev/zero must not be read whole only to be refused afterwards.
MAX_INPUT_BYTES = 64 << 20


def read_bytes(path: str, what: str = "input", limit: int | None = None, *, regular: bool = False,
               below: int = 0) -> bytes:
    """A file's bytes; ``-`` is standard input. With ``limit``, a file holding more than
    ``limit`` bytes is refused after reading at most one byte more. With ``regular``, the
    file itself (and the ``below`` directories above it) must be a regular file (and
    directories), opened without following a link and judged by fstat of that descriptor
    (configdrive/files/dirfd.py): a name in a directory others can write may be swapped for
    a link to a host file at any moment."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read(-1 if limit is None else limit + 1)
        else:
            with open(open_regular(path, below)[0] if regular else path, "rb") as fp:
                data = fp.read(-1 if limit is None else limit + 1)
    except Refused as exc:
        hint = "; name the file it points to" if exc.link else ""
        raise ConfigDriveError(f"{path}: cannot read {what} ({exc.why}{hint})") from exc
    except OSError as exc:
        raise ConfigDriveError(f"{path}: cannot read {what} ({exc.strerror or exc})") from exc
    if limit is not None and len(data) > limit:
        raise ConfigDriveError(f"{path}: {what} is larger than {limit} bytes")
    return data


# A password is a line; a file much larger than one was named by mistake.
MAX_PASSWORD_FILE = 4096


def read_admin_pass(path: str) -> str:
    """The admin password from the first line of a file (or stdin), so that it never
    appears on a command line, which every user of the machine can read through ps."""
    text = read_bytes(path, "admin password", limit=MAX_PASSWORD_FILE).decode("utf-8", "surrogateescape")
    password = text.split("\n", 1)[0].removesuffix("\r")
    if not password:
        raise ConfigDriveError(f"{path}: no admin password on the first line")
    try:
        password.encode()
    except UnicodeEncodeError as exc:
        raise ConfigDriveError(f"{path}: the admin password is not UTF-8 text") from exc
    return password


def read_ssh_keys(path: str) -> list[tuple[str, str]]:
    """Keys from an authorized_keys-style file: one per line, comments and blanks skipped.
    A key's name is its comment field, else the file's stem."""
    text = read_bytes(path, "ssh key", MAX_INPUT_BYTES).decode("utf-8", "replace")
    keys = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) < 2 or not (parts[0].startswith(("ssh-", "ecdsa-", "sk-"))):
            raise ConfigDriveError(f"{path}: line {lineno}: not an OpenSSH public key")
        name = parts[2] if len(parts) > 2 else Path(path).stem
        keys.append((name, line))
    if not keys:
        raise ConfigDriveError(f"{path}: no SSH public key in the file")
    return keys


def load_document(path: str, kind: str) -> dict[str, Any]:
    """A metadata file of ``kind`` (meta_data, network_data, ...), parsed and its types
    checked against the kind's schema, so that nothing downstream meets a list where an
    object goes."""
    return parse_checked(kind, read_bytes(path, kind, MAX_INPUT_BYTES), path)


def split_file_spec(spec: str) -> tuple[str, str]:
    """``GUEST_PATH=LOCAL_FILE`` from ``--file`` as (guest path, local path); ValueError
    when either is missing."""
    guest, sep, local = spec.partition("=")
    if not sep or not guest or not local:
        raise ValueError(f"{spec!r}: expected GUEST_PATH=LOCAL_FILE")
    return guest, local


def parse_file_option(spec: str) -> InjectedFile:
    """The file ``--file GUEST_PATH=LOCAL_FILE`` asks for, read."""
    try:
        guest, local = split_file_spec(spec)
    except ValueError as exc:
        raise ConfigDriveError(f"--file {exc}") from exc
    return InjectedFile(guest, read_bytes(local, f"file for {guest}", MAX_INPUT_BYTES, regular=True))


# nova's content paths: /content/NNNN (api/metadata/base.py, "%04i" % index).
NOVA_CONTENT_PATH = re.compile(r"/content/[0-9]{4}")


def carry_over_files(meta_data: dict[str, Any], meta_data_path: str) -> list[InjectedFile]:
    """nova's meta_data.json taken from a drive (``X/openstack/<version>/meta_data.json``)
    refers to its injected files as ``files`` entries whose content is
    ``X/openstack/content/NNNN``. Those found there become injected files (the layout
    numbers them anew, in the same order) and their entries leave ``meta_data``; an entry
    whose file is not there stays, for validation to report.

    Only nova's exact ``/content/NNNN`` form is followed, and never through a symlink: the
    document may come from someone else, and must not pull host files into a drive."""
    entries = meta_data.get("files")
    if meta_data_path == "-" or not isinstance(entries, list):
        return []
    content_dir = Path(meta_data_path).parent.parent / "content"
    kept: list[Any] = []
    carried: list[InjectedFile] = []
    for entry in entries:
        data = None
        if isinstance(entry, dict) and isinstance(entry.get("path"), str) \
                and isinstance(entry.get("content_path"), str) and NOVA_CONTENT_PATH.fullmatch(entry["content_path"]):
            data = _read_regular_file(content_dir / entry["content_path"].rsplit("/", 1)[1])
        if data is None:
            kept.append(entry)
        else:
            carried.append(InjectedFile(entry["path"], data))
    if carried:
        if kept:
            meta_data["files"] = kept
        else:
            del meta_data["files"]
    return carried


def _read_regular_file(path: Path) -> bytes | None:
    """The bytes of ``path`` (``X/openstack/content/NNNN``) if it is a regular file in a
    directory ``content``, neither of them a link, else None."""
    try:
        return read_bytes(str(path), "content file", MAX_INPUT_BYTES, regular=True, below=1)
    except ConfigDriveError as exc:
        if isinstance(exc.__cause__, (Refused, OSError)):   # a link, a FIFO, no such file
            return None
        raise                                                  # there, but too large
