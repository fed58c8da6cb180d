# ruff: noqa: RUF012
# (RUF012: the SWAPS tables are class-level constants, never mutated)
"""Legitimate readings of the paper: each must be reported as the named VARIANT, and none may make
any clause deviate."""

from __future__ import annotations

import math
import types
from collections.abc import Callable
from typing import ClassVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import transformer as T
from tests.mutants import kit
from tests.mutants.kit import Layout, Variant, copy_with
from transformer.layers import DecoderLayer, EncoderLayer, FeedForward, LayerCache, Residual
from transformer.model import Decoder, Encoder

MHA = T.MultiHeadAttention


def _same(t: Tensor) -> Tensor:
    return t


# -- 3.2.2 ---------------------------------------------------------------------------------------


class ProjectionBiases(Variant):
    """W^Q, W^K, W^V and W^O have biases (nn.Linear's default, as in nn.MultiheadAttention)."""

    VARIANTS = (("3.2.2/eq", "projection-biases"), ("3.2.2/head-dims", "projection-biases"),
                ("table3/param-formula", "projection-biases"))
    SWAPS = {MHA: kit.Attention}

    def swapped(self, module: nn.Module) -> nn.Module:
        for _, _, attn in kit.attention_modules(super().swapped(module)):
            d = attn.d_model
            attn.in_proj.bias = nn.Parameter(torch.zeros(3 * d))
            attn.out_proj.bias = nn.Parameter(torch.zeros(d))
        return module

    def layout(self, module: nn.Module) -> Layout:
        out = super().layout(module)
        for name, path, attn in kit.attention_modules(module):
            h, d, dk = attn.h, attn.d_model, attn.d_k
            for i, x in enumerate("QKV"):
                rows = slice(i * d, (i + 1) * d)

                def read(b: Tensor, rows: slice = rows, h: int = h, dk: int = dk) -> Tensor:
                    return b[rows].view(h, dk)

                out[f"{name}b_{x}"] = (f"{path}in_proj.bias", read, copy_with(torch.flatten, rows))
            out[f"{name}b_O"] = (f"{path}out_proj.bias", _same, copy_with(_same))
        return out


class FusedQKVPerHead(Variant):
    """One fused QKV matrix with rows grouped per head, [h, (q, k, v), d_k], as GPT-NeoX stores it."""

    class Attention(kit.Attention):
        def project(self, x: Tensor, which: int) -> Tensor:
            w = self.in_proj.weight.view(self.h, 3, self.d_k, self.d_model)[:, which]
            return F.linear(x, w.reshape(self.d_model, self.d_model))

    SWAPS = {MHA: Attention}

    def layout(self, module: nn.Module) -> Layout:
        out = super().layout(module)
        for name, path, attn in kit.attention_modules(module):
            h, d, dk = attn.h, attn.d_model, attn.d_k
            for i, x in enumerate("QKV"):

                def read(w: Tensor, i: int = i, h: int = h, dk: int = dk, d: int = d) -> Tensor:
                    return w.view(h, 3, dk, d)[:, i].transpose(1, 2)

                def write(w: Tensor, c: Tensor, i: int = i, h: int = h, dk: int = dk, d: int = d) -> None:
                    w.view(h, 3, dk, d)[:, i].copy_(c.transpose(1, 2))

                out[f"{name}W_{x}"] = (f"{path}in_proj.weight", read, write)
        return out


# -- 3.1 -----------------------------------------------------------------------------------------


def around(residual: Residual, x: Tensor, sublayer: Callable[[Tensor], Tensor]) -> Tensor:
    """x + Dropout(Sublayer(LayerNorm(x))), with the residual's norm and dropout."""
    return x + residual.dropout(sublayer(residual.norm(x)))


