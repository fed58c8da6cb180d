"""Judging an output: within tolerance of the oracle, or the known bug it reproduces; and which
input positions move which output positions."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from spec.check import Check, Env
from spec.diagnosis import diagnose, explain
from spec.tolerances import Tolerance, error_ratio


def diagnosis(
    actual: Tensor, expected: Tensor, bugs: Mapping[str, Tensor], tol: Tolerance
) -> str | None:
    """``name: meaning`` of the known bug among ``bugs`` that ``actual`` reproduces, if any."""
    return explain(diagnose(actual, expected, bugs, tol))


def influence(
    fn: Callable[[Tensor], Tensor],
    x: Tensor,
    env: Env,
    rng: torch.Generator,
    scale: float = 3.0,
) -> Tensor:
    """Bool ``[L_out, L_in]``: whether output position i moves (by more than ``env.tol``) when
    input position j alone is redrawn. ``x`` ``[B, L_in, ...]``; ``fn(x)`` ``[B, L_out, ...]``.

    The new values are ``scale`` times standard normal, so a real dependency moves the output
    far more than rounding, in every dtype.
    """
    base = fn(x).detach()
    columns = []
    for j in range(x.shape[1]):
        moved = x.clone()
        moved[:, j] = env.randn(*moved[:, j].shape, generator=rng, scale=scale)
        out = fn(moved).detach()
        rows = [error_ratio(out[:, i], base[:, i], env.tol) > 1.0 for i in range(out.shape[1])]
        columns.append(torch.tensor(rows, dtype=torch.bool))
    return torch.stack(columns, dim=1)


def judge(
    clause: Check,
    actual: Tensor,
    expected: Tensor,
    what: str,
    tol: Tolerance,
    bugs: Callable[[], Mapping[str, Tensor]],
) -> None:
    """:meth:`Check.close`, computing the bug candidates (``bugs()``) only when ``actual`` does
    not match: a conforming implementation does not pay for the diagnosis."""
    if not isinstance(actual, Tensor) or error_ratio(actual, expected, tol) > 1.0:
        clause.close(actual, expected, what, tol, bugs())
