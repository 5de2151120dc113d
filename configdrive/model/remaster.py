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
from dataclasses import dataclass, field
from typing import Any

from .content import Content, InjectedFile
from ..errors import ConfigDriveError
from ..documents.jsondoc import parse_json
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
    if path not in tree:
        return {}
    doc = parse_json(tree[path], f"{source}/{path}")
    if not isinstance(doc, dict):
        raise ConfigDriveError(f"{source}/{path}: must be a JSON object to be changed")
    return doc