class PreNorm(Variant):
    """Each sub-layer is x + Dropout(Sublayer(LayerNorm(x))), as in tensor2tensor's later versions."""

    VARIANTS = (("3.1/residual-norm", "pre-norm"), ("5.4/residual-dropout", "pre-norm"))

    class Encoding(EncoderLayer):
        def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
            x = around(self.residual_1, x, lambda t: self.self_attn(t, mask=mask)[0])
            return around(self.residual_2, x, self.ffn)

    class Decoding(DecoderLayer):
        def forward(self, y: Tensor, memory: Tensor, src_mask: Tensor | None,
                    self_mask: Tensor | None = None, cache: LayerCache | None = None) -> Tensor:
            causal = (cache is None or cache.self_attn.k is None) and self_mask is None
            mine = cache.self_attn if cache is not None else None
            cross = cache.cross_attn if cache is not None else None
            y = around(self.residual_1, y,
                       lambda t: self.self_attn(t, mask=self_mask, is_causal=causal, cache=mine)[0])
            y = around(self.residual_2, y,
                       lambda t: self.cross_attn(t, memory, src_mask, cache=cross)[0])
            return around(self.residual_3, y, self.ffn)

    SWAPS = {EncoderLayer: Encoding, DecoderLayer: Decoding}


class FinalNorm(Variant):
    """A LayerNorm after each stack (encoder.norm, decoder.norm), as nn.Transformer has."""

    VARIANTS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("3.1/no-final-norm", "final-norm"), ("table3/param-formula", "final-norm"))

    class EncoderStack(Encoder):
        norm: nn.LayerNorm

        def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
            return self.norm(super().forward(x, mask))

    class DecoderStack(Decoder):
        norm: nn.LayerNorm

        def forward(self, y: Tensor, memory: Tensor, src_mask: Tensor | None,
                    cache: list[LayerCache] | None = None, offset: int = 0) -> Tensor:
            return self.norm(super().forward(y, memory, src_mask, cache, offset))

    SWAPS = {Encoder: EncoderStack, Decoder: DecoderStack}

    def patch(self, model: T.Transformer) -> T.Transformer:
        model.encoder.norm = nn.LayerNorm(model.config.d_model)
        model.decoder.norm = nn.LayerNorm(model.config.d_model)
        return model

    def layout(self, module: nn.Module) -> Layout:
        out = super().layout(module)
        if isinstance(module, T.Transformer):
            for stack in ("encoder", "decoder"):
                out[f"{stack}.norm.gamma"] = (f"{stack}.norm.weight", _same, copy_with(_same))
                out[f"{stack}.norm.beta"] = (f"{stack}.norm.bias", _same, copy_with(_same))
        return out


class PreNormWithFinalNorm(FinalNorm):
    """Pre-norm sub-layers and a LayerNorm after each stack: the usual modern arrangement."""

    VARIANTS = (*PreNorm.VARIANTS, *FinalNorm.VARIANTS)
    SWAPS = {**PreNorm.SWAPS, **FinalNorm.SWAPS}


class AnnotatedTransformer(Variant):
    """The Annotated Transformer: LayerNorm (x - mean) / (x.std() + 1e-6), loss a summed KL divergence."""

    VARIANTS = (("3.1/residual-norm", "layer-norm-eps"), ("3.1/residual-norm", "unbiased-variance"),
                ("3.1/residual-norm", "eps-outside-sqrt"), ("5.4/label-smoothing", "kl-loss"),
                ("5.4/label-smoothing", "summed-loss"),
                ("5.4/label-smoothing", "spread-excluding-true-and-pad"))

    class Norm(nn.LayerNorm):
        def forward(self, x: Tensor) -> Tensor:
            mean, std = x.mean(-1, keepdim=True), x.std(-1, keepdim=True)
            return self.weight * (x - mean) / (std + 1e-6) + self.bias

    SWAPS = {nn.LayerNorm: Norm}

    def loss(self, logits: Tensor, target: Tensor, pad_id: int) -> Tensor:
        true = F.one_hot(target, logits.size(-1)).to(logits.dtype)
        smoothed = 0.9 * true + 0.1 / (logits.size(-1) - 2) * (1 - true)
        smoothed[..., pad_id] = 0
        smoothed = smoothed * (target != pad_id).unsqueeze(-1)
        return F.kl_div(logits.log_softmax(-1), smoothed, reduction="sum")


# -- 3.3 -----------------------------------------------------------------------------------------


class GELU(Variant):
    """The feed-forward network uses GELU instead of ReLU (BERT, GPT)."""

    VARIANTS = (("3.3/eq2", "gelu"),)

    class FFN(FeedForward):
        def forward(self, x: Tensor) -> Tensor:
            return self.w_2(F.gelu(self.w_1(x)))

    SWAPS = {FeedForward: FFN}


# -- 3.4 -----------------------------------------------------------------------------------------


