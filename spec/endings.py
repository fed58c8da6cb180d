"""How a clause test ended when it did not end with a verdict, and what is kept of it: the
time limit or the implementation's own error found inside whatever was raised, captured output
and reasons cut to size, a test whose process died, and the outcomes of a run resumed after a
crash (:mod:`spec.plugin` reports them all)."""

from __future__ import annotations

import importlib
import json
import os

import pytest

from . import progress, timeout
from .verdicts import Outcome

__all__ = [
    "CAPTURE_LIMIT", "REASON_LIMIT", "cap_output", "clause_of", "clip", "ended_abruptly",
    "found_in", "resumed", "timeout_in",
]


def timeout_in(exc: BaseException | None) -> timeout.Timeout | None:
    """The :class:`~spec.timeout.Timeout` that ``exc`` is, or that it was raised while handling
    (``__context__``, ``__cause__``), if any."""
    found = found_in(exc, (timeout.Timeout,))
    return found if isinstance(found, timeout.Timeout) else None


def found_in(exc: BaseException | None, kinds: tuple[type[BaseException], ...]
              ) -> BaseException | None:
    """The first exception of ``kinds`` that ``exc`` is, was raised while handling
    (``__context__``, ``__cause__``) or groups (hypothesis's flaky failures and exception
    groups hold the errors of each example), if any."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop(0)
        if current is None or id(current) in seen:
            continue
        if isinstance(current, kinds):
            return current
        seen.add(id(current))
        todo += [current.__cause__, current.__context__,
                 *getattr(current, "exceptions", ())]
    return None


CAPTURE_LIMIT = 20_000
"""Characters of captured output, and of a failure's text, kept per clause test (an
implementation printing megabytes per call must not flood the terminal or the report)."""


REASON_LIMIT = 2_000
"""Characters of a verdict's reason kept in the reports (an exception message can be huge)."""


def clip(text: str) -> str:
    """``text`` cut to :data:`REASON_LIMIT` characters, saying how much was cut."""
    if len(text) <= REASON_LIMIT:
        return text
    return f"{text[:REASON_LIMIT]}... [{len(text) - REASON_LIMIT} more characters cut]"


def cap_output(rep: pytest.TestReport) -> None:
    """Cut the captured output sections and the failure text of ``rep`` to
    :data:`CAPTURE_LIMIT` characters each, saying how much was cut."""

    def cut(text: str) -> str:
        if len(text) <= CAPTURE_LIMIT:
            return text
        return (f"{text[:CAPTURE_LIMIT]}\n... [attention-spec: {len(text) - CAPTURE_LIMIT} more "
                "characters cut]")

    rep.sections = [(title, cut(content)) for title, content in rep.sections]
    if rep.longrepr is not None and len(str(rep.longrepr)) > CAPTURE_LIMIT:
        rep.longrepr = cut(str(rep.longrepr))


# -- runs cut short ---------------------------------------------------------------------------
def resumed() -> tuple[list[Outcome], set[str]]:
    """The outcomes and finished tests of the earlier attempts of a resumed run (the file
    ``$ATTENTION_SPEC_RESUME`` names: see :data:`spec.progress.RESUME_VAR`)."""
    path = os.environ.get(progress.RESUME_VAR)
    if not path:
        return [], set()
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return [Outcome.from_json(o) for o in data["outcomes"]], set(data["done"])


def clause_of(nodeid: str) -> str | None:
    """The clause a suite test checks, from its node id alone (what pytest-xdist's controller
    has of a test whose worker died); None for a test outside the suite."""
    path, _, name = nodeid.partition("::")
    module_name = os.path.basename(path).removesuffix(".py")
    if not module_name.startswith("test_"):
        return None
    try:
        module = importlib.import_module(f"spec.suite.{module_name}")
    except ImportError:
        return None
    function = getattr(module, name.split("[", 1)[0], None)
    for mark in getattr(function, "pytestmark", []):
        if mark.name == "clause" and mark.args:
            return str(mark.args[0])
    return None


def ended_abruptly(nodeid: str) -> str:
    """The reason given for a test whose process died: the supervisor's, if it ended it."""
    for event in reversed(progress.read(os.environ.get(progress.ENV_VAR) or os.devnull)):
        if event["event"] == "killed" and event.get("test") == nodeid:
            return str(event["reason"])
    return ("the process running this test ended abruptly (os._exit, a signal, or a crash in "
            "native code); the run went on without it")
