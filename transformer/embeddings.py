"""Token embeddings scaled by sqrt(d_model), and the sinusoidal positional encoding.

Implements: 3.4/learned-embeddings, 3.4/scale, 3.5/formula, 3.5/added, 3.5/wavelengths,
3.5/relative-linear, 3.5/extrapolation, 5.4/embedding-dropout.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def positional_encoding(
    length: int,
    d_model: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""The sinusoidal encoding ``[length, d_model]`` of section 3.5.

    $PE_{(pos, 2i)} = \sin(pos / 10000^{2i/d_{model}})$ and
    $PE_{(pos, 2i+1)} = \cos(pos / 10000^{2i/d_{model}})$, positions counted from 0.
    It is computed in float64 and then cast, and is defined for any length (3.5/extrapolation).
    """
    if d_model % 2:
        raise ValueError(f"the sinusoidal encoding needs an even d_model, got {d_model}")
    pos = torch.arange(length, dtype=torch.float64, device=device).unsqueeze(1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64, device=device)
    angle = pos / 10000.0 ** (two_i / d_model)
    pe = torch.empty(length, d_model, dtype=torch.float64, device=device)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(angle), torch.cos(angle)
    return pe.to(dtype)


class Embedding(nn.Module):
    r"""A learned embedding whose output is multiplied by $\sqrt{d_{model}}$ (3.4)."""

    def __init__(self, vocab: int, d_model: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab, d_model))
        nn.init.normal_(self.weight, std=d_model**-0.5)
        self.scale = math.sqrt(d_model)

    def forward(self, tokens: Tensor) -> Tensor:
        return F.embedding(tokens, self.weight) * self.scale


class PositionalEncoding(nn.Module):
    """Adds the sinusoidal encoding to embeddings, then applies dropout (3.5/added, 5.4).

    The table covers ``max_len`` positions; it is a buffer, not a parameter, and is not saved
    in checkpoints (nothing learned depends on position).
    """

    pe: Tensor

    def __init__(self, d_model: int, max_len: int, dropout: float) -> None:
        super().__init__()
        # kept in float64, so that a model cast to float64 gets the exact table
        table = positional_encoding(max_len, d_model, dtype=torch.float64)
        self.register_buffer("pe", table, persistent=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """``x`` ``[B, L, d]`` holds positions ``offset .. offset + L - 1``."""
        end = offset + x.size(1)
        if end > self.pe.size(0):
            raise ValueError(
                f"sequence positions up to {end} exceed max_len={self.pe.size(0)} of the "
                "positional-encoding table; build the model with a larger max_len"
            )
        return self.dropout(x + self.pe[offset:end].to(x.dtype))