class UntiedEmbeddings(Variant):
    """Source embedding, target embedding and pre-softmax map are three separate matrices."""

    VARIANTS = (("3.4/weight-tying", "untied-embeddings"),
                ("table3/param-formula", "untied-embeddings"))

    def patch(self, model: T.Transformer) -> T.Transformer:
        c = model.config
        model.src_embed = T.Embedding(c.src_vocab, c.d_model)
        model.generator.weight = nn.Parameter(model.tgt_embed.weight.detach().clone())
        return model


class TwoWayTying(Variant):
    """Only the target embedding and the pre-softmax map share a matrix (fairseq's default)."""

    VARIANTS = (("3.4/weight-tying", "two-way-tying"), ("table3/param-formula", "untied-embeddings"))

    def patch(self, model: T.Transformer) -> T.Transformer:
        model.src_embed = T.Embedding(model.config.src_vocab, model.config.d_model)
        return model


class GeneratorBias(Variant):
    """The pre-softmax linear map has a bias (nn.Linear's default)."""

    VARIANTS = (("3.4/output-softmax", "generator-bias"), ("table3/param-formula", "generator-bias"))

    def patch(self, model: T.Transformer) -> T.Transformer:
        model.generator.bias = nn.Parameter(torch.zeros(model.config.tgt_vocab))
        return model

    def layout(self, module: nn.Module) -> Layout:
        out = super().layout(module)
        if isinstance(module, T.Transformer):
            out["generator.b"] = ("generator.bias", _same, copy_with(_same))
        return out


# -- 3.5 -----------------------------------------------------------------------------------------


def concatenated_sinusoids(length: int, d_model: int) -> Tensor:
    """[sin(pos w_i) for all i, cos(pos w_i) for all i], w_i = 10000^(-2i/d_model)."""
    pos = torch.arange(length, dtype=torch.float64).unsqueeze(1)
    angle = pos / 10000.0 ** (torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)


class ConcatenatedSinCos(Variant):
    """The sines fill the first half of the encoding and the cosines the second (tensor2tensor)."""

    VARIANTS = (("3.5/formula", "concatenated-sin-cos"),)

    def positional_encoding(self, length: int, d_model: int) -> Tensor:
        return concatenated_sinusoids(length, d_model)

    def patch(self, model: T.Transformer) -> T.Transformer:
        model.positions.pe = concatenated_sinusoids(model.config.max_len, model.config.d_model)
        return model


def fairseq_sinusoids(length: int, d_model: int) -> Tensor:
    """fairseq's SinusoidalPositionalEmbedding: [sin, cos] halves, frequencies
    10000^(-i/(d/2 - 1)), positions counted from padding_idx + 1 (here 1)."""
    half = d_model // 2
    frequencies = torch.exp(torch.arange(half, dtype=torch.float64) * -(math.log(10000) / (half - 1)))
    angle = torch.arange(1, length + 1, dtype=torch.float64).unsqueeze(1) * frequencies
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)


class FairseqSinusoids(Variant):
    """fairseq's sinusoids: concatenated halves, tensor2tensor's denominator, positions from 1."""

    VARIANTS = (("3.5/formula", "concatenated-sin-cos"), ("3.5/formula", "timescale-denominator"),
                ("3.5/formula", "one-based-positions"))

    def positional_encoding(self, length: int, d_model: int) -> Tensor:
        return fairseq_sinusoids(length, d_model)

    def patch(self, model: T.Transformer) -> T.Transformer:
        model.positions.pe = fairseq_sinusoids(model.config.max_len, model.config.d_model)
        return model


class Learned(nn.Module):
    """A learned position table [max_len, d_model], added to the embeddings, then dropout."""

    def __init__(self, max_len: int, d_model: int, dropout: float) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(max_len, d_model) * 0.02)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        return self.dropout(x + self.table[offset : offset + x.size(1)])


def positions(model: nn.Module, which: str) -> Learned:
    """The model's learned table for ``which`` stack (``src`` or ``tgt``)."""
    return cast(Learned, getattr(model, f"{which}_positions"))


def _encode(self: T.Transformer, src: Tensor, src_mask: Tensor | None = None) -> Tensor:
    src_mask = T.padding_mask(src, self.config.pad_id) if src_mask is None else src_mask
    return self.encoder(positions(self, "src")(self.src_embed(src)), src_mask)


