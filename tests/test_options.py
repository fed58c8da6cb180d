"""Misused options and files stop the run before it starts, with one line and the usage exit
status; ``python -m spec`` runs the packaged suite whatever the current directory's pytest
configuration says (issue 14, item 10)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch._dynamo  # noqa: F401  (imported lazily by torch; pytester must not unload it)

import spec.oracle  # noqa: F401  (imported before pytester snapshots sys.modules)

pytest_plugins = ["pytester"]

ATTENTION = "spec.suite.test_3_2_1_attention"
USAGE = pytest.ExitCode.USAGE_ERROR


def inprocess(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_inprocess("--pyargs", ATTENTION, "-p", "no:cacheprovider", *args)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--impl", ""], "--impl is empty"),
        (["--spec-timeout", "inf"], "--spec-timeout must be a number of seconds"),
        (["--spec-timeout", "nan"], "--spec-timeout must be a number of seconds"),
        (["--spec-timeout", "-1"], "--spec-timeout must be a number of seconds"),
        (["--conformance-json", "."], "--conformance-json: . is a directory"),
        (["--conformance-md", "report.json/inside.md"], "report.json is not a directory"),
    ],
)
def test_a_misused_option_is_one_line_before_the_run(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    pytester.path.joinpath("report.json").write_text("{}")  # a file, not a folder
    result = inprocess(pytester, *args)
    assert result.ret == USAGE
    assert message in result.stderr.str()
    assert "Traceback" not in result.stderr.str() + result.stdout.str()
    assert "passed" not in result.stdout.str()  # nothing ran


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_report_path_is_refused_before_the_run(pytester: pytest.Pytester) -> None:
    locked = pytester.mkdir("locked")
    locked.chmod(0o500)
    try:
        result = inprocess(pytester, "--conformance-json", str(locked / "r.json"))
    finally:
        locked.chmod(0o700)
    assert result.ret == USAGE
    assert "permission denied" in result.stderr.str()


def test_environment_variables_are_validated(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRANSFORMER_SPEC_PROFILE", "fast")
    result = inprocess(pytester)
    assert result.ret == USAGE
    assert "unknown profile 'fast' ($TRANSFORMER_SPEC_PROFILE)" in result.stderr.str()
    monkeypatch.delenv("TRANSFORMER_SPEC_PROFILE")
    monkeypatch.setenv("TRANSFORMER_SPEC_IMPL", " ")
    result = inprocess(pytester)
    assert result.ret == USAGE
    assert "$TRANSFORMER_SPEC_IMPL is set but empty" in result.stderr.str()


def test_an_adapter_module_that_exits_at_import_is_named(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(quitter="import sys\nsys.exit(3)\nadapter = None\n")
    monkeypatch.syspath_prepend(str(pytester.path))
    result = inprocess(pytester, "--impl", "quitter:adapter")
    assert result.ret == USAGE
    assert "cannot import adapter module 'quitter': it called sys.exit(3)" in result.stderr.str()


def _spec(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """``python -m spec`` in a subprocess, in ``pytester.path``."""
    return pytester.run(sys.executable, "-m", "spec", "-p", "no:xdist", *args, timeout=300)


def test_the_suite_ignores_the_current_directorys_pytest_config(pytester: pytest.Pytester) -> None:
    """A ``pytest.ini`` that turns warnings into errors, collects other files and adds options
    does not change what ``python -m spec`` runs or reports."""
    pytester.makeini("[pytest]\nfilterwarnings = error\npython_files = check_*.py\n"
                     "addopts = --strict-markers -x\n")
    result = _spec(pytester, "-k", "eq1", "--conformance-json", "r.json")
    assert result.ret == 0, result.stdout.str()[-2000:] + result.stderr.str()[-2000:]
    report = json.loads(Path(pytester.path, "r.json").read_text())
    assert [c["id"] for c in report["clauses"]] == ["3.2.1/eq1"]


def test_cache_options_work(pytester: pytest.Pytester) -> None:
    """``--lf`` needs pytest's cache, which the suite otherwise leaves off."""
    result = _spec(pytester, "-k", "eq1", "--lf")
    assert result.ret == 0, result.stdout.str()[-2000:] + result.stderr.str()[-2000:]
    result.stdout.fnmatch_lines(["*Summary: 1 CONFORMS*"])
    without = _spec(pytester, "-k", "eq1")
    assert without.ret == 0


def test_main_runs_the_packaged_suite_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``spec.cli.main`` as ``python -m spec`` calls it: the packaged suite under its own
    configuration, no cache and no hypothesis files left in the current directory."""
    from spec.cli import main

    monkeypatch.chdir(tmp_path)
    tmp_path.joinpath("pytest.ini").write_text("[pytest]\npython_files = check_*.py\n")
    code = main(["-k", "eq1", "-p", "no:xdist", "-q", "--conformance-json", "r.json"])
    assert code == 0
    assert json.loads((tmp_path / "r.json").read_text())["summary"]["CONFORMS"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pytest.ini", "r.json"]


def test_a_selection_without_clause_tests_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """``-k`` that matches no clause test writes no report and says so, with the usage exit
    status (pytest alone would exit 5, "no tests collected", and write nothing)."""
    from spec.cli import main

    monkeypatch.chdir(tmp_path)
    code = main(["-k", "no_such_test_anywhere", "-p", "no:xdist", "-q", "--conformance-json",
                 "r.json"])
    assert code == USAGE
    assert "no clause test matched the selection" in capfd.readouterr().err
    assert not (tmp_path / "r.json").exists()
