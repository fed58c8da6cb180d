"""Verdicts, per-test outcomes, and how a clause's tests combine into one verdict."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping
from typing import Any


class Verdict(str, enum.Enum):
    """What the suite says of one clause for one implementation."""

    CONFORMS = "CONFORMS"
    VARIANT = "VARIANT"
    DEVIATES = "DEVIATES"
    NOT_PROVIDED = "NOT PROVIDED"
    ERROR = "ERROR"

    def __str__(self) -> str:
        return self.value


class Deviation(AssertionError):
    """A clause is violated. ``diagnosis`` names the known bug that explains it, if one does."""

    def __init__(self, message: str, summary: str, diagnosis: str | None = None,
                 criterion: str | None = None) -> None:
        super().__init__(message)
        self.summary = summary
        self.diagnosis = diagnosis
        self.criterion = criterion  # the pass criterion that failed, where one number decides


# How verdicts of several tests of one clause combine: the most severe wins.
SEVERITY = {
    Verdict.NOT_PROVIDED: 0,
    Verdict.CONFORMS: 1,
    Verdict.VARIANT: 2,
    Verdict.DEVIATES: 3,
    Verdict.ERROR: 4,
}


@dataclasses.dataclass
class Outcome:
    """The verdict of one test (one clause, one parametrisation)."""

    clause: str
    verdict: Verdict
    reason: str = ""
    variant: str | None = None
    diagnosis: str | None = None
    expected: str | None = None  # the user's reason, when the deviation was declared expected
    test: str = ""
    run: str | None = None  # where the test ran ("cpu float64"), when it is parametrised so
    criterion: str | None = None  # the pass criterion that failed
    reproduce: str | None = None  # the command that reruns the test

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["verdict"] = self.verdict.value
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Outcome:
        return cls(**{**data, "verdict": Verdict(data["verdict"])})


@dataclasses.dataclass
class ClauseResult:
    """The combined verdict of one clause, as reports show it."""

    id: str
    section: str
    title: str
    verdict: Verdict
    reason: str
    variant: str | None
    diagnosis: str | None
    expected: str | None
    tests: int
    run: str | None = None
    criterion: str | None = None
    reproduce: str | None = None
    link: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["verdict"] = self.verdict.value
        return data


def combine(outcomes: Iterable[Outcome]) -> Outcome:
    """The most severe outcome; among equals, the first that names a diagnosis, else the first
    (so that one run's diagnosis is not lost to another run's "cause unknown"). Variants found
    are all named; a passing clause keeps every run's notes."""
    items = list(outcomes)
    if not items:
        raise ValueError("no outcomes to combine")
    worst = max(items, key=lambda o: (SEVERITY[o.verdict], o.diagnosis is not None))
    variants = sorted({v for o in items if o.variant for v in o.variant.split(", ")})
    combined = dataclasses.replace(worst, variant=", ".join(variants) or None)
    if worst.verdict == Verdict.CONFORMS:
        notes = [o.reason for o in items if o.verdict == worst.verdict and o.reason]
        combined.reason = "; ".join(dict.fromkeys(notes))
    if worst.verdict in (Verdict.CONFORMS, Verdict.VARIANT):  # say what other runs left out
        unchecked = [o.reason for o in items if o.verdict == Verdict.NOT_PROVIDED and o.reason]
        combined.reason = "; ".join(dict.fromkeys(
            [combined.reason, *unchecked] if combined.reason else unchecked))
    return combined
