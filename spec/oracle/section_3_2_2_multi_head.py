"""Section 3.2.2, multi-head attention, one head at a time, and the known multi-head bugs
(checked by :mod:`spec.suite.test_3_2_2_multi_head`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._common import Params, _f64
from .section_3_2_1_attention import Scale, SoftmaxAxis, attention

__all__ = [
    "MULTI_HEAD_BUGS",
    "multi_head",
]


MULTI_HEAD_BUGS: tuple[str, ...] = (
    "no-scale",
    "scale-dk",
    "scale-dmodel",
    "softmax-over-queries",
    "slice-input",
    "no-output-projection",
    "concat-without-transpose",
)
"""The known multi-head attention bugs that :func:`multi_head` can reproduce."""


def multi_head(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    params: Params,
    mask: Tensor | None = None,
    *,
    bug: str | None = None,
) -> Tensor:
    """MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O (3.2.2/eq), one head at a time.

    ``head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)``: every head projects the whole d_model
    input (3.2.2/heads-split-by-projection). ``query`` ``[..., Lq, d_model]``, ``key`` and
    ``value`` ``[..., Lk, d_model]``; ``params``: ``W_Q``, ``W_K`` ``[h, d_model, d_k]``,
    ``W_V`` ``[h, d_model, d_v]``, ``W_O`` ``[h*d_v, d_model]`` and, if present, the biases
    ``b_Q``, ``b_K``, ``b_V`` ``[h, d_k]`` and ``b_O`` ``[d_model]`` (variant
    ``projection-biases``). ``mask`` as in :func:`attention`, shared by all heads.

    ``bug`` reproduces one of :data:`MULTI_HEAD_BUGS`:

    * ``"no-scale"``, ``"scale-dk"``, ``"scale-dmodel"``: scores scaled by 1, 1/d_k,
      1/sqrt(d_model) instead of 1/sqrt(d_k) (the last two coincide when d_k^2 = d_model,
      e.g. d_model = 16, h = 4: use another shape to tell them apart);
    * ``"softmax-over-queries"``: the softmax normalises over the query axis;
    * ``"slice-input"``: head i sees only the input features ``[i*w, (i+1)*w)``, w = d_model/h,
      multiplied by the matching rows ``W_i^Q[i*w:(i+1)*w, :]`` (likewise K and V);
    * ``"no-output-projection"``: the concatenated heads are returned, without W^O (nor b_O);
    * ``"concat-without-transpose"``: the heads, stacked ``[..., h, Lq, d_v]``, are reshaped
      directly to ``[..., Lq, h*d_v]`` without moving the head axis next to the features.
    """
    if bug is not None and bug not in MULTI_HEAD_BUGS:
        raise ValueError(f"unknown multi-head bug {bug!r}; known: {', '.join(MULTI_HEAD_BUGS)}")
    query, key, value = _f64(query), _f64(key), _f64(value)
    W_Q, W_K, W_V, W_O = (_f64(params[n]) for n in ("W_Q", "W_K", "W_V", "W_O"))
    h, d_model, _ = W_Q.shape
    scales: dict[str, Scale] = {"no-scale": "none", "scale-dk": "dk", "scale-dmodel": "sqrt_dmodel"}
    scale = scales.get(bug or "", "sqrt_dk")
    axis: SoftmaxAxis = "queries" if bug == "softmax-over-queries" else "keys"

    heads = []
    for i in range(h):
        xq, xk, xv, wq, wk, wv = query, key, value, W_Q[i], W_K[i], W_V[i]
        if bug == "slice-input":
            w = d_model // h
            rows = slice(i * w, (i + 1) * w)
            xq, xk, xv = query[..., rows], key[..., rows], value[..., rows]
            wq, wk, wv = wq[rows], wk[rows], wv[rows]
        q_i, k_i, v_i = xq @ wq, xk @ wk, xv @ wv
        if "b_Q" in params:
            q_i = q_i + _f64(params["b_Q"])[i]
        if "b_K" in params:
            k_i = k_i + _f64(params["b_K"])[i]
        if "b_V" in params:
            v_i = v_i + _f64(params["b_V"])[i]
        heads.append(
            attention(q_i, k_i, v_i, mask, scale=scale, d_model=d_model, softmax_axis=axis)
        )

    if bug == "concat-without-transpose":
        stacked = torch.stack(heads, dim=-3)  # [..., h, Lq, d_v]
        lq, d_v = stacked.shape[-2], stacked.shape[-1]
        concat = stacked.reshape(*stacked.shape[:-3], lq, h * d_v)
    else:
        concat = torch.cat(heads, dim=-1)  # [..., Lq, h*d_v]
    if bug == "no-output-projection":
        return concat
    out = concat @ W_O
    if "b_O" in params:
        out = out + _f64(params["b_O"])
    return out
