"""Masks, under one convention used everywhere in this package.

**Convention:** a mask is a boolean tensor, ``True`` where a query *may attend* to a key. It
broadcasts against attention scores of shape ``[batch, L_q, L_k]``. Padding masks have shape
``[batch, 1, L_k]``; the causal mask has shape ``[L_q, L_k]``. Attention
(:func:`~transformer.attention.scaled_dot_product_attention`,
:class:`~transformer.attention.MultiHeadAttention`) takes any boolean mask that broadcasts;
a source mask (the layers' and the model's ``mask``/``src_mask``) must keep its batch axis:
``[batch, 1, S]``, or ``[batch, L_q, S]``. Other dtypes and shapes are refused with an error
naming the argument; float masks are never added to the scores.

Implements: 3.2.3/decoder-self (the causal mask), practice/padding (padding masks).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def padding_mask(tokens: Tensor, pad_id: int) -> Tensor:
    """``[batch, 1, L]``: ``True`` at real tokens, ``False`` at padding."""
    return (tokens != pad_id).unsqueeze(1)


def causal_mask(length: int, device: torch.device | str | None = None, offset: int = 0) -> Tensor:
    """``[length, offset + length]``: query ``i`` may attend to keys ``j <= offset + i``.

    ``offset`` is the number of earlier positions already in a key/value cache.
    """
    keys = torch.arange(offset + length, device=device)
    queries = torch.arange(length, device=device).unsqueeze(1) + offset
    return keys <= queries


def broadcasts_to(shape: Sequence[int], target: Sequence[int]) -> bool:
    """Whether a tensor of ``shape`` broadcasts to ``target`` without adding dimensions to it."""
    if len(shape) > len(target):
        return False
    return all(m in (1, t) for m, t in zip(reversed(shape), reversed(target), strict=False))


def check_mask(
    mask: Tensor, batch: int, queries: int, keys: int, *, name: str, batched: bool = False
) -> None:
    """Raise a clear error unless ``mask`` is boolean and broadcasts to ``[batch, L_q, L_k]``.

    ``batched``: the mask must also have its batch axis (3 dimensions), as source masks do. A
    2-dimensional ``[batch, L_k]`` padding mask would otherwise broadcast as ``[L_q, L_k]``
    whenever ``batch == L_q``, and be applied per query instead of per sentence.
    ``name`` is the argument's name in the error.
    """
    if mask.dtype != torch.bool:
        raise TypeError(f"{name} must be boolean (True = may attend), got {mask.dtype}")
    shape = list(mask.shape)
    if batched and len(shape) != 3:
        raise ValueError(
            f"{name} must be 3-D ([batch, 1, S] or [batch, L_q, S]), got shape {shape}; "
            "for a [batch, S] padding mask, add the query axis: mask.unsqueeze(1)"
        )
    expected = (batch, queries, keys)
    if not broadcasts_to(shape, expected):
        raise ValueError(
            f"{name} of shape {shape} does not broadcast to [batch, L_q, L_k] = {list(expected)}"
        )
