"""A finding named by its file and JSON pointer (:class:`Problem`), and how lists of
them are ordered, raised and made from a reader's refusal or a consumer lint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from .checks import Finding
from ..errors import ConfigDriveError, one_line


@dataclass(frozen=True)
class Problem:
    """One finding: ``FILE: /json/pointer: message``."""

    source: str
    pointer: str
    message: str
    severity: str = "error"  # "error" or "warning"

    def __str__(self) -> str:
        return one_line(f"{self.source}: {self.pointer or '/'}: {self.message}")


def problems_at(source: str, findings: Iterable[Finding]) -> list[Problem]:
    """Problems in document order, each reported once."""
    unique = dict.fromkeys(findings)
    return [Problem(source, f.pointer, f.message, f.severity)
            for f in sorted(unique, key=lambda f: pointer_key(f.pointer))]


def pointer_key(pointer: str) -> list[tuple[int, int, str]]:
    # /links/10 after /links/9: compare list indexes as numbers
    # isascii: "¹".isdigit() is true and int() refuses it
    return [(0, int(p), "") if p.isascii() and p.isdigit() else (1, 0, p) for p in pointer.split("/")[1:]]


def refusal(source: str, exc: ConfigDriveError) -> Problem:
    """A reader's one-line error as a Problem (its ``SOURCE: `` prefix becomes the source)."""
    return Problem(source, "", str(exc).removeprefix(f"{source}: "))


def raise_errors(problems: Iterable[Problem]) -> None:
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise ConfigDriveError(refusal_line(errors))


# Findings a refusal spells out; ``validate`` lists every one.
SHOWN_ERRORS = 3


def refusal_line(errors: list[Problem]) -> str:
    """The one line that refuses ``errors``: the first few distinct findings, each with the
    number of other files that have it too (every version directory holds a copy of a
    document), then how many more there are. Thousands of findings, one per entry of a
    wide document, stay one short line."""
    copies: dict[tuple[str, str], list[Problem]] = {}
    for problem in errors:
        copies.setdefault((problem.pointer, problem.message), []).append(problem)
    shown = [str(same[0]) + (f" (also in {len(same) - 1} more file{'s' * (len(same) > 2)})" if len(same) > 1 else "")
             for same in list(copies.values())[:SHOWN_ERRORS]]
    rest = len(copies) - SHOWN_ERRORS
    return "; ".join(shown) + (f"; and {rest} more error{'s' * (rest > 1)} (validate lists each)" if rest > 0 else "")


def lint_problems(lints, where) -> list[Problem]:
    """Consumer lints (configdrive/documents/consumers.py) as warnings; ``where`` names a file."""
    return [Problem(where(lint.file), lint.pointer, lint.text(), "warning") for lint in lints]
