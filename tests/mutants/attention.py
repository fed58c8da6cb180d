# ruff: noqa: RUF012
# (RUF012: the SWAPS tables are class-level constants, never mutated)
"""Broken attention: scaling, the softmax axis, masks, heads (3.2.1, 3.2.2, 3.2.3, padding)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import transformer as T
from tests.mutants import kit
from tests.mutants.kit import Mutant

MHA = T.MultiHeadAttention

# -- 3.2.1 scaled dot-product attention ------------------------------------------------------


class NoScale(Mutant):
    """The scores are not scaled: softmax(Q K^T) V."""

    EXPECTED = ("3.2.1/scale", "3.2.1/eq1")
    DIAGNOSIS = "no-scale"

    class Attention(kit.Attention):
        def scores(self, q: Tensor, k: Tensor) -> Tensor:
            return q @ k.transpose(-2, -1)

    SWAPS = {MHA: Attention}


class ScaleDk(Mutant):
    """The scores are divided by d_k instead of sqrt(d_k)."""

    EXPECTED = ("3.2.1/scale",)
    DIAGNOSIS = "scale-dk"

    class Attention(kit.Attention):
        def scores(self, q: Tensor, k: Tensor) -> Tensor:
            return q @ k.transpose(-2, -1) / q.size(-1)

    SWAPS = {MHA: Attention}


class ScaleDModel(Mutant):
    """The multi-head module divides the scores by sqrt(d_model), the width it knows, not sqrt(d_k)."""

    name = "scale-dmodel"

    EXPECTED = ("3.2.2/eq",)
    DIAGNOSIS = "scale-dmodel"

    class Attention(kit.Attention):
        def scores(self, q: Tensor, k: Tensor) -> Tensor:
            return q @ k.transpose(-2, -1) / math.sqrt(self.d_model)

    SWAPS = {MHA: Attention}


class SoftmaxOverQueries(Mutant):
    """The softmax runs over dim=-2 (the queries) instead of dim=-1 (the keys)."""

    EXPECTED = ("3.2.1/softmax-over-keys", "3.2.1/eq1")
    DIAGNOSIS = "softmax-over-queries"

    class Attention(kit.Attention):
        def weights(self, scores: Tensor, mask: Tensor | None) -> Tensor:
            if mask is not None:
                scores = scores.masked_fill(~mask, -1e9)
            return scores.softmax(-2)

    SWAPS = {MHA: Attention}


class MaskIgnored(Mutant):
    """The attention mask is accepted but never applied."""

    EXPECTED = ("3.2.1/mask",)
    DIAGNOSIS = "mask-ignored"

    class Attention(kit.Attention):
        def weights(self, scores: Tensor, mask: Tensor | None) -> Tensor:
            return scores.softmax(-1)

    SWAPS = {MHA: Attention}


class MaskInverted(Mutant):
    """The mask is read as True = masked (PyTorch's key_padding_mask convention), not True = may attend."""

    EXPECTED = ("3.2.1/mask",)
    DIAGNOSIS = "mask-inverted"

    class Attention(kit.Attention):
        def weights(self, scores: Tensor, mask: Tensor | None) -> Tensor:
            if mask is not None:
                scores = scores.masked_fill(mask, -1e9)
            return scores.softmax(-1)

    SWAPS = {MHA: Attention}


# -- 3.2.2 multi-head attention --------------------------------------------------------------


class SliceInput(Mutant):
    """Each head projects its own d_model/h slice of the input instead of the whole input."""

    EXPECTED = ("3.2.2/heads-split-by-projection",)
    DIAGNOSIS = "slice-input"

    class Attention(kit.Attention):
        def project(self, x: Tensor, which: int) -> Tensor:
            w = self.in_proj.weight[which * self.d_model : (which + 1) * self.d_model]
            c, dk = self.d_model // self.h, self.d_k
            slices = x.split(c, dim=-1)
            return torch.cat(
                [F.linear(s, w[i * dk : (i + 1) * dk, i * c : (i + 1) * c]) for i, s in enumerate(slices)],
                dim=-1,
            )

    SWAPS = {MHA: Attention}

    def layout(self, module: nn.Module) -> kit.Layout:
        """Each head holds weights for its own slice of the input only: the rest reads as 0."""
        out = super().layout(module)
        for name, _, attn in kit.attention_modules(module):
            h, c = attn.h, attn.d_model // attn.h
            block = torch.zeros(h, attn.d_model, attn.d_k)
            for i in range(h):
                block[i, i * c : (i + 1) * c] = 1
            for x in "QKV":
                path, read, write = out[f"{name}W_{x}"]

                def sliced(w: Tensor, read: kit.Read = read, block: Tensor = block) -> Tensor:
                    return read(w) * block.to(w)

                out[f"{name}W_{x}"] = (path, sliced, write)
        return out


class ConcatWithoutTranspose(Mutant):
    """The heads [B, h, L, d_k] are reshaped to [B, L, d_model] without moving the head axis."""

    EXPECTED = ("3.2.2/eq",)
    DIAGNOSIS = "concat-without-transpose"

    class Attention(kit.Attention):
        def concat(self, heads: Tensor) -> Tensor:
            b, h, length, d_k = heads.shape
            return heads.reshape(b, length, h * d_k)

    SWAPS = {MHA: Attention}


class NoOutputProjection(Mutant):
    """The concatenated heads are returned without the output projection W^O."""

    EXPECTED = ("3.2.2/eq",)
    DIAGNOSIS = "no-output-projection"

    class Attention(kit.Attention):
        def output(self, t: Tensor) -> Tensor:
            return t

    SWAPS = {MHA: Attention}


class SingleHead(Mutant):
    """The head count is ignored: one head of width d_model (h = 1, d_k = d_model)."""

    EXPECTED = ("3.2.2/head-dims",)

    def multi_head(self, d_model: int, h: int) -> MHA:
        module = T.MultiHeadAttention(d_model, h)
        module.h, module.d_k = 1, d_model
        return module

    def patch(self, model: T.Transformer) -> T.Transformer:
        for module in model.modules():
            if isinstance(module, MHA):
                module.h, module.d_k = 1, module.d_model
        return model


# -- 3.2.3 applications of attention -----------------------------------------------------------


class DecoderNotCausal(Mutant):
    """The decoder self-attention is called without the causal mask."""

    EXPECTED = ("3.2.3/decoder-self", "3.1/decoder-causal")
    DIAGNOSIS = "decoder-not-causal"

    class Attention(kit.Attention):
        def mask(self, mask: Tensor | None, is_causal: bool, lq: int, lk: int) -> Tensor | None:
            return super().mask(mask, False, lq, lk)

    SWAPS = {MHA: Attention}


class CausalOffByOneFuture(Mutant):
    """The causal mask is tril(1) instead of tril(0): position i also sees position i + 1."""

    EXPECTED = ("3.2.3/decoder-self", "3.1/decoder-causal")
    DIAGNOSIS = "causal-off-by-one-future"

    class Attention(kit.Attention):
        def causal(self, lq: int, lk: int) -> Tensor:
            return torch.ones(lq, lk, dtype=torch.bool, device=self.device).tril(lk - lq + 1)

    SWAPS = {MHA: Attention}


class CausalOffByOneSelf(Mutant):
    """The causal mask is tril(-1): position i is hidden from itself."""

    EXPECTED = ("3.2.3/decoder-self",)
    DIAGNOSIS = "causal-off-by-one-self"

    class Attention(kit.Attention):
        def causal(self, lq: int, lk: int) -> Tensor:
            return torch.ones(lq, lk, dtype=torch.bool, device=self.device).tril(lk - lq - 1)

    SWAPS = {MHA: Attention}


class EncoderCausal(Mutant):
    """The encoder self-attention gets the decoder's causal mask as well as the padding mask."""

    EXPECTED = ("3.2.3/encoder-self",)
    DIAGNOSIS = "encoder-causal"

    class Attention(kit.Attention):
        def mask(self, mask: Tensor | None, is_causal: bool, lq: int, lk: int) -> Tensor | None:
            padding = super().mask(mask, False, lq, lk)
            return self.causal(lq, lk) if padding is None else padding & self.causal(lq, lk)

    def patch(self, model: T.Transformer) -> T.Transformer:
        kit.retype((layer.self_attn for layer in model.encoder.layers), self.Attention)
        return model


class CrossAttentionCausal(Mutant):
    """The encoder-decoder attention is causally masked: target i sees source positions <= i."""

    EXPECTED = ("3.2.3/cross-attention",)
    DIAGNOSIS = "cross-attention-causal"

    class Attention(kit.Attention):
        def mask(self, mask: Tensor | None, is_causal: bool, lq: int, lk: int) -> Tensor | None:
            causal = torch.ones(lq, lk, dtype=torch.bool, device=self.device).tril()
            padding = super().mask(mask, False, lq, lk)
            return causal if padding is None else padding & causal

    def patch(self, model: T.Transformer) -> T.Transformer:
        kit.retype((layer.cross_attn for layer in model.decoder.layers), self.Attention)
        return model


class CrossAttentionToSelf(Mutant):
    """The encoder-decoder attention is called as self-attention, cross_attn(y), ignoring memory."""

    EXPECTED = ("3.1/decoder-layer", "3.1/shared-memory")
    DIAGNOSIS = "cross-attention-self"

    class Attention(kit.Attention):
        def forward(self, x: Tensor, memory: Tensor | None = None, mask: Tensor | None = None,
                    **kwargs: Any) -> tuple[Tensor, Tensor | None]:
            return super().forward(x, None, None, **kwargs)

    def patch(self, model: T.Transformer) -> T.Transformer:
        kit.retype((layer.cross_attn for layer in model.decoder.layers), self.Attention)
        return model


# -- practice/padding ------------------------------------------------------------------------


class EncoderIgnoresPadding(Mutant):
    """The encoder self-attention is called without the source padding mask."""

    EXPECTED = ("practice/padding",)
    DIAGNOSIS = "mask-ignored-in-encoder"

    class Attention(kit.Attention):
        def mask(self, mask: Tensor | None, is_causal: bool, lq: int, lk: int) -> Tensor | None:
            return None

    def patch(self, model: T.Transformer) -> T.Transformer:
        kit.retype((layer.self_attn for layer in model.encoder.layers), self.Attention)
        return model


class CrossAttentionIgnoresPadding(Mutant):
    """The encoder-decoder attention is called without the source padding mask."""

    EXPECTED = ("practice/padding",)

    class Attention(kit.Attention):
        def mask(self, mask: Tensor | None, is_causal: bool, lq: int, lk: int) -> Tensor | None:
            return None

    def patch(self, model: T.Transformer) -> T.Transformer:
        kit.retype((layer.cross_attn for layer in model.decoder.layers), self.Attention)
        return model
