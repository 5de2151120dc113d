"""The figures the fuzz and fault tests reach, printed at the end of the run by the
``pytest_terminal_summary`` hook in tests/conftest.py.

(The hook cannot live in a tests/fuzz/conftest.py: pytest imports every conftest.py as
the module ``conftest``, and a second one would hide tests/conftest.py from the
``from conftest import ...`` of every other test module.)"""

from __future__ import annotations

from collections import Counter

CASES: Counter = Counter()        # parser -> cases run
REFUSED: Counter = Counter()      # parser -> cases that ended in our own clear error
BUGS: Counter = Counter()         # parser -> cases that crashed, hung or grew (while shrinking too)
FAULTS_INJECTED: Counter = Counter()   # fault kind -> injected
FAULTS_SURVIVED: Counter = Counter()   # fault kind -> the disk and the host were left right


def count_case(parser: str, outcome: str) -> None:
    CASES[parser] += 1
    if outcome == "refused":
        REFUSED[parser] += 1
    elif outcome == "bug":
        BUGS[parser] += 1


def fault_injected(kind: str) -> None:
    FAULTS_INJECTED[kind] += 1


def fault_survived(kind: str) -> None:
    FAULTS_SURVIVED[kind] += 1


def report(write_line) -> None:
    if CASES:
        parts = ", ".join(f"{name} {CASES[name]}" for name in sorted(CASES))
        write_line(f"fuzz: {parts} cases ({sum(CASES.values())} in all, "
                   f"{sum(REFUSED.values())} refused with our own one-line error, "
                   f"{sum(BUGS.values())} crashed)")
    if FAULTS_INJECTED:
        kinds = ", ".join(f"{k} {FAULTS_SURVIVED[k]}/{FAULTS_INJECTED[k]}" for k in sorted(FAULTS_INJECTED))
        write_line(f"faults: {sum(FAULTS_SURVIVED.values())} survived / "
                   f"{sum(FAULTS_INJECTED.values())} injected ({kinds})")
