"""Validation of everything that goes on a drive: each document against its JSON Schema
(schemas/, shipped as ``configdrive.schemas``) and the checks a schema cannot say
(configdrive/checks.py), and whole drives for the pitfalls that make consumers silently
lose data. Every problem is reported, not only the first.

jsonschema is imported only when a document is validated: it costs about 100 ms, and
``configdrive --help`` must stay fast.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, Iterable

from . import checks
from .checks import Finding
from .content import Content, parse_json
from .drive import MAX_DRIVE_BYTES, Drive
from .errors import ConfigDriveError
from .layout import EC2_VERSIONS, LATEST, parse_versions

# The OpenStack versions cloud-init knows (sources/helpers/openstack.py OS_VERSIONS), oldest
# first. It reads the newest of these that the drive has, and latest/ only when it has none.
CLOUD_INIT_VERSIONS = (
    "2012-08-10", "2013-04-04", "2013-10-17", "2015-10-15",
    "2016-06-30", "2016-10-06", "2017-02-22", "2018-08-27",
)
# Labels cloud-init's blkid search accepts (DataSourceConfigDrive.py).
CLOUD_INIT_LABELS = ("config-2", "CONFIG-2")

# What each kind of document is checked against; vendor_data2.json has vendor_data's rules.
SCHEMA_FILES = {
    "meta_data": "meta_data.json",
    "network_data": "network_data.json",
    "vendor_data": "vendor_data.json",
    "vendor_data2": "vendor_data.json",
    "ec2_meta_data": "ec2_meta_data.json",
    "ironic": "ironic.json",
}
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
# The files of a drive that are validated, by name inside a version directory.
_DRIVE_FILES = {
    "openstack": {"meta_data.json": "meta_data", "network_data.json": "network_data",
                  "vendor_data.json": "vendor_data", "vendor_data2.json": "vendor_data2"},
    "ec2": {"meta-data.json": "ec2_meta_data"},
}
# Files that cloud-init reads from its chosen directory only; anything only in latest/ is lost.
_VERSIONED_DATA = ("network_data.json", "vendor_data.json", "vendor_data2.json", "user_data")

_UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Problem:
    """One finding: ``FILE: /json/pointer: message``."""

    source: str
    pointer: str
    message: str
    severity: str = "error"  # "error" or "warning"

    def __str__(self) -> str:
        return f"{self.source}: {self.pointer or '/'}: {self.message}"


# -- documents ------------------------------------------------------------------------

def kind_from_name(path: str) -> str | None:
    """The kind of document a file name says it holds, or None."""
    name = Path(path).name.lower()
    for suffix, kind in _NAME_SUFFIXES:
        if name.endswith(suffix):
            return kind
    return None


def validate_document(kind: str, doc: Any, source: str) -> list[Problem]:
    """Every problem of one parsed JSON document of ``kind`` (a key of SCHEMA_FILES)."""
    findings = _schema_findings(kind, doc)
    if kind == "meta_data":
        findings += checks.meta_data_findings(doc)
    elif kind == "network_data":
        findings += checks.network_data_findings(doc)
    elif kind == "ironic" and isinstance(doc, dict):
        findings += _ironic_findings(doc)
    return _problems(source, findings)


def _ironic_findings(doc: dict) -> list[Finding]:
    found = [_under("/meta_data", f) for f in checks.meta_data_findings(doc.get("meta_data"))]
    # openstacksdk writes no content/ directory: a files entry can never be read.
    found += [_under("/meta_data", f) for f in checks.content_ref_findings(doc.get("meta_data"), frozenset())]
    found += [_under("/network_data", f) for f in checks.network_data_findings(doc.get("network_data"))]
    user_data = doc.get("user_data")
    if isinstance(user_data, (dict, list)):
        user_data = json.dumps(user_data)
    if isinstance(user_data, str):
        found += [_under("/user_data", f) for f in checks.user_data_findings(len(user_data.encode()))]
    return found


def _under(prefix: str, finding: Finding) -> Finding:
    return finding._replace(pointer=prefix + finding.pointer)


def _problems(source: str, findings: Iterable[Finding]) -> list[Problem]:
    """Problems in document order, each reported once."""
    unique = dict.fromkeys(findings)
    return [Problem(source, f.pointer, f.message, f.severity)
            for f in sorted(unique, key=lambda f: _pointer_key(f.pointer))]


def _pointer_key(pointer: str) -> list[tuple[int, int, str]]:
    # /links/10 after /links/9: compare list indexes as numbers
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in pointer.split("/")[1:]]


def _refusal(source: str, exc: ConfigDriveError) -> Problem:
    """A reader's one-line error as a Problem (its ``SOURCE: `` prefix becomes the source)."""
    return Problem(source, "", str(exc).removeprefix(f"{source}: "))