def _decode(self: T.Transformer, tgt_in: Tensor, memory: Tensor, src_mask: Tensor | None,
            state: T.DecoderState | None = None) -> Tensor:
    offset = state.length if state is not None else 0
    y = positions(self, "tgt")(self.tgt_embed(tgt_in), offset)
    out = self.decoder(y, memory, src_mask, state.layers if state else None, offset)
    if state is not None:
        state.length += tgt_in.size(1)
    return out


class LearnedPositions(Variant):
    """Learned positional embeddings, one table per stack, instead of the sinusoids (Table 3, E)."""

    VARIANTS = (("3.5/formula", "learned-positions"), ("3.5/added", "learned-positions"),
                ("3.5/wavelengths", "learned-positions"), ("3.5/relative-linear", "learned-positions"),
                ("3.5/extrapolation", "learned-positions"), ("table3/param-formula", "learned-positions"))
    positional_encoding = None  # type: ignore[assignment]

    def patch(self, model: T.Transformer) -> T.Transformer:
        c = model.config
        model.src_positions = Learned(c.max_len, c.d_model, c.dropout)
        model.tgt_positions = Learned(c.max_len, c.d_model, c.dropout)
        del model.positions
        model.encode = types.MethodType(_encode, model)  # type: ignore[method-assign]
        model.decode = types.MethodType(_decode, model)  # type: ignore[method-assign]
        return model

    def layout(self, module: nn.Module) -> Layout:
        out = super().layout(module)
        if isinstance(module, T.Transformer):
            for which in ("src", "tgt"):
                out[f"{which}_positions"] = (f"{which}_positions.table", _same, copy_with(_same))
        return out

    def embed_source(self, model: T.Transformer, src: Tensor) -> Tensor:
        return positions(model, "src")(model.src_embed(src))

    def embed_target(self, model: T.Transformer, tgt: Tensor) -> Tensor:
        return positions(model, "tgt")(model.tgt_embed(tgt))


# -- 5.3, 5.4 ------------------------------------------------------------------------------------


class AttentionDropout(Variant):
    """Dropout on the attention weights, with the model's P_drop (as in nn.MultiheadAttention)."""

    VARIANTS = (("5.4/dropout-elsewhere", "attention-dropout"),)

    class Attention(kit.Attention):
        p = 0.0

        def weights(self, scores: Tensor, mask: Tensor | None) -> Tensor:
            return F.dropout(super().weights(scores, mask), self.p, self.training)

    SWAPS = {MHA: Attention}

    def patch(self, model: T.Transformer) -> T.Transformer:
        for _, _, attn in kit.attention_modules(model):
            attn.p = model.config.dropout  # type: ignore[assignment]
        return model


class FFNDropout(Variant):
    """Dropout after the FFN's ReLU (tensor2tensor's relu_dropout); the adapter has no bare FFN."""

    VARIANTS = (("5.4/dropout-elsewhere", "ffn-dropout"),)
    # no standalone FFN: 3.3 is judged inside the model
    feed_forward = None  # type: ignore[assignment]
    feed_forward_forward = None  # type: ignore[assignment]

    class FFN(FeedForward):
        p = 0.0

        def forward(self, x: Tensor) -> Tensor:
            return self.w_2(F.dropout(F.relu(self.w_1(x)), self.p, self.training))

    SWAPS = {FeedForward: FFN}

    def patch(self, model: T.Transformer) -> T.Transformer:
        for layer in [*model.encoder.layers, *model.decoder.layers]:
            layer.ffn.p = model.config.dropout
        return model


class TorchIdioms(Variant):
    """PyTorch idioms: F.cross_entropy(label_smoothing=0.1), and a schedule defined at step 0 too."""

    VARIANTS = (("5.3/eq3", "step-zero"),)  # label_smoothing= spreads over all V: CONFORMS

    def loss(self, logits: Tensor, target: Tensor, pad_id: int) -> Tensor:
        return F.cross_entropy(logits.flatten(0, -2), target.flatten(), ignore_index=pad_id,
                               label_smoothing=0.1)

    def lr_schedule(self, d_model: int, warmup: int) -> Callable[[int], float]:
        return lambda step: T.noam_rate(max(step, 1), d_model, warmup)  # LambdaLR calls it at 0
