"""A finding named by its file and JSON pointer (:class:`Problem`), and how lists of
them are ordered, raised and made from a reader's refusal or a consumer lint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from .checks import Finding
from .errors import ConfigDriveError, one_line


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
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in pointer.split("/")[1:]]


def refusal(source: str, exc: ConfigDriveError) -> Problem:
    """A reader's one-line error as a Problem (its ``SOURCE: `` prefix becomes the source)."""
    return Problem(source, "", str(exc).removeprefix(f"{source}: "))


def raise_errors(problems: Iterable[Problem]) -> None:
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise ConfigDriveError("; ".join(map(str, errors)))


def lint_problems(lints, where) -> list[Problem]:
    """Consumer lints (configdrive/consumers.py) as warnings; ``where`` names a file."""
    return [Problem(where(lint.file), lint.pointer, lint.text(), "warning") for lint in lints]
