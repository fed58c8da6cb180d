"""What the suite must say of each implementation of the corpus, and the detection table.

``tests/test_mutants.py`` runs the suite (in-process) against each mutant and variant and uses
:func:`judge_mutant` / :func:`judge_variant` on the JSON report; when
``$ATTENTION_SPEC_DETECTION_JSON`` names a file, it also :func:`record` s one row per
implementation there (the documentation shows the table).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import os
import pkgutil
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import spec.suite
from spec.clauses import CLAUSES
from tests.mutants import all_mutants, all_variants, impl
from tests.mutants.kit import Implementation, Mutant, Variant
from tests.suite_run import bug

DETECTION_ENV = "ATTENTION_SPEC_DETECTION_JSON"
"""Names the detection table the meta-test writes (nothing is written when it is unset)."""
FULL_ENV = "ATTENTION_SPEC_MUTANTS_FULL"
"""Set to 1: run the whole suite against broken mutants too (slower; a complete table)."""
DEFAULT_PATH = Path("build/docs-data/detection.json")

ROW_NAME = {"mutants": "mutant", "variants": "variant", "outside": "outside"}
"""A table's kinds of rows -> the field of a row that names its implementation."""

Clauses = Mapping[str, Mapping[str, Any]]
"""clause id -> the clause's entry of a ``--conformance-json`` report."""


def clause_tests() -> dict[str, list[str]]:
    """Clause id -> the suite tests that check it, as ``spec.suite.test_...::test_...``."""
    out: dict[str, list[str]] = {}
    for info in pkgutil.iter_modules(spec.suite.__path__):
        module = importlib.import_module(f"spec.suite.{info.name}")
        for name, func in inspect.getmembers(module, inspect.isfunction):
            for mark in getattr(func, "pytestmark", []):
                if name.startswith("test_") and mark.name == "clause":
                    out.setdefault(mark.args[0], []).append(f"{module.__name__}::{name}")
    return out


def full_runs() -> bool:
    """Whether broken mutants are run against the whole suite ($ATTENTION_SPEC_MUTANTS_FULL)."""
    return os.environ.get(FULL_ENV, "") not in ("", "0")


def suite_tests(cls: type[Implementation], full: bool = False) -> list[str]:
    """What to run (``--pyargs``): the whole suite for a variant (no clause may deviate) or
    with ``full``; for a mutant, the tests of its EXPECTED and ERRORS clauses."""
    if full or not issubclass(cls, Mutant):
        return ["spec.suite"]
    where = clause_tests()
    return sorted({test for cid in (*cls.EXPECTED, *cls.ERRORS) for test in where[cid]})


def judge_mutant(cls: type[Mutant], clauses: Clauses, *, full: bool = False) -> list[str]:
    """What is wrong with the suite's report on a broken mutant (nothing: an empty list).

    Every EXPECTED clause deviates; the diagnoses the expected clauses give are DIAGNOSIS (at
    least one of them) or, for a bug without a known diagnosis, none; and no clause reports
    ERROR but those in ERRORS (not checked with ``full``: other clauses may then fail on the
    bug in ways this mutant does not declare).
    """
    problems = []
    for cid in cls.EXPECTED:
        verdict = clauses.get(cid, {}).get("verdict")
        if verdict != "DEVIATES":
            problems.append(f"{cid} must DEVIATE, got {verdict}")
    given = {cid: bug(clauses[cid]) for cid in cls.EXPECTED if cid in clauses}
    named = {d for d in given.values() if d is not None}
    if cls.DIAGNOSIS is not None and cls.DIAGNOSIS not in named:
        problems.append(f"no expected clause names {cls.DIAGNOSIS}; diagnoses given: {given}")
    wrong = named - {cls.DIAGNOSIS}
    if wrong:
        problems.append(f"wrong diagnoses {sorted(wrong)} (expected {cls.DIAGNOSIS}): {given}")
    if not full:
        errors = {cid: c["reason"] for cid, c in clauses.items() if c["verdict"] == "ERROR"}
        unexpected = {cid: reason for cid, reason in errors.items() if cid not in cls.ERRORS}
        if unexpected:
            problems.append(f"unexpected ERROR verdicts: {unexpected}")
    return problems


def diagnosis_quality(expected: str | None, clauses: Clauses, where: Iterable[str]) -> str:
    """How the report diagnoses a broken implementation whose bug is ``expected`` (a
    :data:`spec.diagnosis.KNOWN_BUGS` name, or ``None`` for a bug the suite has no model of),
    judged on the clauses ``where``: ``"wrong"`` if any of them names another bug, ``"right"``
    if one names ``expected``, ``"unknown"`` otherwise (no name: "cause unknown")."""
    named = {bug(clauses[c]) for c in where if c in clauses} - {None}
    if named - {expected}:
        return "wrong"
    return "right" if expected is not None and expected in named else "unknown"


def reported_variants(clauses: Clauses) -> set[tuple[str, str]]:
    """The (clause, variant name) pairs a report names."""
    return {
        (cid, name)
        for cid, c in clauses.items()
        if c["verdict"] == "VARIANT"
        for name in (c.get("variant") or "").split(", ")
    }


