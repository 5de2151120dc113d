"""The JSON Schemas (schemas/, shipped as ``configdrive.schemas``) and the type boundary:
every metadata document passes :func:`check_types` before code reads a value, and
jsonschema's errors are reworded as findings at the pointer of the wrong value.

jsonschema is imported, and a validator built, only when a document of that kind is
checked, and only the schemas a validator refers to are read: the import alone costs about
30 ms, and ``configdrive --help`` must stay fast.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from .checks import Finding, pointer
from ..errors import ConfigDriveError
from .jsondoc import parse_json
from .problems import Problem, pointer_key

# What each kind of document is checked against; vendor_data2.json has vendor_data's rules.
SCHEMA_FILES = {
    "meta_data": "meta_data.json",
    "network_data": "network_data.json",
    "vendor_data": "vendor_data.json",
    "vendor_data2": "vendor_data.json",
    "ec2_meta_data": "ec2_meta_data.json",
    "ironic": "ironic.json",
}


def check_types(kind: str, doc: Any, source: str) -> None:
    """The boundary every command passes a metadata document through before it reads a
    value: raise on the first value (in document order) whose JSON type is not the one
    its schema gives that place, naming the file and the JSON pointer.

    Only types are enforced here. Code that reads a document must then cope with keys
    that are missing or values out of range (``validate`` reports those), but never with
    a list where an object goes: that was a traceback in every command (issue 11)."""
    wrong = [error for error in _validator(SCHEMA_FILES[kind]).iter_errors(doc) if error.validator == "type"]
    if wrong:
        first = min(wrong, key=lambda error: pointer_key(pointer(*error.absolute_path)))
        finding = _describe(first)[0]
        more = f" (and {len(wrong) - 1} more values of the wrong type)" if len(wrong) > 1 else ""
        raise ConfigDriveError(str(Problem(source, finding.pointer, finding.message + more)))


def parse_checked(kind: str, data: bytes, source: str) -> Any:
    """A metadata file's bytes, parsed and through the type boundary."""
    doc = parse_json(data, source)
    check_types(kind, doc, source)
    return doc


# The package's schemas (a link to schemas/ in a checkout), read beside this file rather
# than through importlib.resources, whose import pulls tempfile, shutil and zipfile in.
_SCHEMA_DIR = Path(__file__).parent.parent / "schemas"


def load_schema(name: str) -> dict:
    """One schema file of configdrive.schemas, parsed (a new copy each call)."""
    return json.loads((_SCHEMA_DIR / name).read_text())


@functools.cache
def _validator(schema_file: str):
    """One validator per schema file, built on first use and kept for the process."""
    from jsonschema import Draft202012Validator
    return Draft202012Validator(load_schema(schema_file), registry=_registry())


@functools.cache
def _registry():
    """The schemas refer to each other by file name (ironic.json -> meta_data.json), as
    they do on disk, so that other tools resolve them the same way; a schema is read only
    when a reference first needs it."""
    from referencing import Registry
    from referencing.exceptions import NoSuchResource
    from referencing.jsonschema import DRAFT202012

    @functools.cache   # each validation starts from this registry: read a file once
    def retrieve(name: str):
        if name not in set(SCHEMA_FILES.values()):
            raise NoSuchResource(ref=name)
        return DRAFT202012.create_resource(load_schema(name))
    return Registry(retrieve=retrieve)


def schema_findings(kind: str, doc: Any) -> list[Finding]:
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
        return [Finding(pointer(*path, key), "required key is missing")
                for key in value if isinstance(instance, dict) and key not in instance]
    if kind == "additionalProperties" and value is False:
        allowed = sorted(error.schema.get("properties", {}))
        return [Finding(pointer(*path, key), f"unknown key (allowed: {', '.join(allowed)})")
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
    return [Finding(pointer(*path), message)]


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "true or false"
    return {dict: "an object", list: "an array", str: "a string", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)
