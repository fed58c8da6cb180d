"""``python -m spec [pytest options]``: run the conformance suite.

This module imports neither torch nor hypothesis: pytest must import them itself (a user's
``filterwarnings = error`` turns pytest's "module already imported" warning into a crash).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest

CACHE_OPTIONS = frozenset({
    "--lf", "--last-failed", "--ff", "--failed-first", "--nf", "--new-first", "--sw",
    "--stepwise", "--sw-skip", "--stepwise-skip", "--sw-reset", "--stepwise-reset", "--lfnf",
    "--last-failed-no-failures", "--cache-show", "--cache-clear",
})
"""pytest options that need its cache (``.pytest_cache``): a run given one keeps the cache."""


def main(argv: list[str] | None = None) -> int:
    """Run the suite (``python -m spec``): pytest over ``spec.suite`` with ``argv`` added, in a
    child process that :func:`supervise` watches.

    Given paths or node ids of test files, pytest runs those instead of the whole suite, with
    the configuration it finds. The packaged suite runs with a configuration of its own: a
    ``pytest.ini`` or ``pyproject.toml`` in the current directory (``python_files``,
    ``filterwarnings``, ``addopts``...) is not applied to it, unless ``-c FILE`` says so. The
    cache (``.pytest_cache``) is off unless an option needs it (``--lf``, ``--ff``, ...).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    has_target = any(
        not a.startswith("-")
        and a.split("::")[0].endswith(".py")
        and os.path.exists(a.split("::")[0])
        for a in args
    )
    own_config = any(a == "-c" or a.startswith(("-c", "--config-file")) for a in args)
    with private_storage() as directory:
        base = [] if has_target else ["--pyargs", "spec.suite"]
        if not has_target and not own_config:
            ini = os.path.join(directory, "pytest.ini")
            with open(ini, "w", encoding="utf-8") as f:
                f.write("[pytest]\n")
            base += ["-c", ini, "--rootdir", os.getcwd()]
        if not any(a.split("=", 1)[0] in CACHE_OPTIONS for a in args):
            base += ["-p", "no:cacheprovider"]
        # -rfE: the short summary after the table lists failures and errors, not CUDA skips
        command = [sys.executable, "-m", "spec.cli", *base, "-rfE", *args]
        return supervise(command, directory)


def grace(limit: float) -> float:
    """Seconds past a test's ``--spec-timeout`` after which the supervisor ends the process
    running it (the test caught the timeout and never returned, or blocked the signal)."""
    return max(5.0, limit / 2)

LINGER = 10.0
"""Seconds the supervisor waits for the process to exit once the report is written (a thread
the implementation left running keeps it alive)."""

MAX_ATTEMPTS = 100
"""Resumed attempts after crashes before the supervisor gives up."""


def supervise(command: list[str], directory: str) -> int:
    """Run ``command`` (pytest) until its report is written, and resume it after a crash.

    The child records its progress (:mod:`spec.progress`). If it ends without writing its report
    (``os._exit``, a signal, a crash in native code), the test it was running gets ERROR and the
    run resumes with the tests not yet finished, carrying the outcomes so far: the report is
    the one an undisturbed run, or a pytest-xdist run whose worker died, would write. A test
    that runs past its time limit plus :func:`grace` is ended the same way. A child that stays
    alive :data:`LINGER` seconds after its report is stopped. The exit status is the child's;
    a selection without a clause test is the usage exit status.
    """
    from spec import progress

    log = os.path.join(directory, "progress.jsonl")
    resume = os.path.join(directory, "resume.json")
    env = {**os.environ, progress.ENV_VAR: log}
    outcomes: list[dict[str, object]] = []
    finished: list[str] = []
    for _attempt in range(MAX_ATTEMPTS):
        seen = len(progress.read(log))
        child = subprocess.Popen(command, env=env)
        code, lingered = _watch(child, log)
        events = progress.read(log)[seen:]
        done = [e for e in events if e["event"] == "done"]
        if done:
            if lingered:
                print("attention-spec: the process kept running after the report was written "
                      "(a thread the implementation started?); it was stopped", file=sys.stderr)
                code = done[-1].get("exitstatus") or 0
            if code == pytest.ExitCode.NO_TESTS_COLLECTED:
                print("attention-spec: no clause test matched the selection (-k, -m or paths); "
                      "no report written", file=sys.stderr)
                return int(pytest.ExitCode.USAGE_ERROR)
            return code
        running = _running(events)
        if running is None:  # ended before any test started, or after the last one
            print(f"attention-spec: the run ended abruptly (exit status {code}) outside any "
                  "clause test, and wrote no report", file=sys.stderr)
            return code or int(pytest.ExitCode.INTERNAL_ERROR)
        test, clause = running
        reason = _killed_reason(events, test) or (
            "the process running this test ended abruptly (os._exit, a signal, or a crash in "
            "native code); the run went on without it")
        print(f"attention-spec: the process ended abruptly (exit status {code}) during {test}; "
              "resuming after it", file=sys.stderr)
        outcomes += [e["outcome"] for e in events if e["event"] == "outcome"]
        outcomes.append({"clause": clause, "verdict": "ERROR", "reason": reason, "test": test})
        finished += [e["test"] for e in events if e["event"] == "finish"] + [test]
        with open(resume, "w", encoding="utf-8") as f:
            json.dump({"outcomes": outcomes, "done": finished}, f)
        env[progress.RESUME_VAR] = resume
    print(f"attention-spec: gave up after {MAX_ATTEMPTS} crashed attempts", file=sys.stderr)
    return int(pytest.ExitCode.INTERNAL_ERROR)


