"""Validation of everything that goes on a drive. (Interface only; the schemas and
checks arrive with the validation work.)"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigDriveError


@dataclass(frozen=True)
class Problem:
    """One finding: ``FILE: /json/pointer: message``."""

    source: str
    pointer: str
    message: str
    severity: str = "error"  # "error" or "warning"

    def __str__(self) -> str:
        return f"{self.source}: {self.pointer or '/'}: {self.message}"


def validate_content(content) -> list[Problem]:
    return []


def check_content(content) -> None:
    errors = [p for p in validate_content(content) if p.severity == "error"]
    if errors:
        raise ConfigDriveError("; ".join(map(str, errors)))


def validate_paths(paths, kind=None) -> list[Problem]:
    return []
