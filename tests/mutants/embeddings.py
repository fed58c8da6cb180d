# ruff: noqa: RUF012
# (RUF012: the SWAPS tables are class-level constants, never mutated)
"""Broken embeddings and positional encodings (3.4, 3.5)."""

from __future__ import annotations

import math
import types

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import transformer as T
from tests.mutants.kit import Mutant
from transformer.embeddings import Embedding, PositionalEncoding

# -- 3.4 embeddings and the pre-softmax map ---------------------------------------------------


class NoEmbeddingScale(Mutant):
    """The embeddings are not multiplied by sqrt(d_model)."""

    EXPECTED = ("3.4/scale",)
    DIAGNOSIS = "no-embedding-scale"

    class Embed(Embedding):
        def forward(self, tokens: Tensor) -> Tensor:
            return F.embedding(tokens, self.weight)

    SWAPS = {Embedding: Embed}


class EmbeddingScaleDModel(Mutant):
    """The embeddings are multiplied by d_model instead of sqrt(d_model)."""

    name = "embedding-scale-dmodel"

    EXPECTED = ("3.4/scale",)
    DIAGNOSIS = "embedding-scale-dmodel"

    class Embed(Embedding):
        def forward(self, tokens: Tensor) -> Tensor:
            return F.embedding(tokens, self.weight) * self.weight.size(1)

    SWAPS = {Embedding: Embed}


class ScaledLogits(Mutant):
    """The shared embedding module's sqrt(d_model) factor is applied to the logits as well."""

    EXPECTED = ("3.4/output-softmax", "3.4/scale")
    DIAGNOSIS = "pre-softmax-scale"

    class Generator(nn.Linear):
        def forward(self, y: Tensor) -> Tensor:
            return super().forward(y) * math.sqrt(self.in_features)

    def patch(self, model: T.Transformer) -> T.Transformer:
        model.generator.__class__ = self.Generator
        return model


class GeneratorTiedToSource(Mutant):
    """The pre-softmax map is tied to the source embedding; the target embedding is its own matrix."""

    EXPECTED = ("3.4/weight-tying",)

    def patch(self, model: T.Transformer) -> T.Transformer:
        model.tgt_embed = Embedding(model.config.tgt_vocab, model.config.d_model)
        model.generator.weight = model.src_embed.weight
        return model


class FrozenEmbeddings(Mutant):
    """The embedding matrix is frozen (requires_grad=False), as nn.Embedding.from_pretrained does."""

    EXPECTED = ("3.4/learned-embeddings",)

    def patch(self, model: T.Transformer) -> T.Transformer:
        model.tgt_embed.weight.requires_grad_(False)
        return model


# -- 3.5 positional encoding -----------------------------------------------------------------


class Sinusoids(Mutant):
    """(A base: the bug is in ``table``, used by the model and by ``positional_encoding``.)"""

    def table(self, length: int, d_model: int) -> Tensor:
        raise NotImplementedError

    def positional_encoding(self, length: int, d_model: int) -> Tensor:
        return self.table(length, d_model)

    def patch(self, model: T.Transformer) -> T.Transformer:
        model.positions.pe = self.table(model.config.max_len, model.config.d_model)
        return model


def _grid(length: int, d_model: int) -> tuple[Tensor, Tensor, Tensor]:
    """Positions [L, 1], even column indices 2i [d/2], and an empty float64 table [L, d]."""
    pos = torch.arange(length, dtype=torch.float64).unsqueeze(1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)
    return pos, two_i, torch.empty(length, d_model, dtype=torch.float64)


class SinCosSwapped(Sinusoids):
    """The positional encoding puts cos on the even dimensions and sin on the odd ones."""

    EXPECTED = ("3.5/formula", "3.5/added")
    DIAGNOSIS = "sin-cos-swapped"

    def table(self, length: int, d_model: int) -> Tensor:
        pos, two_i, pe = _grid(length, d_model)
        angle = pos / 10000.0 ** (two_i / d_model)
        pe[:, 0::2], pe[:, 1::2] = torch.cos(angle), torch.sin(angle)
        return pe


