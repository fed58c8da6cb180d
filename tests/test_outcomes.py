"""The outcome never lies (issue 14): whatever an implementation does to the process -- exits,
interrupts, cancels the alarm, swallows the timeout, floods the output, leaves a thread, forks,
writes markup -- ``python -m spec`` ends with a true exit status and a complete report that
names the clause and the cause; serial and ``-n 2`` runs give the same report."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.suite_run import run_suite

HERE = Path(__file__).resolve().parent
TESTS = "test_3_2_1_attention and (test_eq1 or test_scale or test_softmax_over_keys or test_mask)"
CLAUSES = ["3.2.1/eq1", "3.2.1/scale", "3.2.1/softmax-over-keys", "3.2.1/mask"]


@dataclasses.dataclass
class Done:
    """What a run of ``python -m spec`` gave: exit status and output."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def spec_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
             ) -> Callable[..., tuple[Done, dict[str, Any] | None]]:
    """``python -m spec`` (:func:`spec.cli.main`, whose supervisor runs here and its pytest in a
    child process) on the four 3.2.1 tests above, in ``tmp_path``: (what it gave, the JSON
    report or None)."""
    from spec.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), *sys.path]))

    def run(impl: str, *args: str, select: str = TESTS) -> tuple[Done, dict[str, Any] | None]:
        report = tmp_path / f"{impl}{len(args)}.json"
        capfd.readouterr()
        code = main(["--impl", f"hostile_adapters:{impl}", "-k", select, "--conformance-json",
                     str(report), "-p", "no:randomly", *args])
        out, err = capfd.readouterr()
        return Done(code, out, err), json.loads(report.read_text()) if report.exists() else None

    return run


def verdicts(report: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["id"]: (c["verdict"], c["reason"]) for c in report["clauses"]}


@pytest.mark.slow
def test_an_implementation_that_exits_is_an_error_and_the_run_goes_on(spec_run: Any) -> None:
    serial, report = spec_run("Exits", "-p", "no:xdist")
    assert serial.returncode == 1, serial.stderr[-3000:]
    assert report is not None and report["complete"]
    found = verdicts(report)
    assert list(found) == CLAUSES
    assert found["3.2.1/scale"][0] == "ERROR"
    assert "ended abruptly" in found["3.2.1/scale"][1]
    assert {v for c, (v, _) in found.items() if c != "3.2.1/scale"} == {"CONFORMS"}
    assert "during" in serial.stderr and "test_scale" in serial.stderr
    parallel, report2 = spec_run("Exits", "-n", "2")
    assert parallel.returncode == 1
    assert report2 is not None and verdicts(report2) == found  # serial and -n 2 agree
    assert not list(Path.cwd().glob(".hypothesis"))


@pytest.mark.slow
def test_a_keyboard_interrupt_raised_by_the_implementation_is_its_error(spec_run: Any) -> None:
    serial, report = spec_run("RaisesInterrupt", "-p", "no:xdist")
    assert serial.returncode == 1 and report is not None and report["complete"]
    assert verdicts(report)["3.2.1/scale"] == (
        "ERROR", "raised: adapter.attention raised KeyboardInterrupt")
    _, report2 = spec_run("RaisesInterrupt", "-n", "2")
    assert report2 is not None and verdicts(report2) == verdicts(report)


@pytest.mark.slow
def test_ctrl_c_gives_an_incomplete_report_that_says_so(spec_run: Any) -> None:
    done, report = spec_run("CtrlC", "-p", "no:xdist")
    assert done.returncode == pytest.ExitCode.INTERRUPTED
    assert report is not None and not report["complete"]
    assert "interrupted" in report["stopped"]
    assert "INCOMPLETE" in done.stdout


