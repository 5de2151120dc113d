"""Every problem of content about to be built, and of the drive a build writes from it:
what ``build`` refuses (errors) or reports (warnings) before a byte is written."""

from __future__ import annotations

from typing import Any, Iterable

from ..documents import checks
from ..documents.consumers import content_lints
from ..model.content import Content
from .drive import Drive
from .drivecheck import validate_drive
from ..files.drivefiles import MAX_DRIVE_BYTES
from ..model.layout import EC2_KEYS, EC2_VERSIONS, parse_versions
from ..documents.problems import Problem, lint_problems, problems_at, raise_errors
from ..documents.validate import validate_document


def validate_content(content: Content, versions: str | Iterable[str] | None = None,
                     ec2: bool = True, consumers: bool = True) -> list[Problem]:
    """Every problem of the content that a build with these ``versions`` and ``ec2``
    would write. Sources are named like the files (meta_data, network_data, ...).
    ``consumers``: add the config-drive consumers' lints (not for a NoCloud seed)."""
    problems = validate_document("meta_data", content.meta_data, "meta_data")
    # A build writes content/NNNN only for injected files (--file); a files entry given
    # in meta_data itself points at nothing, and cloud-init refuses such a drive.
    problems += problems_at("meta_data", checks.content_ref_findings(content.meta_data, frozenset()))
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
    if consumers:
        problems += lint_problems(content_lints(content, ec2), lambda name: name)
    return problems


def _ec2_section_problems(section: dict, ec2: bool) -> list[Problem]:
    if not ec2:
        return [Problem("ec2", "", "given, but the build writes no ec2/ tree (--no-ec2)")]
    unknown = [Problem("ec2", checks.pointer(key), f"unknown key (nova writes: {', '.join(EC2_KEYS)})")
               for key in section if key not in EC2_KEYS]
    return unknown + validate_document("ec2_meta_data", section, "ec2")


def _capacity_problems(content: Content, versions, ec2: bool) -> list[Problem]:
    copies = len(parse_versions(versions)) + (len(EC2_VERSIONS) + 1 if ec2 else 0)
    injected = sum(len(f.data) for f in content.files)
    if content.user_data is not None:
        return problems_at("user_data", checks.user_data_findings(len(content.user_data), copies, injected))
    if injected > MAX_DRIVE_BYTES:
        return [Problem("files", "", f"{injected} bytes of injected files: more than a config drive "
                        f"holds ({MAX_DRIVE_BYTES} bytes)")]
    return []


def check_content(content: Content, versions: str | Iterable[str] | None = None, ec2: bool = True) -> None:
    """Raise ConfigDriveError listing every error (warnings pass)."""
    raise_errors(validate_content(content, versions, ec2))


def validate_build(content: Content, tree: dict[str, bytes], label: str = "config-2",
                   versions: str | Iterable[str] | None = None, ec2: bool = True,
                   source: str = "drive", consumers: bool = True) -> list[Problem]:
    """Every problem of a build: the content's (named like its files), then whatever
    ``validate`` would find in the drive the build writes (``tree``) and the content did
    not already say. Running the drive's checks on the very tree that is written is what
    keeps ``build --strict`` and ``validate --strict`` in agreement. ``consumers``: the
    config-drive consumers' lints (not for a NoCloud seed)."""
    problems = validate_content(content, versions, ec2, consumers=consumers)
    problems += _tree_capacity_problems(tree, source, problems)
    # The same finding again in each version directory's copy says nothing new; leaving it
    # out never turns a failing build into a passing one (one of equal severity remains).
    seen = {(p.message, p.severity) for p in problems}
    for problem in validate_drive(Drive(source, "built", label, tree)):
        if (problem.message, problem.severity) not in seen:
            seen.add((problem.message, problem.severity))
            problems.append(problem)
    return problems


def _tree_capacity_problems(tree: dict[str, bytes], source: str, found: list[Problem]) -> list[Problem]:
    """A tree larger than a config drive holds, when the content's capacity check (user
    data, injected files) has not said so already: a large meta_data.json or
    network_data.json is written into every version directory (a 60 MiB meta_data.json
    made a 692 MB drive)."""
    size = sum(map(len, tree.values()))
    if size <= MAX_DRIVE_BYTES or any(p.severity == "error" and p.source in ("user_data", "files") for p in found):
        return []
    largest = max(tree, key=lambda path: len(tree[path]))
    copies = sum(1 for data in tree.values() if data == tree[largest])
    return [Problem(source, "", f"the drive's files take {size} bytes, more than a config drive holds "
                    f"({MAX_DRIVE_BYTES} bytes): {largest} alone is {len(tree[largest])} bytes"
                    + (f", written {copies} times" if copies > 1 else ""))]


def check_build(content: Content, tree: dict[str, bytes], **options: Any) -> None:
    """Raise ConfigDriveError listing every error of :func:`validate_build`."""
    raise_errors(validate_build(content, tree, **options))