class ExponentI(Sinusoids):
    """The frequency exponent is i/d_model (the pair index) instead of 2i/d_model."""

    EXPECTED = ("3.5/formula", "3.5/wavelengths")
    DIAGNOSIS = "exponent-i"

    def table(self, length: int, d_model: int) -> Tensor:
        pos, two_i, pe = _grid(length, d_model)
        angle = pos / 10000.0 ** ((two_i / 2) / d_model)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(angle), torch.cos(angle)
        return pe


class ExponentColumn(Sinusoids):
    """Each column c gets the frequency 10000^(-c/d_model): sine and cosine of a pair differ."""

    EXPECTED = ("3.5/formula", "3.5/relative-linear", "3.5/wavelengths")
    DIAGNOSIS = "exponent-column"

    def table(self, length: int, d_model: int) -> Tensor:
        pos, _, pe = _grid(length, d_model)
        angle = pos / 10000.0 ** (torch.arange(d_model, dtype=torch.float64) / d_model)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(angle[:, 0::2]), torch.cos(angle[:, 1::2])
        return pe


class WrongBase(Sinusoids):
    """The frequency base is typed as 1000 instead of 10000."""

    EXPECTED = ("3.5/formula", "3.5/wavelengths")
    DIAGNOSIS = "wrong-base"

    def table(self, length: int, d_model: int) -> Tensor:
        pos, two_i, pe = _grid(length, d_model)
        angle = pos / 1000.0 ** (two_i / d_model)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(angle), torch.cos(angle)
        return pe


class PositionsAddedTwice(Mutant):
    """The positional encoding is added by the embedding layer and again by the model."""

    EXPECTED = ("3.5/added",)
    DIAGNOSIS = "positional-encoding-twice"

    class Positions(PositionalEncoding):
        def forward(self, x: Tensor, offset: int = 0) -> Tensor:
            pe = self.pe[offset : offset + x.size(1)].to(x.dtype)
            return self.dropout(x + pe + pe)

    SWAPS = {PositionalEncoding: Positions}


def _decode_without_positions(
    self: T.Transformer, tgt_in: Tensor, memory: Tensor, src_mask: Tensor | None,
    state: T.DecoderState | None = None,
) -> Tensor:
    offset = state.length if state is not None else 0
    y = self.positions.dropout(self.tgt_embed(tgt_in))  # the encoding is added in encode only
    out = self.decoder(y, memory, src_mask, state.layers if state else None, offset)
    if state is not None:
        state.length += tgt_in.size(1)
    return out


class NoTargetPositions(Mutant):
    """The positional encoding is added to the source embeddings only, not to the target's."""

    EXPECTED = ("3.5/added",)
    DIAGNOSIS = "no-positional-encoding"

    def patch(self, model: T.Transformer) -> T.Transformer:
        model.decode = types.MethodType(_decode_without_positions, model)  # type: ignore[method-assign]
        return model

    def embed_target(self, model: T.Transformer, tgt: Tensor) -> Tensor:
        return model.positions.dropout(model.tgt_embed(tgt))


# -- 5.4 dropout on the embedding sums --------------------------------------------------------


class NoEmbeddingDropout(Mutant):
    """No dropout on the sums of embeddings and positional encodings."""

    EXPECTED = ("5.4/embedding-dropout",)
    DIAGNOSIS = "no-embedding-dropout"

    class Positions(PositionalEncoding):
        def forward(self, x: Tensor, offset: int = 0) -> Tensor:
            return x + self.pe[offset : offset + x.size(1)].to(x.dtype)

    SWAPS = {PositionalEncoding: Positions}


class DropoutBeforePositions(Mutant):
    """Dropout is applied to the embeddings before the positional encoding is added."""

    EXPECTED = ("5.4/embedding-dropout",)
    DIAGNOSIS = "dropout-before-positions"

    class Positions(PositionalEncoding):
        def forward(self, x: Tensor, offset: int = 0) -> Tensor:
            return self.dropout(x) + self.pe[offset : offset + x.size(1)].to(x.dtype)

    SWAPS = {PositionalEncoding: Positions}