def judge_variant(cls: type[Variant], clauses: Clauses) -> list[str]:
    """What is wrong with the suite's report on a variant: every clause is reported, none
    deviates or errs, and the variants named are exactly VARIANTS."""
    problems = []
    missing = sorted(set(CLAUSES) - set(clauses))
    if missing:
        problems.append(f"clauses not reported: {missing}")
    bad = {
        cid: f"{c['verdict']}: {c['reason']}"
        for cid, c in clauses.items()
        if c["verdict"] in ("DEVIATES", "ERROR")
    }
    if bad:
        problems.append(f"a variant must not deviate: {bad}")
    found, declared = reported_variants(clauses), set(cls.VARIANTS)
    if found != declared:
        problems.append(
            f"variants reported {sorted(found)}, declared {sorted(declared)}: missing "
            f"{sorted(declared - found)}, unexpected {sorted(found - declared)}"
        )
    return problems


def mutant_row(cls: type[Mutant], clauses: Clauses, *, full: bool = False) -> dict[str, Any]:
    """One row of the detection table for a broken mutant.

    ``mutant``, ``bug``, ``expected_clauses``, ``verdicts`` (of the clauses run), ``diagnosis``
    (the bug the expected clauses name, if any); and, for the documentation's mutant table,
    ``name``, ``description``, ``expected_clause``, ``caught_by`` (the deviating clauses) and
    ``detected`` (the report is what the corpus requires).
    """
    given = [bug(clauses[c]) for c in cls.EXPECTED if c in clauses]
    diagnosis = next((d for d in given if d == cls.DIAGNOSIS), None) or next(
        (d for d in given if d), None
    )
    caught = [cid for cid, c in clauses.items() if c["verdict"] == "DEVIATES"]
    return {
        "mutant": cls.name,
        "impl": impl(cls),
        "bug": cls.bug(),
        "expected_clauses": list(cls.EXPECTED),
        "expected_diagnosis": cls.DIAGNOSIS,
        "verdicts": {cid: c["verdict"] for cid, c in clauses.items()},
        "diagnosis": diagnosis,
        "suite": "full" if full else "the tests of the expected clauses",
        "name": cls.name,
        "description": cls.bug(),
        "expected_clause": ", ".join(cls.EXPECTED),
        "caught_by": caught,
        "detected": not judge_mutant(cls, clauses, full=full),
        "diagnosis_quality": diagnosis_quality(cls.DIAGNOSIS, clauses, cls.EXPECTED),
    }


def variant_row(cls: type[Variant], clauses: Clauses) -> dict[str, Any]:
    """One row of the detection table for a variant."""
    return {
        "variant": cls.name,
        "impl": impl(cls),
        "description": cls.bug(),
        "expected_variants": [list(pair) for pair in cls.VARIANTS],
        "verdicts": {cid: c["verdict"] for cid, c in clauses.items()},
        "variants": {cid: c["variant"] for cid, c in clauses.items() if c["verdict"] == "VARIANT"},
        "recognised": not judge_variant(cls, clauses),
    }


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path.lock`` (xdist workers write one table; POSIX only)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock
        yield
        return
    with open(path.with_suffix(path.suffix + ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def record(path: str | os.PathLike[str], kind: str, row: dict[str, Any]) -> None:
    """Put ``row`` (``kind``: ``"mutants"`` or ``"variants"``) into the table at ``path``,
    replacing the implementation's earlier row; rows of implementations no longer in the corpus
    are dropped, and rows are kept in corpus order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        try:
            table = json.loads(path.read_text())
        except (OSError, ValueError):
            table = {}
        order = {
            "mutants": [cls.name for cls in all_mutants()],
            "variants": [cls.name for cls in all_variants()],
            # the outside corpus (tests/test_outside.py) is ordered by name
            "outside": sorted({r["outside"] for r in table.get("outside", [])}
                              | ({row["outside"]} if kind == "outside" else set())),
        }
        rows: dict[str, dict[str, dict[str, Any]]] = {
            k: {r[ROW_NAME[k]]: r for r in table.get(k, []) if r.get(ROW_NAME[k]) in order[k]}
            for k in ROW_NAME
        }
        rows[kind][row[ROW_NAME[kind]]] = row
        table = {
            "about": "the mutant corpus (tests/mutants) and the outside corpus (tests/outside) "
            "against the conformance suite; written by tests/test_mutants.py and "
            "tests/test_outside.py (python -m tests.mutants)",
            **{k: [rows[k][n] for n in order[k] if n in rows[k]] for k in ROW_NAME},
        }
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(table, indent=2) + "\n")
        os.replace(tmp, path)


def complete(path: str | os.PathLike[str]) -> bool:
    """Whether the table at ``path`` has a row for every mutant, variant and implementation of
    the outside corpus (so that a session that ran only some of them hands over nothing)."""
    from tests.test_outside import CASES  # the outside corpus is that test's parametrisation

    try:
        table = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    want = {
        "mutants": {cls.name for cls in all_mutants()},
        "variants": {cls.name for cls in all_variants()},
        "outside": {case.name for case in CASES},
    }
    return all({row[ROW_NAME[k]] for row in table.get(k, [])} == names
               for k, names in want.items())
