"""Position-wise feed-forward networks, residual connections, and the encoder and decoder layers.

Implements: 3.1/encoder-layer, 3.1/decoder-layer, 3.1/residual-norm, 3.1/width, 3.3/eq2,
3.3/position-wise, 3.3/dims, 5.4/residual-dropout.
"""

from __future__ import annotations

import dataclasses

from torch import Tensor, nn

from .attention import KVCache, MultiHeadAttention
from .masks import check_mask


class FeedForward(nn.Module):
    r"""$\mathrm{FFN}(x) = \max(0, xW_1 + b_1)W_2 + b_2$ (Eq. 2), applied at every position alike."""

    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.w_1 = nn.Linear(d_model, d_ff)
        self.w_2 = nn.Linear(d_ff, d_model)

    def forward(self, x: Tensor) -> Tensor:
        # relu_ in place: it overwrites the fresh x W_1 + b_1, which nothing else reads, instead
        # of allocating another [..., d_ff] tensor (autograd keeps the ReLU's output)
        return self.w_2(self.w_1(x).relu_())


class Residual(nn.Module):
    r"""$\mathrm{LayerNorm}(x + \mathrm{Dropout}(\mathrm{Sublayer}(x)))$: post-norm (3.1, 5.4)."""

    def __init__(self, d_model: int, dropout: float, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, sublayer_out: Tensor) -> Tensor:
        return self.norm(x + self.dropout(sublayer_out))


class EncoderLayer(nn.Module):
    """Self-attention, then the feed-forward network, each wrapped by :class:`Residual` (3.1)."""

    def __init__(self, d_model: int, h: int, d_ff: int, dropout: float, eps: float = 1e-5) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, h)
        self.ffn = FeedForward(d_model, d_ff)
        self.residual_1 = Residual(d_model, dropout, eps)
        self.residual_2 = Residual(d_model, dropout, eps)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """``mask``: ``[B, 1, S]`` padding mask (or ``[B, S, S]``); no causal mask in the encoder
        (3.2.3/encoder-self)."""
        if mask is not None:
            check_mask(mask, x.size(0), x.size(1), x.size(1), name="mask", batched=True)
        x = self.residual_1(x, self.self_attn(x, mask=mask)[0])
        return self.residual_2(x, self.ffn(x))


@dataclasses.dataclass
class LayerCache:
    """The key/value caches of one decoder layer."""

    self_attn: KVCache = dataclasses.field(default_factory=KVCache)
    cross_attn: KVCache = dataclasses.field(default_factory=KVCache)


class DecoderLayer(nn.Module):
    """Masked self-attention, encoder-decoder attention, then the FFN, each wrapped (3.1)."""

    def __init__(self, d_model: int, h: int, d_ff: int, dropout: float, eps: float = 1e-5) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, h)
        self.cross_attn = MultiHeadAttention(d_model, h)
        self.ffn = FeedForward(d_model, d_ff)
        self.residual_1 = Residual(d_model, dropout, eps)
        self.residual_2 = Residual(d_model, dropout, eps)
        self.residual_3 = Residual(d_model, dropout, eps)

    def forward(
        self,
        y: Tensor,
        memory: Tensor,
        src_mask: Tensor | None,
        self_mask: Tensor | None = None,
        cache: LayerCache | None = None,
    ) -> Tensor:
        """Decode ``y`` ``[B, T, d]`` against the encoder output ``memory`` ``[B, S, d]``.

        ``src_mask`` is the source padding mask ``[B, 1, S]`` (or ``[B, T, S]``). ``self_mask`` is
        ``None`` for the usual causal self-attention over ``y``; with a cache it is the causal
        mask shifted by the cached length (or ``None`` for a single new position).
        """
        if src_mask is not None:
            check_mask(
                src_mask, y.size(0), y.size(1), memory.size(1), name="src_mask", batched=True
            )
        causal = cache is None or cache.self_attn.k is None
        self_cache = cache.self_attn if cache is not None else None
        attended = self.self_attn(
            y, mask=self_mask, is_causal=causal and self_mask is None, cache=self_cache
        )[0]
        y = self.residual_1(y, attended)
        cross_cache = cache.cross_attn if cache is not None else None
        y = self.residual_2(y, self.cross_attn(y, memory, src_mask, cache=cross_cache)[0])
        return self.residual_3(y, self.ffn(y))
