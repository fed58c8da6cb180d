"""The pytest plugin: verdicts and the conformance report (the fixtures: :mod:`spec.fixtures`;
tests that end without a verdict: :mod:`spec.endings`).

:mod:`spec.pytest_plugin` (the ``pytest11`` entry point) declares the options and registers
this module when pytest is configured. It is active wherever the package is installed and
stays silent in runs that collect no clause test.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import threading
from collections.abc import Generator
from typing import Any

import pytest
import torch

from . import __version__, progress, report, strategies, timeout
from .adapter import ENV_VAR, Adapter, AdapterError, NotProvided, load_adapter
from .check import Check, Deviation
from .clauses import CLAUSES
from .endings import (
    cap_output,
    clause_of,
    clip,
    ended_abruptly,
    found_in,
    resumed,
    timeout_in,
)
from .guard import ImplementationAssertion, ImplementationError, interrupts
from .verdicts import Outcome, Verdict

CHECK_KEY = pytest.StashKey[Check]()
PROPERTY = "attention-spec"


def parse_expected(path: str) -> dict[str, str]:
    """Read an expected-deviations file: ``clause-id: reason`` per line; a line whose first
    non-blank character is ``#`` is a comment (a ``#`` inside a reason is part of it). A UTF-8
    byte-order mark is allowed; an unknown clause id, a missing reason or a file that is not
    UTF-8 text stops the run with one line naming the file and the line."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise pytest.UsageError(f"--expected-deviations: cannot read {path}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise pytest.UsageError(
            f"--expected-deviations: {path} is not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    expected: dict[str, str] = {}
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        clause_id, sep, reason = line.partition(": ")
        if not sep or not reason.strip():
            raise pytest.UsageError(
                f"{path}:{number}: each expected deviation needs a reason: 'clause-id: reason', "
                f"got {line!r}"
            )
        if clause_id.strip() not in CLAUSES:
            raise pytest.UsageError(
                f"{path}:{number}: unknown clause {clause_id.strip()!r} (clause ids are listed by "
                "spec.clauses.CLAUSES and on the site's clause pages)"
            )
        expected[clause_id.strip()] = reason.strip()
    return expected


def check_output_path(option: str, path: str | None) -> None:
    """Stop before the run if the report could not be written to ``path`` at its end: a
    directory, or a place under a file or without write permission."""
    if not path:
        return
    if os.path.isdir(path):
        raise pytest.UsageError(f"{option}: {path} is a directory; give a file name")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):  # report.write creates the missing folders
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise pytest.UsageError(f"{option}: cannot write {path}: {parent} is not a directory")
    target = path if os.path.exists(path) else parent
    if not os.access(target, os.W_OK):
        raise pytest.UsageError(f"{option}: cannot write {path}: permission denied on {target}")


