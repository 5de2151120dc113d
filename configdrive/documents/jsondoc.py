"""JSON documents as RFC 8259 defines them, parsed with bounds (depth and values counted
before parsing, digits while parsing), every refusal one line naming the file, line and
column."""

from __future__ import annotations

import functools
import json
import math
from typing import Any

from .docscan import check_json
from ..errors import ConfigDriveError

# Digits in a JSON integer. Every integer a config drive carries (launch_index, vlan ids,
# MTUs) has a few; 64-bit ids have 20. Python refuses more than 4300 with a ValueError
# (int() of a long digit string is quadratic, CVE-2020-10735), so a longer one would be a
# traceback here and in cloud-init's reader alike.
MAX_INTEGER_DIGITS = 100


def parse_json(data: bytes, source: str) -> Any:
    """Parse JSON (RFC 8259), naming the file, line and column of a syntax error.

    Python's json module also accepts NaN, Infinity and -Infinity, and reads 1e400 as
    infinity; none of them is JSON, and written back they make a meta_data.json that
    cloud-init's own parser, and every strict one, rejects. They are refused here.

    Depth and the number of values are counted first (configdrive/documents/docscan.py): everything
    downstream walks the objects json builds, and recurses per level."""
    def refuse_constant(name: str) -> Any:
        raise ConfigDriveError(f"{source}: {name} is not a JSON number (RFC 8259 has no NaN or Infinity)")

    def finite_float(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise ConfigDriveError(f"{source}: number {text[:40]} is too large for a JSON number")
        return value

    def bounded_int(text: str) -> int:
        digits = len(text.lstrip("-"))
        if digits > MAX_INTEGER_DIGITS:
            raise ConfigDriveError(f"{source}: an integer of {digits} digits "
                                   f"(at most {MAX_INTEGER_DIGITS})")
        return int(text)

    check_json(data, source)
    try:
        doc = json.loads(data.decode("utf-8-sig"), parse_constant=refuse_constant,
                         parse_float=finite_float, parse_int=bounded_int)
    except UnicodeDecodeError as exc:
        raise ConfigDriveError(f"{source}: byte {exc.start}: not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        raise ConfigDriveError(
            f"{source}: line {exc.lineno} column {exc.colno}: invalid JSON ({exc.msg})") from exc
    return doc


def parsed_or_none(data: bytes | None) -> Any:
    """The JSON document in ``data``, or None when there is none or it does not parse: for
    checks and lints that read a drive's document whose own validation reports it. The
    same bytes are parsed once (a drive holds a copy in every version directory, and
    several checks read each): callers read the document and never change it."""
    return None if data is None else _parsed_or_none(data)


@functools.lru_cache(maxsize=16)
def _parsed_or_none(data: bytes) -> Any:
    try:
        return parse_json(data, "")
    except ConfigDriveError:
        return None

