"""Scaled dot-product attention and multi-head attention (section 3.2).

Implements: 3.2.1/eq1, 3.2.1/scale, 3.2.1/softmax-over-keys, 3.2.1/mask, 3.2.2/eq,
3.2.2/head-dims, 3.2.2/heads-split-by-projection, 3.2.3/cross-attention, 3.2.3/encoder-self,
3.2.3/decoder-self, practice/incremental-decoding (the key/value cache).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .masks import broadcasts_to, check_mask


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    *,
    is_causal: bool = False,
    need_weights: bool = False,
) -> tuple[Tensor, Tensor | None]:
    r"""$\mathrm{Attention}(Q, K, V) = \mathrm{softmax}(QK^T / \sqrt{d_k})\,V$ (Eq. 1).

    Args:
        q: ``[..., L_q, d_k]``; k: ``[..., L_k, d_k]``; v: ``[..., L_k, d_v]``.
        mask: boolean, ``True`` = may attend, broadcasting to ``[..., L_q, L_k]``. Masked scores
            are set to $-\infty$ before the softmax, so their weights are exactly 0.
        is_causal: apply the causal mask (query ``i`` sees keys ``j <= i``) instead of ``mask``.
        need_weights: also return the attention weights ``[..., L_q, L_k]``.

    Without ``need_weights`` the fused kernel
    (:func:`torch.nn.functional.scaled_dot_product_attention`) runs; with it, the explicit
    computation below. Both give the same result, and a query whose keys are all masked gets a
    zero output on both paths.

    Raises:
        TypeError: ``mask`` is not boolean (a float mask is not added to the scores: convert a
            0/1 mask with ``mask.bool()``).
        ValueError: ``mask`` does not broadcast to the scores, or is given with ``is_causal``.
    """
    if mask is not None:
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be boolean (True = may attend), got {mask.dtype}")
        scores_shape = [*q.shape[:-1], k.size(-2)]
        if not broadcasts_to(mask.shape, scores_shape):
            raise ValueError(
                f"mask of shape {list(mask.shape)} does not broadcast to the scores "
                f"[..., L_q, L_k] = {scores_shape}"
            )
        if is_causal:
            raise ValueError("pass either a mask or is_causal, not both")
        if mask.dim() < 2:  # the fused kernel needs the query axis, even of size 1
            mask = mask.view(*[1] * (2 - mask.dim()), *mask.shape)
    if not need_weights:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal), None
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if is_causal:
        lq, lk = q.size(-2), k.size(-2)
        mask = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril()
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    if mask is not None:  # a fully masked row is NaN after the softmax: make it zero
        weights = weights.masked_fill(~mask, 0.0)
    return weights @ v, weights


@dataclasses.dataclass
class KVCache:
    """Keys and values of one attention sub-layer, kept between decoding steps.

    Shapes are ``[batch, h, L, d_k]``. For self-attention they grow by one position a step;
    for encoder-decoder attention they are computed once from the encoder output.
    """

    k: Tensor | None = None
    v: Tensor | None = None

    def reorder(self, index: Tensor) -> None:
        """Keep the batch rows ``index`` (beam search reorders hypotheses this way)."""
        if self.k is not None and self.v is not None:
            self.k, self.v = self.k.index_select(0, index), self.v.index_select(0, index)


class MultiHeadAttention(nn.Module):
    r"""$\mathrm{MultiHead}(Q,K,V) = \mathrm{Concat}(\mathrm{head}_1..\mathrm{head}_h)W^O$ (3.2.2).

    $\mathrm{head}_i = \mathrm{Attention}(QW_i^Q, KW_i^K, VW_i^V)$. The projections are plain
    matrices (no biases). The $h$ matrices $W_i^Q \in \mathbb{R}^{d_{model} \times d_k}$ are
    stored stacked, with $W^K$ and $W^V$, in one ``[3 d_model, d_model]`` weight, so that
    self-attention projects with one matrix product; each head still sees the whole
    ``d_model``-wide input through its own projection (3.2.2/heads-split-by-projection).
    """

    def __init__(self, d_model: int, h: int) -> None:
        super().__init__()
        if d_model % h:
            raise ValueError(
                f"d_model ({d_model}) must be divisible by the number of heads h ({h})"
            )
        self.d_model, self.h, self.d_k = d_model, h, d_model // h
        self.in_proj = nn.Linear(d_model, 3 * d_model, bias=False)  # rows: W^Q, W^K, W^V
        self.out_proj = nn.Linear(d_model, d_model, bias=False)  # W^O

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None = None,
        mask: Tensor | None = None,
        *,
        is_causal: bool = False,
        cache: KVCache | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from ``x`` ``[B, L_q, d_model]`` to ``memory`` (or to ``x`` itself).

        Args:
            x: queries (and keys and values, for self-attention).
            memory: keys and values for encoder-decoder attention (3.2.3/cross-attention).
            mask: boolean, ``True`` = may attend, broadcasting to ``[B, L_q, L_k]``.
            is_causal: causal self-attention (3.2.3/decoder-self).
            cache: a key/value cache: self-attention appends this step's keys and values;
                cross-attention computes them from ``memory`` once and reuses them.
            need_weights: also return the per-head weights ``[B, h, L_q, L_k]``.
        """
        batch, length, _ = x.shape
        if memory is None:
            q, k, v = self._heads(self.in_proj(x)).unbind(0)
            if cache is not None and cache.k is not None and cache.v is not None:
                k, v = torch.cat([cache.k, k], dim=2), torch.cat([cache.v, v], dim=2)
            if cache is not None:
                cache.k, cache.v = k, v
        else:
            # W^Q for x, W^K and W^V (one product) for memory; one split, whose backward
            # writes both gradients into one [3 d_model, d_model] tensor
            w_q, w_kv = self.in_proj.weight.split([self.d_model, 2 * self.d_model])
            q = self._heads(F.linear(x, w_q))[0]
            if cache is not None and cache.k is not None and cache.v is not None:
                k, v = cache.k, cache.v
            else:
                k, v = self._heads(F.linear(memory, w_kv)).unbind(0)
                if cache is not None:
                    cache.k, cache.v = k, v
        if mask is not None:
            check_mask(mask, batch, length, k.size(2), name="mask")
            mask = mask.unsqueeze(1) if mask.dim() == 3 else mask  # broadcast over heads
        out, weights = scaled_dot_product_attention(
            q, k, v, mask, is_causal=is_causal, need_weights=need_weights
        )
        out = out.transpose(1, 2).reshape(batch, length, self.d_model)  # Concat(head_1..head_h)
        return self.out_proj(out), weights

    def _heads(self, projected: Tensor) -> Tensor:
        """``[B, L, n * d_model]`` -> ``[n, B, h, L, d_k]``."""
        batch, length, width = projected.shape
        n = width // self.d_model
        return projected.view(batch, length, n, self.h, self.d_k).permute(2, 0, 3, 1, 4)