def _watch(child: subprocess.Popen[bytes], log: str) -> tuple[int, bool]:
    """Wait for ``child``; end a test process stuck past its limit, and a child that lingers
    after its report. Returns (exit status, whether it lingered)."""
    from spec import progress

    done_at: float | None = None
    previous = _ignore_sigint()
    try:
        while True:
            try:
                return child.wait(timeout=0.2), False
            except subprocess.TimeoutExpired:
                pass
            events = progress.read(log)
            now = time.time()
            if done_at is None and any(e["event"] == "done" for e in events):
                done_at = now
            if done_at is not None and now - done_at > LINGER:
                child.kill()
                return child.wait(), True
            _end_stuck(events, now, log)
    finally:
        _restore_sigint(previous)


def _end_stuck(events: list[dict[str, Any]], now: float, log: str) -> None:
    """Kill the process of each test that has run past its limit plus :func:`grace` (time
    spent waiting for a CPU not counted, as :mod:`spec.timeout` counts it)."""
    from spec import progress
    from spec.timeout import waited_in

    ended = {(e["pid"], e["test"]) for e in events if e["event"] in ("finish", "killed")}
    ended |= {(e["target"], e["test"]) for e in events if e["event"] == "killed"}
    for e in events:
        if e["event"] != "start" or (e["pid"], e["test"]) in ended or not e.get("limit"):
            continue
        used = now - e["time"] - (waited_in(e["pid"], e["tid"]) - e["waited"])  # as the test's
        if used > e["limit"] + grace(e["limit"]):  # clock counts it (spec.timeout)
            reason = (f"ran past --spec-timeout {e['limit']:g} and did not stop (the "
                      "implementation caught the interrupt or blocked it); the process "
                      "running it was ended")
            progress.record("killed", log, test=e["test"], target=e["pid"], reason=reason)
            with contextlib.suppress(ProcessLookupError):
                os.kill(e["pid"], signal.SIGKILL)


def _running(events: list[dict[str, Any]]) -> tuple[str, str] | None:
    """(test, clause) of the clause test that started and never finished, if any."""
    finished = {(e["pid"], e["test"]) for e in events if e["event"] == "finish"}
    for e in reversed(events):
        if e["event"] == "start" and (e["pid"], e["test"]) not in finished:
            return str(e["test"]), str(e["clause"])
    return None


def _killed_reason(events: list[dict[str, Any]], test: str) -> str | None:
    for e in events:
        if e["event"] == "killed" and e["test"] == test:
            return str(e["reason"])
    return None


def _ignore_sigint() -> Any:
    """Ctrl-C reaches the child too (same process group): it writes an interrupted report,
    which the supervisor waits for instead of dying first."""
    try:
        return signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: signals are not ours to handle
        return None


def _restore_sigint(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def private_storage() -> Iterator[str]:
    """A temporary directory for the run, removed at the end, where hypothesis keeps its files
    (its example database, its cache of constants) instead of ``./.hypothesis``: a run leaves no
    trace in the user's directory. ``$HYPOTHESIS_STORAGE_DIRECTORY``, when set, is used for
    hypothesis instead."""
    directory = tempfile.mkdtemp(prefix="attention-spec-hypothesis-")
    private = not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY")
    configuration = sys.modules.get("hypothesis.configuration")  # None: not imported yet
    previous = vars(configuration).get("__hypothesis_home_directory") if configuration else None
    if private:
        # hypothesis reads the variable when it first stores something; if it is imported
        # already, its home directory is set directly
        os.environ["HYPOTHESIS_STORAGE_DIRECTORY"] = directory
        if configuration is not None:
            configuration.set_hypothesis_home_dir(directory)
    try:
        yield directory
    finally:
        if private:
            del os.environ["HYPOTHESIS_STORAGE_DIRECTORY"]
            configuration = sys.modules.get("hypothesis.configuration")
            if configuration is not None:  # what it was (None: read the default again)
                configuration.set_hypothesis_home_dir(previous)
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":  # the child process of :func:`supervise`
    raise SystemExit(int(pytest.main(sys.argv[1:])))
