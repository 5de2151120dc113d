"""Every problem of a whole drive as its consumers read it: each metadata file, the
directory cloud-init picks, data only latest/ holds, labels, repeated seeds, and the
consumers' lints (a NoCloud seed gets configdrive/model/nocloud.py's checks instead)."""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable

from partition.tables.config_partition import CONFIG_LABELS

from ..documents import checks
from ..documents.consumers import drive_lints
from ..documents.docscan import MAX_DRIVE_VALUES, check_json
from .drive import Drive
from ..errors import ConfigDriveError
from ..documents.jsondoc import parsed_or_none
from ..model.layout import LATEST
from ..model.nocloud import is_seed, seed_problems
from ..documents.problems import Problem, lint_problems, problems_at
from ..documents.validate import validate_bytes

# The OpenStack versions cloud-init knows (sources/helpers/openstack.py OS_VERSIONS), oldest
# first. It reads the newest of these that the drive has, and latest/ only when it has none.
CLOUD_INIT_VERSIONS = (
    "2012-08-10", "2013-04-04", "2013-10-17", "2015-10-15",
    "2016-06-30", "2016-10-06", "2017-02-22", "2018-08-27",
)

# The files of a drive that are validated, by name inside a version directory.
_DRIVE_FILES = {
    "openstack": {"meta_data.json": "meta_data", "network_data.json": "network_data",
                  "vendor_data.json": "vendor_data", "vendor_data2.json": "vendor_data2"},
    "ec2": {"meta-data.json": "ec2_meta_data"},
}
# Files that cloud-init reads from its chosen directory only; anything only in latest/ is lost.
_VERSIONED_DATA = ("network_data.json", "vendor_data.json", "vendor_data2.json", "user_data")

UTF8_BOM = b"\xef\xbb\xbf"


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

    if is_seed(tree):
        return [Problem(where(rel) if rel else base, pointer, message, severity)
                for rel, pointer, message, severity in seed_problems(tree, drive.label)]
    problems: list[Problem] = []
    if drive.label and drive.label not in CONFIG_LABELS:
        problems.append(Problem(base, "", f"volume label {drive.label!r}: cloud-init and glean look only for "
                                f"{' or '.join(CONFIG_LABELS)}"))
    versions = drive.versions()
    if not versions:
        return problems + [Problem(base, "", "no openstack/<version>/ directory: not a config drive")]

    under_openstack = frozenset(rel.removeprefix("openstack/") for rel in tree if rel.startswith("openstack/"))
    # Most version directories hold the same bytes: each distinct file is checked once
    # (what its checks find does not depend on where the bytes are, only the name).
    checked: dict[tuple[str, bytes], list[Problem]] = {}
    values_left = MAX_DRIVE_VALUES
    for rel, data in tree.items():
        parts = rel.split("/")
        kind = _DRIVE_FILES.get(parts[0], {}).get(parts[-1]) if len(parts) == 3 else None
        if kind is None:
            continue
        if data.startswith(UTF8_BOM):
            # cloud-init decodes as plain UTF-8 and json.loads refuses the BOM
            problems.append(Problem(where(rel), "", "starts with a UTF-8 byte order mark, which cloud-init's "
                                    "JSON reader rejects"))
            data = data[len(UTF8_BOM):]
        if (kind, data) not in checked:
            values_left -= _values(data)
            if values_left < 0:    # the checks would walk every value of every document
                return problems + [Problem(where(rel), "", f"the drive's distinct documents hold more than "
                                           f"{MAX_DRIVE_VALUES} JSON values by this one (a drive's checks read "
                                           "at most that many)")]
            found = validate_bytes(kind, data, "")
            if kind == "meta_data":
                found += problems_at("", checks.content_ref_findings(parsed_or_none(data), under_openstack))
            checked[kind, data] = found
        problems += [replace(problem, source=where(rel)) for problem in checked[kind, data]]

    problems += _repeated_seed_problems(tree, versions, where)
    chosen = cloud_init_version(versions)
    if f"openstack/{chosen}/meta_data.json" not in tree:
        problems.append(Problem(where(f"openstack/{chosen}/meta_data.json"), "",
                                "missing: cloud-init reads this directory and refuses a drive without it"))
    user_data = tree.get(f"openstack/{chosen}/user_data")
    if user_data is not None:
        problems += problems_at(where(f"openstack/{chosen}/user_data"), checks.user_data_findings(len(user_data)))
    if chosen != LATEST and LATEST in versions:
        problems += _latest_only_problems(tree, chosen, where)
    return problems + lint_problems(drive_lints(drive), lambda rel: where(rel) if rel else base)


def _values(data: bytes) -> int:
    """The values of a JSON document; 0 for one its own checks refuse unparsed."""
    try:
        return check_json(data, "")
    except ConfigDriveError:
        return 0


def _repeated_seed_problems(tree: dict[str, bytes], versions: list[str], where) -> list[Problem]:
    """nova draws random_seed anew for every version directory; one seed in several was
    given, not drawn, and every instance built from the same input shares it."""
    seeds: dict[str, list[str]] = {}
    for version in versions:
        doc = parsed_or_none(tree.get(f"openstack/{version}/meta_data.json", b""))
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
    parsed_a, parsed_b = parsed_or_none(a), parsed_or_none(b)
    return parsed_a is not None and parsed_b is not None and parsed_a != parsed_b
