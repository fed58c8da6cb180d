"""Adapters that attack the run itself rather than compute wrong numbers (issue 14).

Each misbehaves only in one test, named by ``$PYTEST_CURRENT_TEST`` (``test_scale`` of 3.2.1),
so that a run shows both the damage and that the rest of the run is intact. They are used by
``tests/test_outcomes.py`` through ``python -m spec --impl hostile_adapters:NAME``.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import torch
from torch import Tensor

from spec.adapters.reference import ReferenceAdapter


def _in(test: str) -> bool:
    return f"::{test}[" in os.environ.get("PYTEST_CURRENT_TEST", "")


class Exits(ReferenceAdapter):
    """``os._exit(0)`` in the middle of 3.2.1/scale: the process ends with status 0."""

    name = "exits"

    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        if _in("test_scale"):
            os._exit(0)
        return super().attention(q, k, v, mask)


class RaisesInterrupt(ReferenceAdapter):
    """Raises ``KeyboardInterrupt`` itself in 3.2.1/scale (no Ctrl-C was pressed)."""

    name = "raises-interrupt"

    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        if _in("test_scale"):
            raise KeyboardInterrupt
        return super().attention(q, k, v, mask)


class CtrlC(ReferenceAdapter):
    """The user presses Ctrl-C during 3.2.1/scale (a real ``SIGINT`` to the process)."""

    name = "ctrl-c"

    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        if _in("test_scale"):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        return super().attention(q, k, v, mask)


class DefaultDevice(ReferenceAdapter):
    """Sets torch's default device to ``meta`` in 3.2.1/scale and leaves it there."""

    name = "default-device"

    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        if _in("test_scale"):
            torch.set_default_device("meta")
        return super().attention(q, k, v, mask)


class CancelsAlarm(ReferenceAdapter):
    """Cancels the suite's alarm, then sleeps, in 3.2.1/scale."""

    name = "cancels-alarm"

    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        if _in("test_scale"):
            signal.alarm(0)
            signal.setitimer(signal.ITIMER_REAL, 0)
            time.sleep(600)
        return super().attention(q, k, v, mask)


class SwallowsTimeout(ReferenceAdapter):
    """Catches every interrupt in 3.2.1/scale and returns once the time limit is long past."""

    name = "swallows-timeout"

    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        if _in("test_scale"):
            end = time.monotonic() + 8
            while time.monotonic() < end:
                try:  # noqa: SIM105  (an except clause that swallows: the point of this adapter)
                    time.sleep(0.05)
                except BaseException:  # the point of this adapter
                    pass
        return super().attention(q, k, v, mask)


class NeverReturns(ReferenceAdapter):
    """Catches every interrupt in 3.2.1/scale and never returns."""

    name = "never-returns"

    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        while _in("test_scale"):
            try:  # noqa: SIM105  (an except clause that swallows: the point of this adapter)
                time.sleep(1)
            except BaseException:  # the point of this adapter
                pass
        return super().attention(q, k, v, mask)


class Chatty(ReferenceAdapter):
    """Prints 2 MB per call in 3.2.1/scale, and fails there."""

    name = "chatty"

    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        if _in("test_scale"):
            print("x" * 2_000_000)
            raise RuntimeError("y" * 2_000_000)
        return super().attention(q, k, v, mask)


class LeavesThread(ReferenceAdapter):
    """Starts a thread that never ends (not a daemon) in 3.2.1/scale."""

    name = "leaves-thread"

    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        if _in("test_scale") and not any(t.name == "forever" for t in threading.enumerate()):
            threading.Thread(target=time.sleep, args=(3600,), name="forever").start()
        return super().attention(q, k, v, mask)


class Forks(ReferenceAdapter):
    """Forks the process in 3.2.1/scale; both processes return from the call."""

    name = "forks"

    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        if _in("test_scale") and not hasattr(self, "forked"):
            self.forked = os.fork()
        return super().attention(q, k, v, mask)


class Markup(ReferenceAdapter):
    """A name and an error text full of Markdown and HTML."""

    name = "<script>alert(1)</script>\r\n# Fake | heading"

    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        if _in("test_scale"):
            raise RuntimeError("| fake | row |\r\n## injected\n<img src=x onerror=alert(1)>")
        return super().attention(q, k, v, mask)


class ModelIsNone(ReferenceAdapter):
    """``model`` returns None (a forgotten ``return``)."""

    name = "model-is-none"

    def model(self, config):  # type: ignore[no-untyped-def]
        super().model(config)


class ParametersAsList(ReferenceAdapter):
    """``parameters`` returns a list of tensors instead of a dict."""

    name = "parameters-as-list"

    def parameters(self, module):  # type: ignore[no-untyped-def]
        return list(super().parameters(module).values())


class BeamAsText(ReferenceAdapter):
    """``beam_search`` returns the hypothesis as a string."""

    name = "beam-as-text"

    def beam_search(self, model, src, src_mask, config):  # type: ignore[no-untyped-def]
        return " ".join(map(str, super().beam_search(model, src, src_mask, config)))


class ReusedBuffer(ReferenceAdapter):
    """``attention`` writes every result into one buffer and returns it."""

    name = "reused-buffer"
    buffer: Tensor | None = None

    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        out = super().attention(q, k, v, mask)
        if self.buffer is None or self.buffer.shape != out.shape or self.buffer.dtype != out.dtype:
            self.buffer = torch.empty_like(out)
        return self.buffer.copy_(out)


class Recurses(ReferenceAdapter):
    """``attention`` recurses without end."""

    name = "recurses"

    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        return self.attention(q, k, v, mask)
