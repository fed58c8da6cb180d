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
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import torch
from torch import Tensor

from .adapter import NotProvided, capability
from .clauses import Clause
from .diagnosis import explain
from .tolerances import Tolerance, diagnose, error_ratio


class Deviation(AssertionError):
    """A clause is violated. ``diagnosis`` names the known bug that explains it, if one does."""

    def __init__(self, message: str, summary: str, diagnosis: str | None = None) -> None:
        super().__init__(message)
        self.summary = summary
        self.diagnosis = diagnosis


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

    def require(self, name: str) -> Callable[..., Any]:
        """The adapter's capability ``name``; NOT PROVIDED if it has none."""
        return capability(self.adapter, name)

    def has(self, name: str) -> bool:
        """Whether the adapter provides ``name``."""
        return getattr(self.adapter, name, None) is not None

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

    def deviates(self, summary: str, diagnosis: str | None = None) -> NoReturn:
        """Fail the clause: ``summary`` says what is wrong, ``diagnosis`` names the bug."""
        c = self.clause
        lines = [f"{c.id} DEVIATES: {summary}", f"  clause: {c.title}. {c.statement}"]
        if c.equation:
            lines.append(f"  equation: {c.equation}")
        if diagnosis:
            lines.append(f"  diagnosis: {diagnosis}")
        lines.append(f"  reproduce: {self.reproduce}")
        raise Deviation("\n".join(lines), summary, diagnosis)

    def expect(self, condition: bool, summary: str, diagnosis: str | None = None) -> None:
        """:meth:`deviates` unless ``condition`` holds."""
        if not condition:
            self.deviates(summary, diagnosis)

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
        if actual.is_floating_point() and not bool(torch.isfinite(actual).all()):
            self.deviates(f"{what}: the output holds NaN or Inf")
        ratio = error_ratio(actual, expected, tol)
        if ratio <= 1.0:
            return
        found = explain(diagnose(actual, expected, bugs or {}, tol))
        self.deviates(
            f"{what} differs from the paper's equation by {ratio:.3g} times the tolerance "
            f"(rtol={tol.rtol:g}, atol={tol.atol:g})",
            found,
        )
