"""The outcome never lies (issue 14): whatever an implementation does to the process -- exits,
interrupts, cancels the alarm, swallows the timeout, floods the output, leaves a thread, forks,
writes markup -- ``python -m spec`` ends with a true exit status and a complete report that
names the clause and the cause; serial and ``-n 2`` runs give the same report."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
TESTS = "test_3_2_1_attention and (test_eq1 or test_scale or test_softmax_over_keys or test_mask)"
CLAUSES = ["3.2.1/eq1", "3.2.1/scale", "3.2.1/softmax-over-keys", "3.2.1/mask"]


def spec_run(tmp_path: Path, impl: str, *args: str, timeout: float = 300
             ) -> tuple[Any, dict[str, Any] | None]:
    """``python -m spec`` on the four 3.2.1 tests above, in ``tmp_path``: (the finished
    process, the JSON report or None)."""
    import subprocess

    report = tmp_path / f"{impl}{len(args)}.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    done = subprocess.run(
        [sys.executable, "-m", "spec", "--impl", f"hostile_adapters:{impl}", "-k", TESTS,
         "--conformance-json", str(report), "-p", "no:randomly", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    return done, json.loads(report.read_text()) if report.exists() else None


def verdicts(report: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["id"]: (c["verdict"], c["reason"]) for c in report["clauses"]}


def test_an_implementation_that_exits_is_an_error_and_the_run_goes_on(tmp_path: Path) -> None:
    serial, report = spec_run(tmp_path, "Exits", "-p", "no:xdist")
    assert serial.returncode == 1, serial.stderr[-3000:]
    assert report is not None and report["complete"]
    found = verdicts(report)
    assert list(found) == CLAUSES
    assert found["3.2.1/scale"][0] == "ERROR"
    assert "ended abruptly" in found["3.2.1/scale"][1]
    assert {v for c, (v, _) in found.items() if c != "3.2.1/scale"} == {"CONFORMS"}
    assert "during" in serial.stderr and "test_scale" in serial.stderr
    parallel, report2 = spec_run(tmp_path, "Exits", "-n", "2")
    assert parallel.returncode == 1
    assert report2 is not None and verdicts(report2) == found  # serial and -n 2 agree
    assert not list(tmp_path.glob(".hypothesis")) and not list(Path("/tmp").glob(
        f"attention-spec-hypothesis-*{os.getpid()}"))


def test_a_keyboard_interrupt_raised_by_the_implementation_is_its_error(tmp_path: Path) -> None:
    serial, report = spec_run(tmp_path, "RaisesInterrupt", "-p", "no:xdist")
    assert serial.returncode == 1 and report is not None and report["complete"]
    assert verdicts(report)["3.2.1/scale"] == (
        "ERROR", "raised: adapter.attention raised KeyboardInterrupt")
    _, report2 = spec_run(tmp_path, "RaisesInterrupt", "-n", "2")
    assert report2 is not None and verdicts(report2) == verdicts(report)


def test_ctrl_c_gives_an_incomplete_report_that_says_so(tmp_path: Path) -> None:
    done, report = spec_run(tmp_path, "CtrlC", "-p", "no:xdist")
    assert done.returncode == pytest.ExitCode.INTERRUPTED
    assert report is not None and not report["complete"]
    assert "interrupted" in report["stopped"]
    assert "INCOMPLETE" in done.stdout


def test_the_default_device_is_restored(tmp_path: Path) -> None:
    done, report = spec_run(tmp_path, "DefaultDevice", "-p", "no:xdist")
    assert report is not None
    assert {v for v, _ in verdicts(report).values()} <= {"CONFORMS", "DEVIATES", "ERROR"}
    others = {c: v for c, (v, _) in verdicts(report).items() if c != "3.2.1/scale"}
    assert set(others.values()) == {"CONFORMS"}, done.stdout[-3000:]


@pytest.mark.parametrize("impl", ["CancelsAlarm", "SwallowsTimeout"])
def test_the_time_limit_cannot_be_escaped(tmp_path: Path, impl: str) -> None:
    done, report = spec_run(tmp_path, impl, "-p", "no:xdist", "--spec-timeout", "5",
                            timeout=200)
    assert done.returncode == 1 and report is not None, done.stderr[-3000:]
    verdict, reason = verdicts(report)["3.2.1/scale"]
    assert verdict == "ERROR" and "timed out after 5 s in adapter.attention" in reason
    assert verdicts(report)["3.2.1/mask"][0] == "CONFORMS"


def test_a_test_that_never_returns_is_ended_by_the_supervisor(tmp_path: Path) -> None:
    done, report = spec_run(tmp_path, "NeverReturns", "-p", "no:xdist", "--spec-timeout", "5",
                            timeout=200)
    assert done.returncode == 1 and report is not None and report["complete"]
    verdict, reason = verdicts(report)["3.2.1/scale"]
    assert verdict == "ERROR" and "did not stop" in reason
    assert verdicts(report)["3.2.1/mask"][0] == "CONFORMS"


def test_captured_output_is_capped(tmp_path: Path) -> None:
    done, report = spec_run(tmp_path, "Chatty", "-p", "no:xdist")
    assert report is not None and verdicts(report)["3.2.1/scale"][0] == "ERROR"
    assert len(done.stdout) < 200_000
    assert "more characters cut" in done.stdout


def test_a_thread_left_running_does_not_keep_the_run_alive(tmp_path: Path) -> None:
    done, report = spec_run(tmp_path, "LeavesThread", "-p", "no:xdist", timeout=120)
    assert done.returncode == 0 and report is not None and report["complete"]
    assert "kept running after the report was written" in done.stderr


def test_a_fork_runs_the_session_once(tmp_path: Path) -> None:
    done, report = spec_run(tmp_path, "Forks", "-p", "no:xdist")
    assert done.returncode == 0, done.stdout[-3000:]
    assert report is not None and verdicts(report)["3.2.1/scale"][0] == "CONFORMS"
    assert done.stdout.count("Summary:") == 1


def test_markup_from_the_implementation_is_inert(tmp_path: Path) -> None:
    md = tmp_path / "r.md"
    done, _ = spec_run(tmp_path, "Markup", "-p", "no:xdist", "--conformance-md", str(md))
    text = md.read_text()
    assert "<script>" not in text and "<img" not in text and "\r" not in text
    assert not any(line.startswith(("## injected", "# Fake")) for line in text.splitlines())
    row = next(line for line in text.splitlines() if line.startswith("| `3.2.1/scale`"))
    assert row.count(" | ") == 2  # three cells: the injected '|' are escaped
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
    ERROR naming the method, not a confusing failure further on."""
    import subprocess

    report = tmp_path / "r.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    done = subprocess.run(
        [sys.executable, "-m", "spec", "--impl", f"hostile_adapters:{impl}", "-k", select,
         "--conformance-json", str(report), "-p", "no:xdist"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert report.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    found = {c["id"]: c for c in json.loads(report.read_text())["clauses"]}
    assert found[clause]["verdict"] == "ERROR", found[clause]
    assert message in found[clause]["reason"]
