"""Section 3.2.1, scaled dot-product attention: the attention weights and their product with
V, masking, and the scale and softmax bugs (checked by :mod:`spec.suite.test_3_2_1_attention`).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from ._common import _f64

__all__ = [
    "Scale",
    "SoftmaxAxis",
    "attention",
    "attention_weights",
]


Scale = Literal["sqrt_dk", "none", "dk", "sqrt_dmodel"] | float
SoftmaxAxis = Literal["keys", "queries"]


def _shift_mask(mask: Tensor, offset: int) -> Tensor:
    """Key j uses the mask column j - offset; columns shifted in from the left are True (may
    attend), from the right False. For a causal mask this is ``causal_mask(L, offset)``."""
    if offset == 0:
        return mask
    lk = mask.shape[-1]
    shifted = torch.empty_like(mask)
    for j in range(lk):
        src = j - offset
        if 0 <= src < lk:
            shifted[..., j] = mask[..., src]
        else:
            shifted[..., j] = src < 0
    return shifted


def _scale_factor(scale: Scale, d_k: int, d_model: int | None) -> float:
    if not isinstance(scale, str):
        return float(scale)
    if scale == "sqrt_dk":
        return 1.0 / math.sqrt(d_k)
    if scale == "none":
        return 1.0
    if scale == "dk":
        return 1.0 / d_k
    if scale == "sqrt_dmodel":
        if d_model is None:
            raise ValueError("scale='sqrt_dmodel' needs d_model")
        return 1.0 / math.sqrt(d_model)
    raise ValueError(f"unknown scale {scale!r}: use sqrt_dk, none, dk, sqrt_dmodel or a float")


def _masked_softmax(scores: Tensor, allowed: Tensor, dim: int) -> Tensor:
    """softmax along ``dim`` with disallowed scores set to -inf; an all-disallowed slice -> 0."""
    neg_inf = torch.tensor(-math.inf, dtype=scores.dtype, device=scores.device)
    masked = torch.where(allowed, scores, neg_inf)
    top = masked.amax(dim=dim, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))  # fully masked slice
    e = torch.exp(masked - top)  # exp(-inf) = 0: masked weights are exactly zero
    total = e.sum(dim=dim, keepdim=True)
    return torch.where(total > 0, e / torch.where(total > 0, total, 1.0), torch.zeros_like(e))


def attention_weights(
    q: Tensor,
    k: Tensor,
    v: Tensor | None = None,
    mask: Tensor | None = None,
    *,
    scale: Scale = "sqrt_dk",
    d_model: int | None = None,
    softmax_axis: SoftmaxAxis = "keys",
    mask_offset: int = 0,
) -> Tensor:
    """The attention weights softmax(Q K^T / sqrt(d_k)), ``[..., Lq, Lk]`` (3.2.1/eq1).

    ``q`` ``[..., Lq, d_k]``, ``k`` ``[..., Lk, d_k]``; ``v`` is accepted (and ignored) so that
    the signature matches :func:`attention`. ``mask`` is bool, broadcastable to
    ``[..., Lq, Lk]``, ``True`` = may attend; masked scores are -inf before the softmax, so
    their weights are exactly 0 (3.2.1/mask). A fully masked row gets all-zero weights (the
    paper does not say; ``softmax`` of all -inf would be NaN).

    Bug knobs (for diagnosis): ``scale`` = ``"sqrt_dk"`` (paper, 3.2.1/scale), ``"none"``,
    ``"dk"``, ``"sqrt_dmodel"`` (needs ``d_model``) or a float the scores are multiplied by;
    ``softmax_axis="queries"`` normalises over the queries (3.2.1/softmax-over-keys);
    ``mask_offset`` applies the mask shifted along the key axis: key j uses mask column
    ``j - mask_offset`` (columns shifted in from the left may attend, from the right may not),
    so a causal mask with ``mask_offset=1`` is ``causal_mask(L, offset=1)``.
    """
    del v
    q, k = _f64(q), _f64(k)
    d_k = q.shape[-1]
    scores = (q @ k.transpose(-2, -1)) * _scale_factor(scale, d_k, d_model)
    if mask is None:
        allowed = torch.ones_like(scores, dtype=torch.bool)
    else:
        if mask.dtype != torch.bool:
            raise TypeError(f"attention mask must be bool (True = may attend), got {mask.dtype}")
        mask = _shift_mask(mask.to(scores.device), mask_offset)
        scores, allowed = torch.broadcast_tensors(scores, mask)
    if softmax_axis == "keys":
        return _masked_softmax(scores, allowed, dim=-1)
    if softmax_axis == "queries":
        return _masked_softmax(scores, allowed, dim=-2)
    raise ValueError(f"unknown softmax_axis {softmax_axis!r}: use 'keys' or 'queries'")


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    *,
    scale: Scale = "sqrt_dk",
    d_model: int | None = None,
    softmax_axis: SoftmaxAxis = "keys",
    mask_offset: int = 0,
) -> Tensor:
    """Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V, ``[..., Lq, d_v]`` (3.2.1/eq1).

    ``v`` is ``[..., Lk, d_v]`` (d_v may differ from d_k). Masking and the bug knobs are those
    of :func:`attention_weights`; a fully masked query row outputs zeros.
    """
    weights = attention_weights(
        q,
        k,
        mask=mask,
        scale=scale,
        d_model=d_model,
        softmax_axis=softmax_axis,
        mask_offset=mask_offset,
    )
    return weights @ _f64(v)
