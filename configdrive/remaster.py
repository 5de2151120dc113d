"""Re-master an existing drive: start from its tree and replace only what is named.

This is what ironic's conductor does when it patches network_data.json into a drive the
user gave, and what an operator needs to fix one file of a drive nova, ironic or we built
without rebuilding (and so changing) the rest. Everything not named stays byte for byte as
the drive had it, including nova's ``openstack/content/NNNN`` files and the ``files``
entries of meta_data.json that point at them.

Where a named document goes: into every version directory that already holds that file,
or, when none does, into every version directory (so a drive shaped like openstacksdk's
``2012-08-10,latest`` gets it where cloud-init reads). Shortcuts (uuid, hostname, keys, ...),
injected files and a new random_seed (one drawn per directory) change meta_data.json in
every version directory.
"""

from __future__ import annotations

import base64
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .content import Content, InjectedFile
from .errors import ConfigDriveError
from .layout import RANDOM_SEED_BYTES, add_injected_files, json_bytes


@dataclass
class Changes:
    """What the options name; None (or empty) leaves the drive's own."""

    meta_data: dict[str, Any] | None = None
    user_data: bytes | None = None
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)   # file name -> document
    files: list[InjectedFile] = field(default_factory=list)
    shortcuts: dict[str, Any] = field(default_factory=dict)             # Content.apply_shortcuts kwargs
    random_seed: bool = False
    ec2: dict[str, Any] | None = None                                   # keys for ec2/*/meta-data.json


def remaster(tree: dict[str, bytes], changes: Changes, source: str) -> dict[str, bytes]:
    """A new tree: ``tree`` (a drive's) with ``changes`` applied."""
    versions = sorted({path.split("/")[1] for path in tree
                       if path.startswith("openstack/") and path.count("/") == 2
                       and path.split("/")[1] != "content"})
    if not versions:
        raise ConfigDriveError(f"{source}: no openstack/<version>/ directory: not a config drive")
    result = dict(tree)
    if changes.user_data is not None:
        _place(result, [f"openstack/{v}/user_data" for v in versions], changes.user_data)
        _place(result, [p for p in tree if p.startswith("ec2/") and p.endswith("/user-data")], changes.user_data,
               add=False)
    for name, doc in changes.documents.items():
        _place(result, [f"openstack/{v}/{name}" for v in versions], json_bytes(doc))
    if changes.meta_data is not None or changes.files or changes.shortcuts or changes.random_seed:
        _rewrite_meta_data(result, versions, changes, source)
    if changes.ec2:
        ec2_paths = [p for p in tree if p.startswith("ec2/") and p.endswith("/meta-data.json")]
        if not ec2_paths:
            raise ConfigDriveError(f"{source}: has no ec2/ tree to write the ec2 meta-data keys into")
        for path in ec2_paths:
            result[path] = json_bytes({**_existing_document(tree, path, source), **changes.ec2})
    return result


def _place(tree: dict[str, bytes], paths: list[str], data: bytes, add: bool = True) -> None:
    """``data`` under those of ``paths`` that exist, or under all when none does."""
    present = [p for p in paths if p in tree]
    for path in present or (paths if add else []):
        tree[path] = data


def _rewrite_meta_data(tree: dict[str, bytes], versions: list[str], changes: Changes, source: str) -> None:
    documents = {version: dict(changes.meta_data) if changes.meta_data is not None
                 else _existing_document(tree, f"openstack/{version}/meta_data.json", source)
                 for version in versions}
    # New files are numbered past every content path in use anywhere on the drive, so
    # that every directory's entries name the same new content/NNNN.
    taken = [p for p in tree if p.startswith("openstack/content/")]
    taken += ["openstack" + entry["content_path"] for doc in documents.values()
              for entry in (doc.get("files") if isinstance(doc.get("files"), list) else [])
              if isinstance(entry, dict) and isinstance(entry.get("content_path"), str)]
    for version, meta in documents.items():
        content = Content(meta_data=meta)
        content.apply_shortcuts(**changes.shortcuts)
        meta, blobs = add_injected_files(content.meta_data, changes.files, taken=taken)
        if changes.random_seed:
            # drawn per directory, as nova draws it; in every directory, since the drive's
            # shape (nova's or openstacksdk's 2012-08-10,latest) decides which one is read
            meta["random_seed"] = base64.b64encode(os.urandom(RANDOM_SEED_BYTES)).decode()
        tree[f"openstack/{version}/meta_data.json"] = json_bytes(meta)
        tree.update(blobs)


def _existing_document(tree: dict[str, bytes], path: str, source: str) -> dict[str, Any]:
    """The drive's JSON object at ``path`` ({} when absent), to be changed key by key."""
    from .content import parse_json
    if path not in tree:
        return {}
    doc = parse_json(tree[path], f"{source}/{path}")
    if not isinstance(doc, dict):
        raise ConfigDriveError(f"{source}/{path}: must be a JSON object to be changed")
    return doc


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
    """The bytes of ``path`` if it is a regular file (not a link), else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fp:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return fp.read()


def changes_from_options(*, ironic: str | None = None, meta_data: str | None = None,
                         user_data: str | None = None, network_data: str | None = None,
                         vendor_data: str | None = None, vendor_data2: str | None = None,
                         ec2: str | None = None, files: Iterable[str] = (), ssh_keys: Iterable[str] = (),
                         random_seed: bool = False, **shortcuts: str | None) -> Changes:
    """The changes that ``build --from`` options name (paths, ``-`` for stdin)."""
    from .content import (load_json_object, parse_file_option, parse_json, read_bytes,
                          read_ssh_keys)
    changes = Changes(random_seed=random_seed)
    if ironic is not None:
        obj = parse_json(read_bytes(ironic, "ironic configdrive"), ironic)
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
        changes.meta_data = load_json_object(meta_data, "meta_data")
    if user_data is not None:
        changes.user_data = read_bytes(user_data, "user data")
    for name, path, what in (("network_data.json", network_data, "network_data"),
                             ("vendor_data.json", vendor_data, "vendor_data"),
                             ("vendor_data2.json", vendor_data2, "vendor_data2")):
        if path is not None:
            changes.documents[name] = load_json_object(path, what)
    if ec2 is not None:
        changes.ec2 = load_json_object(ec2, "ec2 meta-data")
    changes.files = [parse_file_option(spec) for spec in files]
    keys = [pair for path in ssh_keys for pair in read_ssh_keys(path)]
    changes.shortcuts = {k: v for k, v in shortcuts.items() if v is not None}
    if keys:
        changes.shortcuts["ssh_keys"] = keys
    return changes
