"""``configdrive validate FILE...``: what each named path holds (a metadata document by
its name, a drive image, a drive directory or a disk) and every problem it has."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from partition.errors import PartitionError

from ..documents.consumers import document_lints
from .drivecheck import UTF8_BOM, validate_drive
from ..errors import ConfigDriveError
from ..model.inputs import MAX_INPUT_BYTES, read_bytes
from ..documents.problems import Problem, lint_problems, refusal
from .reader import open_drive
from ..documents.schema import SCHEMA_FILES
from ..documents.validate import validate_bytes

KINDS = tuple(SCHEMA_FILES) + ("user_data", "drive")

# A file's kind from the end of its name, so that both meta_data.json and
# node1.meta_data.json are recognised. Order matters only where one suffix ends another.
_NAME_SUFFIXES = (
    ("meta_data.json", "meta_data"),
    ("network_data.json", "network_data"),
    ("vendor_data.json", "vendor_data"),
    ("vendor_data2.json", "vendor_data2"),
    ("meta-data.json", "ec2_meta_data"),
    ("ironic.json", "ironic"),
    ("configdrive.json", "ironic"),
    ("user_data", "user_data"),
    ("user-data", "user_data"),
)


def kind_from_name(path: str) -> str | None:
    """The kind of document a file name says it holds, or None."""
    name = Path(path).name.lower()
    for suffix, kind in _NAME_SUFFIXES:
        if name.endswith(suffix):
            return kind
    return None


def validate_paths(paths: Iterable[str], kind: str | None = None) -> list[Problem]:
    """Every problem in the named files, drive images and drive directories."""
    problems: list[Problem] = []
    for path in paths:
        problems += validate_path(path, kind)
    return problems


def validate_path(path: str, kind: str | None = None) -> list[Problem]:
    if kind is not None and kind not in KINDS:
        raise ConfigDriveError(f"--kind {kind}: unknown (use one of {', '.join(KINDS)})")
    if kind == "drive" or (kind is None and path != "-" and Path(path).is_dir()):
        return _validate_drive_at(path)
    kind = kind or kind_from_name(path)
    if kind is None and path != "-" and not _looks_like_json(path):
        return _validate_drive_at(path)
    if kind is None:
        return [Problem(path, "", "cannot tell from the name what this file holds (name it like meta_data.json, "
                        "network_data.json, vendor_data.json, meta-data.json, user_data or *ironic.json, "
                        "or pass --kind)")]
    try:
        data = read_bytes(path, kind, MAX_INPUT_BYTES)
    except ConfigDriveError as exc:
        return [refusal(path, exc)]
    return validate_bytes(kind, data, path) + lint_problems(document_lints(kind, data), lambda _: path)


def _looks_like_json(path: str) -> bool:
    try:
        with open(path, "rb") as fp:
            head = fp.read(64).lstrip(UTF8_BOM).lstrip()
    except OSError:
        return True     # reading it again reports the error under the file's name
    return head[:1] in (b"{", b"[", b"\"")


def _validate_drive_at(path: str) -> list[Problem]:
    try:
        drive = open_drive(path)
    except (ConfigDriveError, PartitionError) as exc:
        return [refusal(path, exc)]
    return validate_drive(drive)
