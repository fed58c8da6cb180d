"""A time limit per clause test (``--spec-timeout SECONDS``): a hang becomes ERROR, not a stuck run.

The limit is a ``SIGALRM`` timer (:func:`signal.setitimer`) armed around the test call. When it
fires, the signal handler raises :class:`Timeout` in the main thread, wherever the test is (in
the suite, in the adapter, in ``time.sleep``); the plugin reports the clause as ERROR, "timed out
after N s in adapter.attention", and the run goes on with the next test.

The time counted is the test's own: wall-clock time less the time its thread spent waiting for
a CPU that other processes held (Linux's ``/proc/self/task/<tid>/schedstat``; elsewhere, plain
wall-clock time). A verdict does not depend on the machine's load: on two cores shared with
another job, a test that takes 20 s alone still has its 60 s, and a sleeping hang is still
caught after 60 s.

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
* An implementation that cancels the timer (``signal.alarm(0)``) does not escape it: a watchdog
  thread sends ``SIGALRM`` to the main thread every :data:`REPEAT` seconds once the deadline has
  passed. One that catches :class:`Timeout` and carries on is stopped when its method returns:
  the guard around every adapter call (:mod:`spec.guard`) calls :func:`check`. One that catches
  it and never returns, or replaces the signal handler, only the supervisor of ``python -m
  spec`` (:mod:`spec.cli`) can stop: it ends the process that runs the test.
* ``SIGALRM`` exists on POSIX systems only, and Python handles signals in the main thread only.
  Elsewhere (Windows, tests run in a worker thread) the limit is skipped with a warning. pytest
  and pytest-xdist's workers run tests in the main thread.
* Another ``SIGALRM`` timer already running (pytest-timeout's signal method, for example) is
  left alone: the limit is skipped with a warning rather than fight over the signal.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType

__all__ = [
    "DEFAULT", "REPEAT", "Timeout", "check", "limit", "unavailable", "waited", "waited_in",
]

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


def waited(tid: int | None = None) -> float:
    """Seconds the thread ``tid`` (native id; default: the calling thread) of this process has
    spent runnable but waiting for a CPU; 0 where the kernel does not say."""
    return waited_in(os.getpid(), tid or threading.get_native_id())


def waited_in(pid: int, tid: int) -> float:
    """:func:`waited` for thread ``tid`` of process ``pid`` (the supervisor reads its child's)."""
    try:
        with open(f"/proc/{pid}/task/{tid}/schedstat", encoding="ascii") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


class _Clock:
    """The time a block of the main thread has had: wall-clock time since it started, less the
    time the thread waited for a CPU."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.tid = threading.get_native_id()
        self.start = time.monotonic()
        self.start_waited = waited(self.tid)

    def expired(self) -> bool:
        wall = time.monotonic() - self.start
        if wall < self.seconds:  # waiting only takes time away: /proc need not be read (check()
            return False  # runs at every adapter call)
        return wall - (waited(self.tid) - self.start_waited) >= self.seconds


_clock: _Clock | None = None
"""The limit in force, if any."""


def check() -> None:
    """Raise :class:`Timeout` if the limit in force has passed (something swallowed it)."""
    if _clock is not None and _clock.expired():
        raise Timeout(_clock.seconds)


@contextlib.contextmanager
def limit(seconds: float) -> Iterator[None]:
    """Raise :class:`Timeout` in the main thread if the block runs longer than ``seconds``.

    Check :func:`unavailable` first. The previous ``SIGALRM`` handler is restored on exit.
    """
    global _clock
    armed = True
    done = threading.Event()
    clock = _Clock(seconds)

    def alarm(signum: int, frame: FrameType | None) -> None:
        if armed and clock.expired():  # else the thread waited for a CPU: the timer repeats
            raise Timeout(seconds)

    def watchdog(main: int) -> None:  # the timer may have been cancelled: signal again
        if done.wait(seconds + REPEAT):
            return
        while not done.wait(REPEAT):
            signal.pthread_kill(main, signal.SIGALRM)

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds, REPEAT)
    _clock = clock
    guard = threading.Thread(target=watchdog, args=(threading.get_ident(),), daemon=True,
                             name="attention-spec-watchdog")
    guard.start()
    try:
        yield
    finally:
        armed = False
        done.set()
        guard.join()  # before the handler goes: a SIGALRM the watchdog sent after it would get
        # the default action, which ends the process
        _clock = None
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL if previous is None else previous)
