"""Section 3.5, the sinusoidal positional encoding, computed entry by entry (checked by
:mod:`spec.suite.test_3_5_positional`).
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "positional_encoding",
]


@functools.lru_cache(maxsize=64)
def _pe_table(
    length: int, d_model: int, base: float, layout: str, swap: bool, exponent: str, start: int
) -> Tensor:
    if layout not in ("interleaved", "concatenated"):
        raise ValueError(f"unknown layout {layout!r}: use 'interleaved' or 'concatenated'")
    if layout == "concatenated" and d_model % 2:
        raise ValueError(f"layout='concatenated' needs an even d_model, got {d_model}")
    half = (d_model + 1) // 2
    columns: list[list[float]] = []
    for c in range(d_model):
        # Column c holds the sine or the cosine of the i-th frequency.
        if layout == "interleaved":
            i, is_sin = c // 2, c % 2 == 0
        else:
            i, is_sin = c % half, c < half
        if exponent == "2i":  # the paper: 10000^(2i / d_model)
            e = 2 * i / d_model
        elif exponent == "i":
            e = i / d_model
        elif exponent == "column":
            e = c / d_model
        elif exponent == "t2t" and d_model >= 4:
            e = i / (d_model // 2 - 1)
        else:
            raise ValueError(
                f"unknown exponent {exponent!r} for d_model={d_model}: use 2i, i, column "
                "or t2t (t2t needs d_model >= 4)"
            )
        wave = math.sin if is_sin != swap else math.cos
        columns.append([wave((p + start) / base**e) for p in range(length)])
    return torch.tensor(columns, dtype=torch.float64).reshape(d_model, length).T.contiguous()


def positional_encoding(
    length: int,
    d_model: int,
    *,
    base: float = 10000.0,
    layout: Literal["interleaved", "concatenated"] = "interleaved",
    swap_sin_cos: bool = False,
    exponent: Literal["2i", "i", "column", "t2t"] = "2i",
    start: int = 0,
) -> Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d_model)), PE(pos, 2i+1) = cos(...) (3.5/formula).

    Returns float64 ``[length, d_model]`` (CPU), row ``p`` for position ``start + p``, computed
    entry by entry with Python's ``math``. Knobs (variants and bugs, for diagnosis):
    ``layout="concatenated"`` puts all sines first, then all cosines (variant
    ``concatenated-sin-cos``); ``swap_sin_cos`` uses cos on even and sin on odd columns;
    ``exponent``: ``"2i"`` (paper), ``"i"`` (the 2 dropped), ``"column"`` (the column index c
    in place of 2i, so cosines get (2i+1)/d_model), ``"t2t"`` (tensor2tensor's
    ``i / (d_model/2 - 1)``; variant ``timescale-denominator``); ``start=1`` counts positions
    from 1 (variant ``one-based-positions``).
    """
    table = _pe_table(length, d_model, float(base), layout, swap_sin_cos, exponent, start)
    return table.clone()
