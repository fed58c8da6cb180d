"""Running the conformance suite in-process from the project's tests, so that coverage sees the
suite's paths: one helper for every test that judges an implementation.

The suite runs through ``pytest.main`` in this process. Modules stay imported between runs (no
``sys.modules`` snapshot as ``pytester.runpytest_inprocess`` takes): the suite's modules and
what they import are imported once per process, not once per run (about a second of CPU per
run), which counts where a test file runs the suite dozens of times (``tests/test_mutants.py``).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from spec import progress

Report = dict[str, dict[str, Any]]
"""clause id -> the clause's entry of a ``--conformance-json`` report."""


def run_suite(
    workdir: Path, impl: str, modules: list[str], *args: str, name: str | None = None
) -> Report:
    """The suite's report on ``impl`` (``--impl``) over ``modules`` (``spec.suite``, some of
    its modules by dotted name, or tests: ``spec.suite.test_3_3_ffn::test_eq2``), with pytest
    ``args`` (``-k``, ...): clause id -> entry.

    The run happens in ``workdir`` (its report is written there), without the caller's
    ``$PYTEST_ADDOPTS``, its output kept out of the caller's. ``name``: the implementation name
    the report must carry."""
    out = workdir / "report.json"
    out.unlink(missing_ok=True)
    output = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        for variable in ("PYTEST_ADDOPTS", progress.ENV_VAR, progress.RESUME_VAR):  # an outer run's
            mp.delenv(variable, raising=False)
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            code = pytest.main([
                "--pyargs", *modules, "-p", "no:cacheprovider", "--impl", impl,
                "--conformance-json", str(out), *args,
                # its gc.collect() at the end of a run costs about a second in a process that
                # holds many objects, and the run's own leaks are not what is tested here
                "-p", "no:unraisableexception",
                "-p", "no:logging",  # it hooks every non-propagating logger (torch has dozens) in
                # each phase of each test: about 0.3 s per run, and no test here reads a log
            ])  # fmt: skip
    assert out.exists(), f"no report (pytest exit code {code}):\n{output.getvalue()[-3000:]}"
    report = json.loads(out.read_text())
    if name is not None:
        assert report["implementation"] == name
    return {c["id"]: c for c in report["clauses"]}


def suite_report(
    pytester: pytest.Pytester, impl: str, modules: list[str], *args: str, name: str | None = None
) -> Report:
    """:func:`run_suite` in ``pytester``'s directory (for tests that use the fixture)."""
    return run_suite(pytester.path, impl, modules, *args, name=name)


def bug(entry: Mapping[str, Any]) -> str | None:
    """The bug name of a clause entry's diagnosis (``"no-scale: the ..."`` -> ``"no-scale"``)."""
    diagnosis = entry.get("diagnosis")
    return None if diagnosis is None else diagnosis.split(":", 1)[0]


def said(entry: Mapping[str, Any]) -> str:
    """``VERDICT [variants] (diagnosis name)`` of a clause entry."""
    words = [entry["verdict"], *([entry["variant"]] if entry.get("variant") else [])]
    name = bug(entry)
    return " ".join([*words, *([f"({name})"] if name else [])])
