"""The suite's power: it catches every mutant of the corpus (tests/mutants), with the right
diagnosis, and recognises every legitimate variant without a false alarm.

Each implementation is run through the suite in-process (so that coverage sees the suite's
deviation and diagnosis paths), by :func:`tests.suite_run.run_suite`, which imports the suite
once per process: a broken mutant against the tests of its expected clauses, a variant against
the whole suite (the variants come first: they take longest, which keeps xdist's workers busy to
the end). With ``$ATTENTION_SPEC_DETECTION_JSON`` set, each test also records its row of the
detection table there (``python -m tests.mutants`` does this).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from spec.clauses import CLAUSES
from spec.diagnosis import KNOWN_BUGS
from tests.mutants import all_mutants, all_variants, detection, impl
from tests.mutants.kit import Implementation, Mutant, Variant
from tests.suite_run import Report, run_suite

MUTANTS = all_mutants()
VARIANTS = all_variants()


def report(tmp_path: Path, cls: type[Implementation], tests: list[str]) -> Report:
    """The suite's report on ``cls``, clause id -> clause entry."""
    return run_suite(tmp_path, impl(cls), tests, name=cls.name)


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda cls: cls.name)
def test_variant_is_recognised(tmp_path: Path, variant: type[Variant]) -> None:
    clauses = report(tmp_path, variant, detection.suite_tests(variant))
    table = os.environ.get(detection.DETECTION_ENV)
    if table:
        detection.record(table, "variants", detection.variant_row(variant, clauses))
    problems = detection.judge_variant(variant, clauses)
    assert not problems, f"{variant.name} ({variant.bug()}): {problems}"


@pytest.mark.slow
@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda cls: cls.name)
def test_mutant_is_caught(tmp_path: Path, mutant: type[Mutant]) -> None:
    full = detection.full_runs()
    clauses = report(tmp_path, mutant, detection.suite_tests(mutant, full))
    table = os.environ.get(detection.DETECTION_ENV)
    if table:
        detection.record(table, "mutants", detection.mutant_row(mutant, clauses, full=full))
    problems = detection.judge_mutant(mutant, clauses, full=full)
    assert not problems, f"{mutant.name} ({mutant.bug()}): {problems}"


def test_the_corpus_is_well_formed() -> None:
    """At least 30 mutants and 8 variants, uniquely named, each with a one-line description;
    every clause, variant and diagnosis they name is registered."""
    assert len(MUTANTS) >= 30 and len(VARIANTS) >= 8
    names = [cls.name for cls in [*MUTANTS, *VARIANTS]]
    assert len(set(names)) == len(names)
    for cls in [*MUTANTS, *VARIANTS]:
        assert cls.bug() and len((cls.__doc__ or "").strip().splitlines()) == 1, cls.name
    for m in MUTANTS:
        assert m.EXPECTED and set(m.EXPECTED) | set(m.ERRORS) <= set(CLAUSES), m.name
        assert m.DIAGNOSIS is None or m.DIAGNOSIS in KNOWN_BUGS, m.name
        assert not set(m.EXPECTED) & set(m.ERRORS), m.name
    # test_mutant_is_caught requires DIAGNOSIS to be named and no other name: "right" for these
    named = sum(m.DIAGNOSIS is not None for m in MUTANTS)
    assert named >= 0.8 * len(MUTANTS), f"only {named} of {len(MUTANTS)} mutants have a diagnosis"
    for v in VARIANTS:
        for cid, name in v.VARIANTS:
            CLAUSES[cid].variant(name)  # KeyError unless registered


def test_judging_catches_a_wrong_report() -> None:
    """The judges fail a report that misses a deviation, names the wrong bug, errs, deviates
    in a variant or names a variant that is not there."""
    no_scale = next(m for m in MUTANTS if m.DIAGNOSIS == "no-scale")
    ok = {"verdict": "DEVIATES", "diagnosis": "no-scale: x", "reason": ""}
    good = {cid: ok for cid in no_scale.EXPECTED}
    assert detection.judge_mutant(no_scale, good) == []
    first = no_scale.EXPECTED[0]
    assert detection.judge_mutant(no_scale, {**good, first: {**ok, "verdict": "CONFORMS"}})
    wrong = {cid: {**ok, "diagnosis": "scale-dk: y"} for cid in no_scale.EXPECTED}
    assert any("wrong diagnoses" in p for p in detection.judge_mutant(no_scale, wrong))
    errs = {**good, "3.3/eq2": {"verdict": "ERROR", "reason": "raised"}}
    assert any("ERROR" in p for p in detection.judge_mutant(no_scale, errs))
    assert detection.judge_mutant(no_scale, errs, full=True) == []
    variant = next(v for v in VARIANTS if v.VARIANTS)
    conforming: dict[str, dict[str, Any]] = {
        cid: {"verdict": "CONFORMS", "variant": None, "reason": ""} for cid in CLAUSES
    }
    assert any("missing" in p for p in detection.judge_variant(variant, conforming))
    deviating = {**conforming, "3.3/eq2": {"verdict": "DEVIATES", "reason": "no"}}
    assert any("must not deviate" in p for p in detection.judge_variant(variant, deviating))