@pytest.mark.slow
def test_the_default_device_is_restored(spec_run: Any) -> None:
    done, report = spec_run("DefaultDevice", "-p", "no:xdist")
    assert report is not None
    assert {v for v, _ in verdicts(report).values()} <= {"CONFORMS", "DEVIATES", "ERROR"}
    others = {c: v for c, (v, _) in verdicts(report).items() if c != "3.2.1/scale"}
    assert set(others.values()) == {"CONFORMS"}, done.stdout[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("impl", ["CancelsAlarm", "SwallowsTimeout"])
def test_the_time_limit_cannot_be_escaped(spec_run: Any, impl: str) -> None:
    done, report = spec_run(impl, "-p", "no:xdist", "--spec-timeout", "5")
    assert done.returncode == 1 and report is not None, done.stderr[-3000:]
    verdict, reason = verdicts(report)["3.2.1/scale"]
    assert verdict == "ERROR" and "timed out after 5 s in adapter.attention" in reason
    assert verdicts(report)["3.2.1/mask"][0] == "CONFORMS"


@pytest.mark.slow
def test_a_test_that_never_returns_is_ended_by_the_supervisor(spec_run: Any) -> None:
    done, report = spec_run("NeverReturns", "-p", "no:xdist", "--spec-timeout", "5")
    assert done.returncode == 1 and report is not None and report["complete"]
    verdict, reason = verdicts(report)["3.2.1/scale"]
    assert verdict == "ERROR" and "did not stop" in reason
    assert verdicts(report)["3.2.1/mask"][0] == "CONFORMS"


@pytest.mark.slow
def test_captured_output_is_capped(spec_run: Any) -> None:
    done, report = spec_run("Chatty", "-p", "no:xdist")
    assert report is not None and verdicts(report)["3.2.1/scale"][0] == "ERROR"
    assert len(done.stdout) < 200_000
    assert "more characters cut" in done.stdout
    reason = verdicts(report)["3.2.1/scale"][1]
    assert len(reason) < 2_100 and reason.endswith("more characters cut]")


@pytest.mark.slow
def test_a_thread_left_running_does_not_keep_the_run_alive(spec_run: Any) -> None:
    done, report = spec_run("LeavesThread", "-p", "no:xdist")
    assert done.returncode == 0 and report is not None and report["complete"]
    assert "kept running after the report was written" in done.stderr


@pytest.mark.slow
def test_a_fork_runs_the_session_once(spec_run: Any) -> None:
    done, report = spec_run("Forks", "-p", "no:xdist")
    assert done.returncode == 0, done.stdout[-3000:]
    assert report is not None and verdicts(report)["3.2.1/scale"][0] == "CONFORMS"
    assert done.stdout.count("Summary:") == 1


@pytest.mark.slow
def test_markup_from_the_implementation_is_inert(spec_run: Any) -> None:
    md = Path.cwd() / "r.md"
    done, _ = spec_run("Markup", "-p", "no:xdist", "--conformance-md", str(md))
    text = md.read_text()
    assert "<script>" not in text and "<img" not in text and "\r" not in text
    assert not any(line.startswith(("## injected", "# Fake")) for line in text.splitlines())
    row = next(line for line in text.splitlines() if line.startswith("| [`3.2.1/scale`]"))
    assert row.count(" | ") == 3  # four cells: the injected '|' are escaped
    assert "\x1b" not in done.stdout


@pytest.mark.parametrize(
    ("impl", "select", "clause", "message"),
    [
        ("ModelIsNone", "test_practice and test_padding", "practice/padding",
         "adapter.model returned NoneType, expected a torch.nn.Module"),
        ("ParametersAsList", "test_3_1_stacks and test_width", "3.1/width",
         "adapter.parameters returned list, expected a dict of canonical name -> Tensor"),
        ("BeamAsText", "test_beam_search", "6.1/beam-search",
         "adapter.beam_search returned str, expected a list of int token ids"),
        ("ReusedBuffer", "test_3_2_1_attention and test_permutation", "3.2.1/permutation",
         "adapter.attention returned the memory of an earlier result again"),
        ("Recurses", "test_3_2_1_attention and test_scale", "3.2.1/scale",
         "adapter.attention recursed without end (RecursionError)"),
    ],
)
def test_a_bad_return_is_named(tmp_path: Path, impl: str, select: str, clause: str,
                               message: str) -> None:
    """A method that returns the wrong kind of value, reuses its output buffer or recurses is an
    ERROR naming the method, not a confusing failure further on. The guard names it, in the
    process that runs the test: the suite runs here, without a supervisor."""
    found = run_suite(tmp_path, f"tests.hostile_adapters:{impl}", ["spec.suite"], "-k", select)
    assert found[clause]["verdict"] == "ERROR", found[clause]
    assert message in found[clause]["reason"]