def validate_bytes(kind: str, data: bytes, source: str) -> list[Problem]:
    """Parse and validate one file's bytes."""
    if kind == "user_data":
        return _problems(source, checks.user_data_findings(len(data)))
    try:
        doc = parse_json(data, source)
    except ConfigDriveError as exc:
        return [_refusal(source, exc)]
    return validate_document(kind, doc, source)


# -- schemas --------------------------------------------------------------------------

def load_schema(name: str) -> dict:
    """One schema file of configdrive.schemas, parsed."""
    return json.loads(files("configdrive.schemas").joinpath(name).read_text())


@functools.cache
def _validator(schema_file: str):
    from jsonschema import Draft202012Validator
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012

    # The schemas refer to each other by file name (ironic.json -> meta_data.json), as
    # they do on disk, so that other tools resolve them the same way.
    registry = Registry().with_resources(
        (name, DRAFT202012.create_resource(load_schema(name))) for name in set(SCHEMA_FILES.values()))
    return Draft202012Validator(load_schema(schema_file), registry=registry)


def _schema_findings(kind: str, doc: Any) -> list[Finding]:
    found: list[Finding] = []
    for error in _validator(SCHEMA_FILES[kind]).iter_errors(doc):
        found.extend(_describe(error))
    return found


_TYPE_NAMES = {"object": "an object", "array": "an array", "string": "a string", "integer": "an integer",
               "number": "a number", "boolean": "true or false", "null": "null"}


