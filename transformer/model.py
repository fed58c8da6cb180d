"""The encoder-decoder Transformer (section 3, Figure 1).

Implements: 3.1/encoder-stack, 3.1/no-final-norm, 3.1/decoder-causal, 3.1/shared-memory,
3.1/shifted-right, 3.4/weight-tying, 3.4/output-softmax, 5.4/embedding-dropout,
5.4/eval-deterministic.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .config import TransformerConfig
from .embeddings import Embedding, PositionalEncoding
from .layers import DecoderLayer, EncoderLayer, LayerCache
from .masks import causal_mask, check_mask, padding_mask


class Encoder(nn.Module):
    """N identical layers, each with its own parameters; the output is the last layer's output."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        c = config
        self.layers = nn.ModuleList(
            EncoderLayer(c.d_model, c.h, c.d_ff, c.dropout, c.norm_eps) for _ in range(c.n_layers)
        )

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return x


class Decoder(nn.Module):
    """N identical decoder layers, all attending to the same encoder output (3.1/shared-memory)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        c = config
        self.layers = nn.ModuleList(
            DecoderLayer(c.d_model, c.h, c.d_ff, c.dropout, c.norm_eps) for _ in range(c.n_layers)
        )

    def forward(
        self,
        y: Tensor,
        memory: Tensor,
        src_mask: Tensor | None,
        cache: list[LayerCache] | None = None,
        offset: int = 0,
    ) -> Tensor:
        self_mask = None
        if offset and y.size(1) > 1:  # several new positions after a cached prefix
            self_mask = causal_mask(y.size(1), y.device, offset)
        for i, layer in enumerate(self.layers):
            y = layer(y, memory, src_mask, self_mask, cache[i] if cache is not None else None)
        return y


class DecoderState:
    """What incremental decoding keeps between steps: per-layer caches and the position."""

    def __init__(self, n_layers: int) -> None:
        self.layers = [LayerCache() for _ in range(n_layers)]
        self.length = 0

    def reorder(self, index: Tensor) -> None:
        """Keep the batch rows ``index`` in every cache (for beam search)."""
        for layer in self.layers:
            layer.self_attn.reorder(index)
            layer.cross_attn.reorder(index)


class Transformer(nn.Module):
    """The full model: embeddings, positional encoding, encoder, decoder, tied projection.

    Token ids are ``torch.long`` ``[batch, length]``; padding uses ``config.pad_id``. Masks follow
    :mod:`transformer.masks` (``True`` = may attend).
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        c = self.config = config
        self.tgt_embed = Embedding(c.tgt_vocab, c.d_model)
        self.src_embed = self.tgt_embed if c.share_vocab else Embedding(c.src_vocab, c.d_model)
        self.positions = PositionalEncoding(c.d_model, c.max_len, c.dropout)
        self.encoder = Encoder(c)
        self.decoder = Decoder(c)
        self.generator = nn.Linear(c.d_model, c.tgt_vocab, bias=False)
        self.generator.weight = self.tgt_embed.weight  # 3.4/weight-tying
        for name, p in self.named_parameters():
            if p.dim() > 1 and "embed" not in name:
                nn.init.xavier_uniform_(p)

    def encode(self, src: Tensor, src_mask: Tensor | None = None) -> Tensor:
        """Encoder output ``[B, S, d_model]``.

        ``src_mask`` (boolean, ``True`` = may attend) defaults to the padding mask
        ``[B, 1, S]``; ``[B, S, S]`` is accepted too. A 2-D mask is refused: its first axis
        could be the batch or the queries.
        """
        self._check_tokens(src, self.config.src_vocab, "src")
        if src_mask is None:
            src_mask = padding_mask(src, self.config.pad_id)
        else:
            batch, length = src.shape
            check_mask(src_mask, batch, length, length, name="src_mask", batched=True)
        return self.encoder(self.positions(self.src_embed(src)), src_mask)

    def decode(
        self,
        tgt_in: Tensor,
        memory: Tensor,
        src_mask: Tensor | None,
        state: DecoderState | None = None,
    ) -> Tensor:
        """Decoder output ``[B, T, d_model]`` for the (shifted-right) target ``tgt_in``.

        ``memory`` is the encoder output ``[B, S, d_model]`` for the same batch; ``src_mask`` is
        the source padding mask ``[B, 1, S]`` (or ``[B, T, S]``), or ``None`` for no mask.
        With a ``state``, ``tgt_in`` holds only the new positions after ``state.length`` cached
        ones, and the state is advanced (practice/incremental-decoding).
        """
        self._check_tokens(tgt_in, self.config.tgt_vocab, "tgt")
        batch = tgt_in.size(0)  # the layers check src_mask (tests/test_reference_inputs.py)
        if memory.dim() != 3 or memory.size(0) != batch or memory.size(2) != self.config.d_model:
            raise ValueError(
                f"memory must be [batch, S, d_model] = [{batch}, S, {self.config.d_model}] (the "
                f"encoder output for tgt_in's batch), got shape {list(memory.shape)}"
            )
        offset = state.length if state is not None else 0
        y = self.positions(self.tgt_embed(tgt_in), offset)
        out = self.decoder(y, memory, src_mask, state.layers if state else None, offset)
        if state is not None:
            state.length += tgt_in.size(1)
        return out

    def forward(self, src: Tensor, tgt_in: Tensor, src_mask: Tensor | None = None) -> Tensor:
        """Next-token logits ``[B, T, tgt_vocab]`` (softmax them for probabilities, 3.4).

        ``src_mask`` defaults to the padding mask of ``src``; a given one must be a padding mask
        ``[B, 1, S]``, since it serves both the encoder's self-attention and the
        encoder-decoder attention, whose query lengths differ.
        """
        if src_mask is None:
            src_mask = padding_mask(src, self.config.pad_id)
        elif src_mask.dim() == 3 and src_mask.size(1) != 1:
            raise ValueError(
                "src_mask must be a padding mask [batch, 1, S]: forward uses it for both the "
                "encoder's self-attention and the encoder-decoder attention; got shape "
                f"{list(src_mask.shape)} (give encode and decode their own masks instead)"
            )
        return self.generator(self.decode(tgt_in, self.encode(src, src_mask), src_mask))

    def new_state(self) -> DecoderState:
        """An empty key/value cache for incremental decoding."""
        return DecoderState(self.config.n_layers)

    @staticmethod
    def _check_tokens(tokens: Tensor, vocab: int, name: str) -> None:
        if tokens.dtype not in (torch.long, torch.int32):  # what nn.Embedding takes
            raise TypeError(
                f"{name} token ids must be torch.long or torch.int32, got {tokens.dtype}"
            )
        if tokens.dim() != 2:
            raise ValueError(
                f"{name} token ids must be [batch, length], got shape {list(tokens.shape)}"
            )
        if tokens.numel():
            low, high = torch.stack(torch.aminmax(tokens)).tolist()  # one read from the device
            if low < 0 or high >= vocab:
                raise ValueError(
                    f"{name} token ids must lie in [0, {vocab}), got values in [{low}, {high}]"
                )


def shift_right(tgt: Tensor, bos_id: int) -> Tensor:
    """The decoder input for teacher forcing: ``bos`` then ``tgt`` without its last token (3.1)."""
    return torch.cat([torch.full_like(tgt[:, :1], bos_id), tgt[:, :-1]], dim=1)
