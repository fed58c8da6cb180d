"""Masks, under one convention used everywhere in this package.

**Convention:** a mask is a boolean tensor, ``True`` where a query *may attend* to a key. It
broadcasts against attention scores of shape ``[batch, L_q, L_k]``. Padding masks have shape
``[batch, 1, L_k]``; the causal mask has shape ``[L_q, L_k]``.

Implements: 3.2.3/decoder-self (the causal mask), practice/padding (padding masks).
"""

from __future__ import annotations

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


def check_mask(mask: Tensor, batch: int, queries: int, keys: int) -> None:
    """Raise a clear error unless ``mask`` is boolean and broadcasts to ``[batch, L_q, L_k]``."""
    if mask.dtype != torch.bool:
        raise TypeError(f"masks must be boolean (True = may attend), got {mask.dtype}")
    expected = (batch, queries, keys)
    shape = tuple(mask.shape)
    padded = (1,) * (3 - len(shape)) + shape  # more than 3 dims: unchanged, and refused
    if len(padded) != 3 or any(m not in (1, e) for m, e in zip(padded, expected, strict=True)):
        raise ValueError(
            f"mask of shape {list(shape)} does not broadcast to [batch, L_q, L_k] = {list(expected)}"
        )
