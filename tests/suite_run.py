"""Running the conformance suite in-process from the project's tests (pytester), so that
coverage sees the suite's paths: one helper for every test that judges an implementation."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

Report = dict[str, dict[str, Any]]
"""clause id -> the clause's entry of a ``--conformance-json`` report."""


def suite_report(
    pytester: pytest.Pytester, impl: str, modules: list[str], *args: str, name: str | None = None
) -> Report:
    """The suite's report on ``impl`` (``--impl``) over ``modules`` (``spec.suite`` or some of
    its modules, by dotted name), with pytest ``args`` (``-k``, ...): clause id -> entry.
    ``name``: the implementation name the report must carry."""
    out = pytester.path / "report.json"
    out.unlink(missing_ok=True)
    result = pytester.runpytest_inprocess(
        "--pyargs", *modules, "-p", "no:cacheprovider", "--impl", impl,
        "--conformance-json", str(out), *args,
    )  # fmt: skip
    assert out.exists(), result.stdout.str()[-3000:]
    report = json.loads(out.read_text())
    if name is not None:
        assert report["implementation"] == name
    return {c["id"]: c for c in report["clauses"]}


def bug(entry: Mapping[str, Any]) -> str | None:
    """The bug name of a clause entry's diagnosis (``"no-scale: the ..."`` -> ``"no-scale"``)."""
    diagnosis = entry.get("diagnosis")
    return None if diagnosis is None else diagnosis.split(":", 1)[0]


def said(entry: Mapping[str, Any]) -> str:
    """``VERDICT [variants] (diagnosis name)`` of a clause entry."""
    words = [entry["verdict"], *([entry["variant"]] if entry.get("variant") else [])]
    name = bug(entry)
    return " ".join([*words, *([f"({name})"] if name else [])])