class ConformancePlugin:
    """Collects per-test outcomes (on the xdist controller too) and writes the report."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.outcomes: list[Outcome] = []
        impl = config.getoption("--impl")
        if impl is not None and not impl.strip():
            raise pytest.UsageError(
                "--impl is empty: name an adapter (reference, torch.nn, ... or module:attribute)"
            )
        self.impl = impl or None
        path = config.getoption("--expected-deviations")
        self.expected = parse_expected(path) if path else {}
        for option in ("--conformance-json", "--conformance-md"):
            check_output_path(option, config.getoption(option))
        self.adapter: Adapter | None = None
        seconds = config.getoption("--spec-timeout")
        self.timeout = timeout.DEFAULT if seconds is None else float(seconds)
        if not (math.isfinite(self.timeout) and self.timeout >= 0):
            raise pytest.UsageError(
                f"--spec-timeout must be a number of seconds, 0 (no limit) or more, got {seconds}"
            )
        if config.getoption("usepdb", False) or config.getoption("trace", False):
            self.timeout = 0.0  # a debugging session must not be interrupted
        self.timeout_warned = False
        self.runs_tests = hasattr(config, "workerinput") or not getattr(
            config.option, "numprocesses", None
        )  # this process runs tests (not an xdist controller)
        self.stopped: str | None = None  # why the session ended early, if it did
        self.exitstatus: int | None = None
        self.restore_sigint = interrupts.install()
        prior, self.skip = resumed()
        self.prior_failed = False
        if not hasattr(config, "workerinput"):
            self.outcomes.extend(prior)  # a resumed run's report covers the earlier attempts
            self.prior_failed = any(
                o.verdict is Verdict.ERROR or (o.verdict is Verdict.DEVIATES and not o.expected)
                for o in prior
            )

    def load(self) -> Adapter:
        """The adapter under test, loaded once; a bad ``--impl`` stops the run with its reason,
        and so does an adapter module that hangs while it is imported."""
        if self.adapter is None:
            limit = (
                timeout.limit(self.timeout)
                if self.timeout and timeout.unavailable() is None
                else contextlib.nullcontext()
            )
            try:
                with limit:
                    self.adapter = load_adapter(self.impl)
            except AdapterError as exc:
                raise pytest.UsageError(f"attention-spec: {exc}") from None
            except timeout.Timeout as exc:
                raise pytest.UsageError(f"attention-spec: loading the adapter {exc}") from None
        return self.adapter

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        if self.skip:  # a resumed run: the tests an earlier attempt finished are not run again
            done = [item for item in items if item.nodeid in self.skip]
            items[:] = [item for item in items if item.nodeid not in self.skip]
            self.config.hook.pytest_deselected(items=done)
        if any(item.get_closest_marker("clause") for item in items):
            self.load()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        marker = item.get_closest_marker("clause")
        if marker is not None:
            progress.record("start", test=item.nodeid, clause=marker.args[0], limit=self.timeout,
                            tid=threading.get_native_id(), waited=timeout.waited())

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        if self.runs_tests:
            progress.record("finish", test=nodeid)

    # -- per test ---------------------------------------------------------------------------
    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, None, None]:
        """Clause tests run under ``--spec-timeout`` (:mod:`spec.timeout`)."""
        if not self.timeout or item.get_closest_marker("clause") is None:
            return (yield)
        why = timeout.unavailable()
        if why is not None:
            if not self.timeout_warned:
                self.timeout_warned = True
                item.warn(pytest.PytestWarning(f"--spec-timeout is not enforced: {why}"))
            return (yield)
        with timeout.limit(self.timeout):
            return (yield)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, Any, None]:
        result = yield
        rep: pytest.TestReport = result.get_result()
        marker = item.get_closest_marker("clause")
        if marker is None or rep.when == "teardown" or (rep.when == "setup" and rep.passed):
            return
        outcome = self._outcome(item, call, rep, marker.args[0])
        if outcome is None:
            return
        if outcome.verdict in (Verdict.DEVIATES, Verdict.ERROR):  # where, and how to rerun it
            env = getattr(getattr(item, "callspec", None), "params", {}).get("env")
            outcome.run = f"{env[0]} {str(env[1]).removeprefix('torch.')}" if env else None
            check = item.stash.get(CHECK_KEY, None)
            outcome.reproduce = check.reproduce if check is not None else reproduce(
                item, self.impl)
        # an expected deviation excuses a DEVIATES only: an ERROR (a crash, a timeout) is not
        # the deviation that was declared
        if outcome.verdict == Verdict.DEVIATES and outcome.clause in self.expected:
            outcome.expected = self.expected[outcome.clause]
            rep.outcome = "skipped"
            rep.wasxfail = f"expected deviation: {outcome.expected}"
        cap_output(rep)
        outcome.reason = clip(outcome.reason)
        rep.user_properties.append((PROPERTY, outcome.to_json()))
        progress.record("outcome", test=item.nodeid, outcome=outcome.to_json())

    def _outcome(
        self, item: pytest.Item, call: pytest.CallInfo[None], rep: pytest.TestReport, cid: str
    ) -> Outcome | None:
        excinfo = call.excinfo
        test = item.nodeid
        raised = leaves(excinfo.value) if excinfo is not None else []
        if raised and all(isinstance(e, NotProvided) for e in raised):
            message = str(raised[0])
            rep.outcome = "skipped"
            path, line, _ = item.location
            rep.longrepr = (str(path), (line or 0) + 1, f"NOT PROVIDED: {message}")
            return Outcome(cid, Verdict.NOT_PROVIDED, message, test=test)
        if rep.skipped:
            return None  # skipped for another reason (no CUDA device): no verdict
        if rep.passed:
            check = item.stash.get(CHECK_KEY, None)
            variants = check.variants if check is not None else []
            unchecked = check.unchecked if check is not None else []
            extra = [*check.notes] if check is not None else []
            if unchecked:
                extra.append(f"not checked: {'; '.join(unchecked)}")
            if variants:
                names = ", ".join(n for n, _ in variants)
                reasons = "; ".join([*(r for _, r in variants), *extra])
                return Outcome(cid, Verdict.VARIANT, reasons, variant=names, test=test)
            return Outcome(cid, Verdict.CONFORMS, "; ".join(extra), test=test)
        assert excinfo is not None
        timed_out = timeout_in(excinfo.value)
        if timed_out is not None:  # hypothesis may raise another error while handling it
            return Outcome(cid, Verdict.ERROR, str(timed_out), test=test)
        dev = deviation_in(excinfo.value)
        if dev is not None:
            return Outcome(cid, Verdict.DEVIATES, dev.summary, diagnosis=dev.diagnosis, test=test,
                           criterion=dev.criterion)
        if isinstance(excinfo.value, AssertionError):
            first = str(excinfo.value).strip().splitlines()
            return Outcome(
                cid, Verdict.DEVIATES, first[0] if first else "assertion failed", test=test
            )
        named = found_in(excinfo.value, (ImplementationAssertion, ImplementationError))
        if named is not None:  # hypothesis may wrap it (a flaky failure, an exception group)
            reason = str(named).strip().splitlines()[0]
        else:
            reason = f"{excinfo.typename}: {excinfo.value}".strip().splitlines()[0]
        not_run = self._not_checked(item, cid)
        if not_run is not None:
            return Outcome(cid, Verdict.NOT_PROVIDED, not_run, test=test)
        where = "while setting up the test" if rep.when == "setup" else "raised"
        return Outcome(cid, Verdict.ERROR, f"{where}: {reason}", test=test)

    def _not_checked(self, item: pytest.Item, cid: str) -> str | None:
        """Why a test that raised checked nothing, if the model does not run at all where the
        test ran it (the dtype and device of its ``env``, else CPU float64): the other runs
        of the clause then decide, and practice/devices-dtypes reports the failure."""
        if self.adapter is None or cid == "practice/devices-dtypes":
            return None
        callspec = getattr(item, "callspec", None)
        device, dtype = (callspec.params.get("env") if callspec else None) or ("cpu",
                                                                                torch.float64)
        from spec.suite.helpers.dtype_probe import fails_in

        why = fails_in(self.adapter, device, dtype)
        if why is None:
            return None
        name = str(dtype).removeprefix("torch.")
        return (f"not checked in {name} on {device}: the model does not run there ({why}); "
                "practice/devices-dtypes reports it")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for name, value in report.user_properties:
            if name == PROPERTY and isinstance(value, dict):
                self.outcomes.append(Outcome.from_json(value))
        if report.when == "???" and report.failed:  # pytest-xdist: the worker running it died
            cid = clause_of(report.nodeid)
            if cid is not None:
                self.outcomes.append(Outcome(cid, Verdict.ERROR, ended_abruptly(report.nodeid),
                                             test=report.nodeid))

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.prior_failed and exitstatus == pytest.ExitCode.OK:
            session.exitstatus = exitstatus = pytest.ExitCode.TESTS_FAILED  # an earlier attempt's
        self.exitstatus = int(exitstatus)
        if exitstatus == pytest.ExitCode.INTERRUPTED:
            self.stopped = "interrupted (KeyboardInterrupt)"
        elif session.shouldfail or session.shouldstop:
            self.stopped = f"stopped early ({session.shouldfail or session.shouldstop})"

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.restore_sigint()
        if not hasattr(config, "workerinput"):
            progress.record("done", exitstatus=self.exitstatus)

    # -- the report -------------------------------------------------------------------------
    def environment(self) -> dict[str, str]:
        devices = "cpu" + (
            f", cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else ""
        )
        return {
            "spec": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "devices": devices,
            "profile": strategies.active_profile(),
        }

    def pytest_report_header(self, config: pytest.Config) -> str:
        impl = self.impl or f"${ENV_VAR} or reference"
        env = ", ".join(f"{k} {v}" for k, v in self.environment().items())
        return f"attention-spec: implementation {impl}; {env}"

    def build_report(self) -> report.Report:
        name = self.adapter.name if self.adapter is not None else self.impl or "reference"
        return report.build(name, self.outcomes, self.environment(), stopped=self.stopped)

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if hasattr(self.config, "workerinput") or not self.outcomes:
            return
        rep = self.build_report()
        terminalreporter.write_sep("=", "conformance")
        terminalreporter.write_line(report.table(rep, width=terminalreporter._tw.fullwidth))
        for clause_id, reason in self.expected.items():
            verdicts = {c.id: c.verdict for c in rep.clauses}
            if verdicts.get(clause_id) in (Verdict.CONFORMS, Verdict.VARIANT):
                terminalreporter.write_line(
                    f"note: {clause_id} was expected to deviate ({reason}) but passes now"
                )
        json_path = self.config.getoption("--conformance-json")
        md_path = self.config.getoption("--conformance-md")
        report.write(rep, json_path, md_path)
        for path in (json_path, md_path):
            if path:
                terminalreporter.write_line(f"conformance report written to {path}")


def leaves(exc: BaseException) -> list[BaseException]:
    """``exc``, or the exceptions of an exception group (hypothesis raises one when examples
    fail in distinct ways), nested groups opened."""
    group = getattr(exc, "exceptions", None)
    if not isinstance(group, (list, tuple)):
        return [exc]
    return [leaf for member in group for leaf in leaves(member)]


def deviation_in(exc: BaseException) -> Deviation | None:
    """The deviation ``exc`` reports: itself, or the first of an exception group made only of
    deviations and of inputs the adapter refused (``NotProvided``), so that a refused input
    never hides a deviation found on another. A group holding anything else is an ERROR, as
    that exception alone would be."""
    found = leaves(exc)
    if all(isinstance(e, (Deviation, NotProvided)) for e in found):
        return next((e for e in found if isinstance(e, Deviation)), None)
    return None


def reproduce(item: pytest.Item, impl: str | None) -> str:
    """The command that reruns one clause test against the same implementation."""
    return f"pytest '{item.path}::{item.name}' --impl {impl or 'reference'}"


def configure(config: pytest.Config) -> None:
    """Called by :mod:`spec.pytest_plugin` once pytest is configured."""
    try:
        strategies.select_profile(config.getoption("--spec-profile"))
    except ValueError as exc:  # an unknown $TRANSFORMER_SPEC_PROFILE
        raise pytest.UsageError(f"attention-spec: {exc}") from None
    config.pluginmanager.register(ConformancePlugin(config), "attention-spec-report")


def plugin_of(config: pytest.Config) -> ConformancePlugin:
    """The registered :class:`ConformancePlugin` of ``config``."""
    plugin = config.pluginmanager.get_plugin("attention-spec-report")
    assert isinstance(plugin, ConformancePlugin)
    return plugin