def _describe(error) -> list[Finding]:
    """jsonschema's error in our words, at the pointer of the value that is wrong."""
    path = list(error.absolute_path)
    value, instance = error.validator_value, error.instance
    kind = error.validator
    if kind == "required":
        # jsonschema reports each missing key with the whole list; duplicates are dropped later
        return [Finding(checks.pointer(*path, key), "required key is missing")
                for key in value if isinstance(instance, dict) and key not in instance]
    if kind == "additionalProperties" and value is False:
        allowed = sorted(error.schema.get("properties", {}))
        return [Finding(checks.pointer(*path, key), f"unknown key (allowed: {', '.join(allowed)})")
                for key in instance if key not in allowed]
    if kind == "type":
        wanted = [value] if isinstance(value, str) else value
        names = [_TYPE_NAMES[t] for t in wanted]
        either = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
        message = f"must be {either}, not {_json_type(instance)}"
    elif kind == "enum":
        message = f"{json.dumps(instance)} is not one of {', '.join(json.dumps(v) for v in value)}"
    elif kind == "const":
        message = f"must be {json.dumps(value)}, not {json.dumps(instance)}"
    elif kind == "minimum":
        message = f"{instance} is less than {value}"
    elif kind == "maximum":
        message = f"{instance} is more than {value}"
    elif kind in ("minItems", "minLength") and value == 1:
        message = "must not be empty"
    else:
        message = error.message
    return [Finding(checks.pointer(*path), message)]


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "true or false"
    return {dict: "an object", list: "an array", str: "a string", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


# -- content about to be built --------------------------------------------------------

def validate_content(content: Content, versions: str | Iterable[str] | None = None,
                     ec2: bool = True) -> list[Problem]:
    """Every problem of the content that a build with these ``versions`` and ``ec2``
    would write. Sources are named like the files (meta_data, network_data, ...)."""
    problems = validate_document("meta_data", content.meta_data, "meta_data")
    # A build writes content/NNNN only for injected files (--file); a files entry given
    # in meta_data itself points at nothing, and cloud-init refuses such a drive.
    problems += _problems("meta_data", checks.content_ref_findings(content.meta_data, frozenset()))
    for kind in ("network_data", "vendor_data", "vendor_data2"):
        doc = getattr(content, kind)
        if doc is not None:
            problems += validate_document(kind, doc, kind)
    if content.ec2 is not None:
        problems += _ec2_section_problems(content.ec2, ec2)
    for i, injected in enumerate(content.files):
        problems += [Problem("files", checks.pointer(i, "path"), message)
                     for message in checks.injected_path_problems(injected.path)]
    problems += _capacity_problems(content, versions, ec2)
    return problems


def _ec2_section_problems(section: dict, ec2: bool) -> list[Problem]:
    from .layout import EC2_KEYS
    if not ec2:
        return [Problem("ec2", "", "given, but the build writes no ec2/ tree (--no-ec2)")]
    unknown = [Problem("ec2", checks.pointer(key), f"unknown key (nova writes: {', '.join(EC2_KEYS)})")
               for key in section if key not in EC2_KEYS]
    return unknown + validate_document("ec2_meta_data", section, "ec2")


def _capacity_problems(content: Content, versions, ec2: bool) -> list[Problem]:
    copies = len(parse_versions(versions)) + (len(EC2_VERSIONS) + 1 if ec2 else 0)
    injected = sum(len(f.data) for f in content.files)
    if content.user_data is not None:
        return _problems("user_data", checks.user_data_findings(len(content.user_data), copies, injected))
    if injected > MAX_DRIVE_BYTES:
        return [Problem("files", "", f"{injected} bytes of injected files: more than a config drive "
                        f"holds ({MAX_DRIVE_BYTES} bytes)")]
    return []


def check_content(content: Content, versions: str | Iterable[str] | None = None, ec2: bool = True) -> None:
    """Raise ConfigDriveError listing every error (warnings pass)."""
    raise_errors(validate_content(content, versions, ec2))


def raise_errors(problems: Iterable[Problem]) -> None:
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise ConfigDriveError("; ".join(map(str, errors)))


def validate_build(content: Content, tree: dict[str, bytes], label: str = "config-2",
                   versions: str | Iterable[str] | None = None, ec2: bool = True,
                   source: str = "drive") -> list[Problem]:
    """Every problem of a build: the content's (named like its files), then whatever
    ``validate`` would find in the drive the build writes (``tree``) and the content did
    not already say. Running the drive's checks on the very tree that is written is what
    keeps ``build --strict`` and ``validate --strict`` in agreement."""
    problems = validate_content(content, versions, ec2)
    # The same finding again in each version directory's copy says nothing new; leaving it
    # out never turns a failing build into a passing one (one of equal severity remains).
    seen = {(p.message, p.severity) for p in problems}
    for problem in validate_drive(Drive(source, "built", label, tree)):
        if (problem.message, problem.severity) not in seen:
            seen.add((problem.message, problem.severity))
            problems.append(problem)
    return problems


def check_build(content: Content, tree: dict[str, bytes], **options: Any) -> None:
    """Raise ConfigDriveError listing every error of :func:`validate_build`."""
    raise_errors(validate_build(content, tree, **options))


# -- whole drives ---------------------------------------------------------------------

def cloud_init_version(versions: Iterable[str]) -> str:
    """The openstack/ directory cloud-init reads, given the ones a drive has."""
    present = set(versions)
    for version in reversed(CLOUD_INIT_VERSIONS):
        if version in present:
            return version
    return LATEST


def validate_drive(drive: Drive) -> list[Problem]:
    """Every file of a drive, and the drive as consumers see it."""
    tree = drive.tree
    base = drive.source.rstrip("/")

    def where(rel: str) -> str:
        return f"{base}/{rel}"

    problems: list[Problem] = []
    if drive.label and drive.label not in CLOUD_INIT_LABELS:
        problems.append(Problem(base, "", f"volume label {drive.label!r}: cloud-init and glean look only for "
                                f"{' or '.join(CLOUD_INIT_LABELS)}"))
    versions = drive.versions()
    if not versions:
        return problems + [Problem(base, "", "no openstack/<version>/ directory: not a config drive")]

    under_openstack = frozenset(rel.removeprefix("openstack/") for rel in tree if rel.startswith("openstack/"))
    for rel, data in tree.items():
        parts = rel.split("/")
        kind = _DRIVE_FILES.get(parts[0], {}).get(parts[-1]) if len(parts) == 3 else None
        if kind is None:
            continue
        if data.startswith(_UTF8_BOM):
            # cloud-init decodes as plain UTF-8 and json.loads refuses the BOM
            problems.append(Problem(where(rel), "", "starts with a UTF-8 byte order mark, which cloud-init's "
                                    "JSON reader rejects"))
            data = data[len(_UTF8_BOM):]
        problems += validate_bytes(kind, data, where(rel))
        if kind == "meta_data":
            doc = _parsed(data)
            problems += _problems(where(rel), checks.content_ref_findings(doc, under_openstack))

    problems += _repeated_seed_problems(tree, versions, where)
    chosen = cloud_init_version(versions)
    if f"openstack/{chosen}/meta_data.json" not in tree:
        problems.append(Problem(where(f"openstack/{chosen}/meta_data.json"), "",
                                "missing: cloud-init reads this directory and refuses a drive without it"))
    user_data = tree.get(f"openstack/{chosen}/user_data")
    if user_data is not None:
        problems += _problems(where(f"openstack/{chosen}/user_data"), checks.user_data_findings(len(user_data)))
    if chosen != LATEST and LATEST in versions:
        problems += _latest_only_problems(tree, chosen, where)
    return problems


def _repeated_seed_problems(tree: dict[str, bytes], versions: list[str], where) -> list[Problem]:
    """nova draws random_seed anew for every version directory; one seed in several was
    given, not drawn, and every instance built from the same input shares it."""
    seeds: dict[str, list[str]] = {}
    for version in versions:
        doc = _parsed(tree.get(f"openstack/{version}/meta_data.json", b""))
        if isinstance(doc, dict) and isinstance(doc.get("random_seed"), str):
            seeds.setdefault(doc["random_seed"], []).append(version)
    return [Problem(where(f"openstack/{found[0]}/meta_data.json"), "/random_seed",
                    f"the same seed in {len(found)} version directories: it was given, not drawn, and every "
                    "instance built from this input gets it (let the build draw one per directory: "
                    "--random-seed)", "warning")
            for found in seeds.values() if len(found) > 1]


def _latest_only_problems(tree: dict[str, bytes], chosen: str, where) -> list[Problem]:
    """Data in latest/ that cloud-init, reading ``chosen``, never sees (glean reads only
    latest/, so both must carry it)."""
    problems = []
    for name in _VERSIONED_DATA:
        latest, dated = tree.get(f"openstack/{LATEST}/{name}"), tree.get(f"openstack/{chosen}/{name}")
        if latest is None:
            continue
        if dated is None:
            problems.append(Problem(where(f"openstack/{LATEST}/{name}"), "",
                                    f"only in latest/: cloud-init reads openstack/{chosen}/ (the newest version "
                                    f"it knows) and will not see it; write it into every version directory"))
        elif _differ(dated, latest, name):
            problems.append(Problem(where(f"openstack/{chosen}/{name}"), "",
                                    "differs from latest/: cloud-init reads this copy, glean reads latest/",
                                    "warning"))
    return problems


def _differ(a: bytes, b: bytes, name: str) -> bool:
    """Whether two copies say different things: JSON is compared parsed (formatting does
    not count); a copy that does not parse is reported on its own, not as a difference."""
    if not name.endswith(".json"):
        return a != b
    parsed_a, parsed_b = _parsed(a), _parsed(b)
    return parsed_a is not None and parsed_b is not None and parsed_a != parsed_b


def _parsed(data: bytes) -> Any:
    """The JSON document in ``data``, or None when it does not parse."""
    try:
        return parse_json(data, "")
    except ConfigDriveError:
        return None


# -- files on the command line --------------------------------------------------------

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
    from .content import read_bytes
    try:
        data = read_bytes(path, kind)
    except ConfigDriveError as exc:
        return [_refusal(path, exc)]
    return validate_bytes(kind, data, path)


def _looks_like_json(path: str) -> bool:
    try:
        with open(path, "rb") as fp:
            head = fp.read(64).lstrip(_UTF8_BOM).lstrip()
    except OSError:
        return True     # reading it again reports the error under the file's name
    return head[:1] in (b"{", b"[", b"\"")


def _validate_drive_at(path: str) -> list[Problem]:
    from partition.errors import PartitionError
    from .drive import open_drive
    try:
        drive = open_drive(path)
    except (ConfigDriveError, PartitionError) as exc:
        return [_refusal(path, exc)]
    return validate_drive(drive)
