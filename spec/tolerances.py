"""Numerical tolerances: one table, per device and dtype, and how each value was derived.

Every numerical comparison of the suite goes through :func:`close`: an implementation's output
``a`` (in its own dtype, on its own device) matches the float64 oracle's ``e`` when, elementwise,

    |a - e| <= atol + rtol * |e|            (the rule of ``torch.isclose``)

How the values were derived
---------------------------
An error bound is (unit roundoff u of the dtype) x (growth with the depth of the computation) x
(size of the values). The suite keeps the last two small and known:

* inputs are well-conditioned: entries O(1) (standard normal inputs, weights scaled by
  1/sqrt(fan_in), LayerNorm gains near 1), so every activation is O(1) and outputs stay below
  about 5 in magnitude;
* models are small: d_model <= 64, d_ff <= 256, N <= 6 layers, sequences <= 64 tokens, so dot
  products sum at most a few hundred terms and a full encoder-decoder is a few dozen rounded
  sub-layer steps deep.

The unit roundoffs u = eps / 2 (``torch.finfo(dtype).eps / 2``) are: float64 1.1e-16, float32
6.0e-8, float16 4.9e-4, bfloat16 3.9e-3. We measured the largest error of a straightforward
PyTorch encoder-decoder (fused scaled dot-product attention, ``F.layer_norm``) against the
oracle on such inputs, for (d_model, h, d_ff, N, tokens) = (16, 4, 32, 2, 7), (64, 4, 256, 2,
12), (64, 4, 256, 6, 40) and (64, 8, 256, 6, 64): float64 at most 4e-15, float32 1.6e-6,
float16 6.2e-3, bfloat16 5.6e-2 (absolute; relative errors are large only where |e| is near 0,
which is why every row has an ``atol``). Measured against the rows below, those errors use at
most 0.12 of the float32 tolerance and 0.36 of the float16 and bfloat16 ones. The float16 and
bfloat16 figures come from PyTorch's CPU kernels (no GPU was at hand); CUDA kernels also
accumulate in float32 and should land in the same range: re-measure when one is.

The tolerances stay far below the effect of the bugs the suite must detect: on the same inputs
the known bugs move the output by 0.27 to 12 (absolute), and diagnosis itself runs in float64.

CUDA float32 assumes TF32 is off for matmuls (PyTorch's default). With TF32 on (u = 4.9e-4),
judge float32 results with the float16 row.

Naming the known bug that a deviating output reproduces, with a margin over these tolerances,
is :mod:`spec.diagnosis`'s job.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor

__all__ = [
    "TOLERANCES",
    "Tolerance",
    "close",
    "error_ratio",
    "max_error",
    "tolerance",
]


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """``|actual - expected| <= atol + rtol * |expected|``, elementwise; ``why`` justifies it."""

    rtol: float
    atol: float
    why: str


TOLERANCES: dict[tuple[str, torch.dtype], Tolerance] = {
    ("cpu", torch.float64): Tolerance(
        1e-9,
        1e-10,
        "u = 1.1e-16; measured at most 4e-15: 1e-10 leaves a factor over 1e4 for depth and "
        "summation order, and still checks the formulas to about 9 significant digits",
    ),
    ("cuda", torch.float64): Tolerance(
        1e-9,
        1e-10,
        "as on CPU: float64 kernels on CUDA differ only in summation order",
    ),
    ("cpu", torch.float32): Tolerance(
        1e-4,
        1e-5,
        "u = 6.0e-8; measured at most 1.6e-6 (about 25 u): 1e-5 + 1e-4 |e| leaves a factor of "
        "8 or more for other kernels and summation orders",
    ),
    ("cuda", torch.float32): Tolerance(
        3e-4,
        3e-5,
        "u = 6.0e-8 (TF32 off); cuBLAS and fused attention kernels reorder sums and may keep "
        "partial results differently: three times the CPU float32 row",
    ),
    ("cuda", torch.bfloat16): Tolerance(
        4e-2,
        1e-1,
        "u = 3.9e-3 (8-bit significand); measured at most 5.6e-2 (about 14 u): atol about "
        "25 u, rtol about 10 u, a factor of about 3 over the measurements",
    ),
    ("cuda", torch.float16): Tolerance(
        5e-3,
        1.5e-2,
        "u = 4.9e-4 (11-bit significand); measured at most 6.2e-3 (about 13 u): atol about "
        "30 u, rtol about 10 u, a factor of about 3 over the measurements",
    ),
}
"""(device type, dtype) -> tolerance for comparing an implementation with the float64 oracle."""

def tolerance(device: str | torch.device, dtype: torch.dtype) -> Tolerance:
    """The tolerance for results computed on ``device`` (``"cuda:1"`` counts as ``"cuda"``)."""
    kind = torch.device(device).type
    try:
        return TOLERANCES[(kind, dtype)]
    except KeyError:
        known = ", ".join(f"({d}, {t})" for d, t in TOLERANCES)
        raise KeyError(f"no tolerance for ({kind}, {dtype}); known: {known}") from None


def _as_f64(t: Tensor) -> Tensor:
    return t.detach().to(device="cpu", dtype=torch.float64)


def _abs_diff(actual: Tensor, expected: Tensor) -> Tensor | None:
    """|actual - expected| in float64 on CPU (equal infinities -> 0, NaN -> inf); None if the
    shapes differ."""
    a, e = _as_f64(actual), _as_f64(expected)
    if a.shape != e.shape:
        return None
    diff = torch.where(a == e, torch.zeros_like(a), (a - e).abs())
    return torch.where(diff.isnan(), math.inf, diff)


def max_error(actual: Tensor, expected: Tensor) -> float:
    """The largest absolute difference (0 for empty tensors; inf for a shape mismatch or NaN)."""
    diff = _abs_diff(actual, expected)
    if diff is None:
        return math.inf
    return float(diff.max()) if diff.numel() else 0.0


def error_ratio(actual: Tensor, expected: Tensor, tol: Tolerance) -> float:
    """max |a - e| / (atol + rtol |e|): at most 1 exactly when :func:`close` holds.

    Reports use it to say how far off a result is ("3.2 tolerances"); inf for a shape mismatch
    or NaN.
    """
    diff = _abs_diff(actual, expected)
    if diff is None:
        return math.inf
    if not diff.numel():
        return 0.0
    bound = tol.atol + tol.rtol * _as_f64(expected).abs()
    ratio = torch.where(diff == 0, torch.zeros_like(diff), diff / bound)
    return float(torch.where(ratio.isnan(), math.inf, ratio).max())


def close(actual: Tensor, expected: Tensor, tol: Tolerance) -> bool:
    """True when ``|actual - expected| <= atol + rtol |expected|`` everywhere (same shape).

    Compared in float64 on the CPU. NaN is never close; a shape mismatch is not close.
    """
    return error_ratio(actual, expected, tol) <= 1.0
