"""What a clause test uses to judge: the ``clause`` fixture's object.

A test of the suite is marked with the one clause it checks and receives a :class:`Check`::

    @pytest.mark.clause("3.2.1/scale")
    def test_scale(clause: Check, env: Env) -> None:
        attention = clause.require("attention")
        ...
        clause.close(actual, expected, "Attention(Q, K, V)", env.tol, bugs={...})

Passing is CONFORMS; :meth:`Check.variant` turns a pass into VARIANT; :meth:`Check.close` and
:meth:`Check.deviates` fail with a :class:`Deviation` (DEVIATES) whose message holds the clause,
its statement and equation, the diagnosis and a reproducer; a missing capability is
NOT PROVIDED; any other exception is ERROR.

The capabilities :meth:`Check.require` returns are guarded (:mod:`spec.guard`): a call that
modifies its tensor inputs in place, or returns activations in another dtype or on another
device than its inputs', deviates, naming the adapter method.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NoReturn

import torch
from torch import Tensor

from .adapter import NotProvided, capability
from .clauses import Clause
from .diagnosis import diagnose, explain
from .guard import guarded
from .tolerances import Tolerance, error_ratio
from .verdicts import Deviation

__all__ = ["Check", "Deviation", "Env"]


@dataclasses.dataclass(frozen=True)
class Env:
    """Where a numerical test runs: device, dtype, and the tolerance for that pair."""

    device: torch.device
    dtype: torch.dtype
    tol: Tolerance

    def randn(self, *shape: int, generator: torch.Generator, scale: float = 1.0) -> Tensor:
        """Standard normal values (drawn in float64 on the CPU, then moved)."""
        x = torch.randn(*shape, generator=generator, dtype=torch.float64) * scale
        return x.to(self.device, self.dtype)


class Check:
    """The judge of one clause in one test."""

    def __init__(self, clause: Clause, adapter: object, reproduce: str) -> None:
        self.clause = clause
        self.adapter = adapter
        self.reproduce = reproduce
        self.variants: list[tuple[str, str]] = []
        self.parts_checked = 0
        self._checked: set[str] = set()  # the parts checked at least once
        self._refused: dict[tuple[str, str], None] = {}  # (part, why) in the order met
        self.notes: list[str] = []

    def parts_done(self) -> None:
        """End a test made of :meth:`part` s: NOT PROVIDED, with every reason, when none of
        them could be checked."""
        if self.unchecked and not self.parts_checked:
            raise NotProvided(self.clause.id, "; ".join(self.unchecked))

    def note(self, text: str) -> None:
        """Say how the clause was judged (for example at which precision); the report shows
        ``text`` with the verdict of a passing clause."""
        if text not in self.notes:
            self.notes.append(text)

    @contextlib.contextmanager
    def part(self, what: str) -> Iterator[None]:
        """A sub-check judged on its own: when it needs a capability the adapter lacks, the
        rest of the clause is still judged, and the report says that ``what`` was not checked
        and why. A test made only of parts ends with :meth:`parts_done`."""
        try:
            yield
        except NotProvided as exc:
            self._refused[what, str(exc)] = None
        else:
            self.parts_checked += 1
            self._checked.add(what)

    @property
    def unchecked(self) -> list[str]:
        """What the parts could not check, and why. A part run on many inputs (a property
        test's examples) may have been checked on some of them: the note says so."""
        return [f"{what} where the adapter refused the input ({why})" if what in self._checked
                else f"{what} ({why})" for what, why in self._refused]

    def require(self, name: str) -> Callable[..., Any]:
        """The adapter's capability ``name``, guarded (:func:`spec.guard.guarded`); NOT PROVIDED
        if it has none."""
        return guarded(self, name, capability(self.adapter, name))

    def has(self, name: str) -> bool:
        """Whether the adapter provides ``name`` (and its declared architecture has it)."""
        try:
            capability(self.adapter, name)
        except NotProvided:
            return False
        return True

    def not_provided(self, what: str, detail: str = "") -> NoReturn:
        """Give NOT PROVIDED for something other than a missing method."""
        raise NotProvided(what, detail)

    def variant(self, name: str, reason: str) -> None:
        """Record that the implementation follows the named variant of this clause."""
        known = {v.name for v in self.clause.variants}
        if name not in known:
            raise ValueError(f"{self.clause.id} has no variant {name!r}; known: {sorted(known)}")
        if all(n != name for n, _ in self.variants):
            self.variants.append((name, reason))

    def deviates(self, summary: str, diagnosis: str | None = None,
                 criterion: str | None = None) -> NoReturn:
        """Fail the clause: ``summary`` says what is wrong, ``diagnosis`` names the bug,
        ``criterion`` the pass criterion that failed (where a number decides)."""
        c = self.clause
        lines = [f"{c.id} DEVIATES: {summary}", f"  clause: {c.title}. {c.statement}"]
        if c.equation:
            lines.append(f"  equation: {c.equation}")
        if diagnosis:
            lines.append(f"  diagnosis: {diagnosis}")
        if criterion:
            lines.append(f"  criterion: {criterion}")
        lines.append(f"  reproduce: {self.reproduce}")
        raise Deviation("\n".join(lines), summary, diagnosis, criterion)

    def expect(self, condition: bool, summary: str, diagnosis: str | None = None) -> None:
        """:meth:`deviates` unless ``condition`` holds."""
        if not condition:
            self.deviates(summary, diagnosis)

    def expect_tensor(
        self,
        value: object,
        what: str,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Deviate unless ``value`` is a tensor (with ``dtype``, on ``device``, where given).

        The check an implementation's output gets against the dtype and device it was given
        (the environment's ``env.dtype`` and ``env.device``, or its inputs'), never against
        those of an oracle result, which is float64 on the CPU. Returns ``value``.
        """
        if not isinstance(value, Tensor):
            self.deviates(f"{what}: expected a tensor, got {type(value).__name__}")
        if dtype is not None and value.dtype != dtype:
            self.deviates(f"{what} returned dtype {value.dtype}, expected {dtype}")
        if device is not None and not _same_device(value.device, torch.device(device)):
            self.deviates(f"{what} returned device {value.device}, expected {device}")
        return value

    def close(
        self,
        actual: Tensor,
        expected: Tensor,
        what: str,
        tol: Tolerance,
        bugs: Mapping[str, Tensor] | None = None,
    ) -> None:
        """Deviate unless ``actual`` matches the oracle's ``expected`` within ``tol``.

        ``bugs`` maps known-bug names to the oracle's output under that bug; the one that
        ``actual`` matches becomes the diagnosis.
        """
        if not isinstance(actual, Tensor):
            self.deviates(f"{what}: expected a tensor, got {type(actual).__name__}")
        if tuple(actual.shape) != tuple(expected.shape):
            self.deviates(f"{what}: shape {list(actual.shape)}, expected {list(expected.shape)}")
        if actual.device.type == "meta":
            self.deviates(f"{what}: the output is on device meta (it holds no values)")
        if actual.is_floating_point() and not bool(torch.isfinite(actual).all()):
            nan, inf = int(actual.isnan().sum()), int(actual.isinf().sum())
            self.deviates(
                f"{what}: the output holds NaN or Inf ({nan} NaN, {inf} Inf of "
                f"{actual.numel()} entries)"
            )
        ratio = error_ratio(actual, expected, tol)
        if ratio <= 1.0:
            return
        found = explain(diagnose(actual, expected, bugs or {}, tol))
        self.deviates(
            f"{what} differs from the paper's equation by {ratio:.3g} times the tolerance "
            f"(rtol={tol.rtol:g}, atol={tol.atol:g})",
            found,
            f"|actual - expected| <= atol + rtol |expected| everywhere, rtol={tol.rtol:g}, "
            f"atol={tol.atol:g} ({tol.why})",
        )


def _same_device(actual: torch.device, expected: torch.device) -> bool:
    """Whether two devices are the same; one without an index (``cuda``: the current CUDA
    device) matches any index of its type."""
    if actual.type != expected.type:
        return False
    if actual.index is None or expected.index is None:
        return True
    return actual.index == expected.index
