"""Every problem of one metadata document: its JSON Schema (configdrive/documents/schema.py) and the
checks a schema cannot say (configdrive/documents/checks.py), all reported, not only the first."""

from __future__ import annotations

import json
from typing import Any

from . import checks
from .checks import Finding
from ..errors import ConfigDriveError
from .jsondoc import parse_json
from .problems import Problem, problems_at, refusal
from .schema import schema_findings


def validate_document(kind: str, doc: Any, source: str) -> list[Problem]:
    """Every problem of one parsed JSON document of ``kind`` (a key of SCHEMA_FILES)."""
    findings = schema_findings(kind, doc) + checks.non_finite_findings(doc)
    if kind == "meta_data":
        findings += checks.meta_data_findings(doc)
    elif kind == "network_data":
        findings += checks.network_data_findings(doc)
    elif kind == "ironic" and isinstance(doc, dict):
        findings += _ironic_findings(doc)
    return problems_at(source, findings)


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


def validate_bytes(kind: str, data: bytes, source: str) -> list[Problem]:
    """Parse and validate one file's bytes."""
    if kind == "user_data":
        return problems_at(source, checks.user_data_findings(len(data)))
    try:
        doc = parse_json(data, source)
    except ConfigDriveError as exc:
        return [refusal(source, exc)]
    return validate_document(kind, doc, source)
