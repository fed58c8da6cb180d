"""Section 3.4, embeddings and softmax: the scaled token embedding plus positions, and the
output projection to logits (checked by :mod:`spec.suite.test_3_4_embeddings`).
"""

from __future__ import annotations

import math

from torch import Tensor

from ._common import Params, _f64
from .section_3_5_positional import positional_encoding

__all__ = [
    "embed",
    "project",
]


def embed(ids: Tensor, E: Tensor, *, scale: bool = True, positions: Tensor | None = None) -> Tensor:
    """E[ids] * sqrt(d_model) + PE (3.4/learned-embeddings, 3.4/scale, 3.5/added).

    ``ids`` ``[..., L]`` long, ``E`` ``[V, d_model]``. ``positions`` ``[>= L, d_model]``
    (learned positions, variant ``learned-positions``) defaults to
    ``positional_encoding(L, d_model)``; its first L rows are added. ``scale=False`` drops the
    sqrt(d_model) factor (a bug). Embedding dropout (5.4/embedding-dropout) is not modelled:
    the oracle is the evaluation-mode function.
    """
    E = _f64(E)
    length, d_model = ids.shape[-1], E.shape[1]
    x = E[ids.to(E.device)]
    if scale:
        x = x * math.sqrt(d_model)
    if positions is None:
        positions = positional_encoding(length, d_model)
    return x + _f64(positions)[:length].to(E.device)


def project(y: Tensor, params: Params) -> Tensor:
    """Logits ``y @ generator.W (+ generator.b)`` ``[..., V]`` (3.4/output-softmax)."""
    logits = _f64(y) @ _f64(params["generator.W"])
    if "generator.b" in params:
        logits = logits + _f64(params["generator.b"])
    return logits
