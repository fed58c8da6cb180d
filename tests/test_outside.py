"""The suite's verdicts on the outside corpus (``tests/outside``): Transformers written from
scratch, cut differently from the reference, correct ones and broken ones.

Each module there declares, next to its adapter, ``VERDICTS``: the verdict a careful reader of
the paper gives every clause that does not simply CONFORM, with the reason. This test runs the
whole suite (in-process, so that coverage sees the paths it takes) against each adapter and
requires every clause's verdict, variant names and diagnosis to be exactly those: no false
alarm on correct code, every real deviation reported, and its diagnosis either the right bug or
none ("cause unknown"), never another bug's name.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import pkgutil
from pathlib import Path
from typing import Any

import pytest

import tests.outside
from spec.clauses import CLAUSES
from spec.diagnosis import KNOWN_BUGS
from tests.mutants import detection
from tests.suite_run import bug, run_suite

VERDICTS = ("CONFORMS", "VARIANT", "DEVIATES", "NOT PROVIDED", "ERROR")


@dataclasses.dataclass(frozen=True)
class Case:
    """One implementation of the corpus: its adapter (``module:attribute``) and the verdicts
    a careful reader gives it (clause id -> (verdict with its names, reason))."""

    name: str
    impl: str
    verdicts: dict[str, tuple[str, str]]

    def expected(self, clause_id: str) -> tuple[str, set[str]]:
        """(verdict, names): the variant names of a VARIANT, the diagnosis of a DEVIATES
        (``"unknown"`` for none), for ``clause_id``."""
        text = self.verdicts.get(clause_id, ("CONFORMS", ""))[0]
        verdict = next(v for v in VERDICTS if text == v or text.startswith(v + " "))
        names = text[len(verdict):].strip()
        return verdict, set(names.split(", ")) if names else set()

    @property
    def broken(self) -> bool:
        return any(self.expected(c)[0] == "DEVIATES" for c in CLAUSES)


def corpus() -> list[Case]:
    """Every ``adapter`` / ``adapter_<bug>`` of ``tests/outside`` with its ``VERDICTS`` /
    ``VERDICTS_<bug>``."""
    cases = []
    for info in pkgutil.iter_modules(tests.outside.__path__):
        module = importlib.import_module(f"tests.outside.{info.name}")
        for attribute in sorted(vars(module)):
            if attribute != "adapter" and not attribute.startswith("adapter_"):
                continue
            suffix = attribute.removeprefix("adapter")
            verdicts = getattr(module, f"VERDICTS{suffix}")
            name = getattr(module, attribute).name
            cases.append(Case(name, f"{module.__name__}:{attribute}", dict(verdicts)))
    return cases


CASES = corpus()


def problems(case: Case, clauses: dict[str, dict[str, Any]]) -> list[str]:
    """Where the report differs from what the careful reader says."""
    out = []
    for cid in CLAUSES:
        verdict, names = case.expected(cid)
        got = clauses.get(cid)
        if got is None:
            out.append(f"{cid}: not reported")
            continue
        where = f"{cid}: expected {case.verdicts.get(cid, ('CONFORMS', ''))[0]}"
        if got["verdict"] != verdict:
            out.append(f"{where}, got {got['verdict']}: {got['reason']}")
        elif verdict == "VARIANT" and set((got.get("variant") or "").split(", ")) != names:
            out.append(f"{where}, got variants {got.get('variant')}")
        elif verdict == "DEVIATES":
            name = bug(got) or "unknown"
            if name not in names:
                out.append(f"{where}, got diagnosis {name}: {got['reason']}")
    return out


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_verdicts(tmp_path: Path, case: Case) -> None:
    clauses = run_suite(tmp_path, case.impl, ["spec.suite"])
    table = os.environ.get(detection.DETECTION_ENV)
    if table:
        detection.record(table, "outside", outside_row(case, clauses))
    found = problems(case, clauses)
    assert not found, f"{case.name}:\n  " + "\n  ".join(found)


def outside_row(case: Case, clauses: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One row of the detection table for an implementation of the outside corpus."""
    deviating = [c for c in CLAUSES if case.expected(c)[0] == "DEVIATES"]
    expected = sorted({n for c in deviating for n in case.expected(c)[1]} - {"unknown"})
    names: list[str | None] = [*expected] if expected else [None]
    quality = {detection.diagnosis_quality(e, clauses, deviating) for e in names}
    return {
        "outside": case.name,
        "impl": case.impl,
        "broken": case.broken,
        "deviating": deviating,
        "verdicts": {cid: c["verdict"] for cid, c in clauses.items()},
        "diagnosis_quality": ("wrong" if "wrong" in quality else "right" if "right" in quality
                              else "unknown") if case.broken else None,
        "agrees": not problems(case, clauses),
    }


def test_the_corpus_is_well_formed() -> None:
    """At least 10 implementations, uniquely named, none of them importing the reference; every
    clause, verdict and diagnosis they name is registered, each with a reason."""
    assert len(CASES) >= 10
    assert len({c.name for c in CASES}) == len(CASES)
    for case in CASES:
        source = importlib.import_module(case.impl.split(":")[0]).__file__
        assert source is not None
        text = Path(source).read_text(encoding="utf-8")
        assert "import transformer" not in text and "from transformer" not in text, case.name
        for cid, (_, reason) in case.verdicts.items():
            assert cid in CLAUSES and reason.strip(), (case.name, cid)
            kind, names = case.expected(cid)
            if kind == "DEVIATES":
                assert names <= {*KNOWN_BUGS, "unknown"} and len(names) == 1, (case.name, cid)
            if kind == "VARIANT":
                known = {v.name for v in CLAUSES[cid].variants}
                assert names and names <= known, (case.name, cid, names - known)
