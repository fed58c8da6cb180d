"""A time limit per clause test (``--spec-timeout SECONDS``): a hang becomes ERROR, not a stuck run.

The limit is a ``SIGALRM`` timer (:func:`signal.setitimer`) armed around the test call. When it
fires, the signal handler raises :class:`Timeout` in the main thread, wherever the test is (in
the suite, in the adapter, in ``time.sleep``); the plugin reports the clause as ERROR, "timed out
after N s in adapter.attention", and the run goes on with the next test.

:class:`Timeout` derives from :class:`BaseException`, not :class:`Exception`, so that neither
hypothesis (which would catch it, then replay the hanging example while shrinking) nor an
adapter's ``except Exception`` swallows it. Should something swallow it anyway, the timer fires
again every :data:`REPEAT` seconds until the test ends.

Limits:

* Python runs signal handlers between bytecodes only. An adapter stuck inside C code that never
  returns to the interpreter (a deadlocked native library, a CUDA kernel that never finishes, a
  C loop that does not poll for signals) cannot be interrupted this way; only killing the
  process ends it. Loops in Python, ``time.sleep``, waiting on locks, threads, sockets and
  subprocesses all are interrupted.
* ``SIGALRM`` exists on POSIX systems only, and Python handles signals in the main thread only.
  Elsewhere (Windows, tests run in a worker thread) the limit is skipped with a warning. pytest
  and pytest-xdist's workers run tests in the main thread.
* Another ``SIGALRM`` timer already running (pytest-timeout's signal method, for example) is
  left alone: the limit is skipped with a warning rather than fight over the signal.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = ["DEFAULT", "REPEAT", "Timeout", "limit", "unavailable"]

DEFAULT: float = 60.0
"""Seconds a clause test may run (``--spec-timeout``). The slowest test of the suite takes about
2 s on one CPU core; the default leaves room for slow machines and coverage tracing."""

REPEAT: float = 1.0
"""Seconds between further alarms after the first, should the first :class:`Timeout` be caught."""


class Timeout(BaseException):
    """A clause test ran past ``--spec-timeout``. ``where`` names the adapter method it was in."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds
        self.where: str | None = None

    def __str__(self) -> str:
        where = f" in {self.where}" if self.where else ""
        return f"timed out after {self.seconds:g} s{where} (--spec-timeout {self.seconds:g})"


def unavailable() -> str | None:
    """Why a time limit cannot be enforced here and now, or ``None`` if it can."""
    if not hasattr(signal, "SIGALRM") or not hasattr(signal, "setitimer"):
        return "signal.SIGALRM is not available on this platform"
    if threading.current_thread() is not threading.main_thread():
        return "tests do not run in the main thread, where Python handles signals"
    if signal.getitimer(signal.ITIMER_REAL)[0] > 0:
        return "another SIGALRM timer is already running (pytest-timeout's, perhaps)"
    return None


@contextlib.contextmanager
def limit(seconds: float) -> Iterator[None]:
    """Raise :class:`Timeout` in the main thread if the block runs longer than ``seconds``.

    Check :func:`unavailable` first. The previous ``SIGALRM`` handler is restored on exit.
    """
    armed = True

    def alarm(signum: int, frame: FrameType | None) -> None:
        if armed:
            raise Timeout(seconds)

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds, REPEAT)
    try:
        yield
    finally:
        armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL if previous is None else previous)
