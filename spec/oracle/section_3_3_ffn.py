"""Section 3.3, the position-wise feed-forward network (checked by
:mod:`spec.suite.test_3_3_ffn`).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from ._common import Params, _f64

__all__ = [
    "Activation",
    "feed_forward",
]


Activation = Literal["relu", "none", "gelu"]


def feed_forward(x: Tensor, params: Params, *, activation: Activation = "relu") -> Tensor:
    """FFN(x) = max(0, x W_1 + b_1) W_2 + b_2, applied at every position (3.3/eq2).

    ``params``: ``W_1`` ``[d_model, d_ff]``, ``b_1`` ``[d_ff]``, ``W_2`` ``[d_ff, d_model]``,
    ``b_2`` ``[d_model]``. ``activation``: ``"relu"`` (paper), ``"gelu"`` (variant, exact erf
    form) or ``"none"`` (bug: no non-linearity).
    """
    x = _f64(x)
    z = x @ _f64(params["W_1"]) + _f64(params["b_1"])
    if activation == "relu":
        a = torch.maximum(z, torch.zeros_like(z))
    elif activation == "gelu":
        a = 0.5 * z * (1.0 + torch.erf(z / math.sqrt(2.0)))
    elif activation == "none":
        a = z
    else:
        raise ValueError(f"unknown activation {activation!r}: use relu, gelu or none")
    return a @ _f64(params["W_2"]) + _f64(params["b_2"])
