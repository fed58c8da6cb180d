# ruff: noqa: RUF012
# (RUF012: the SWAPS tables are class-level constants, never mutated)
"""Broken stacks and layers: residuals, norms, the sub-layers, shared parameters, the encoder output
the decoder reads, the feed-forward network (3.1, 3.3)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

import transformer as T
from tests.mutants import kit
from tests.mutants.kit import Mutant
from transformer.layers import DecoderLayer, EncoderLayer, FeedForward, LayerCache, Residual
from transformer.model import Decoder, Encoder

# -- 3.1/residual-norm -----------------------------------------------------------------------


class NoResidual(Mutant):
    """The residual connection is missing: LayerNorm(Sublayer(x))."""

    EXPECTED = ("3.1/residual-norm",)
    DIAGNOSIS = "no-residual"

    class Wrap(Residual):
        def forward(self, x: Tensor, sublayer_out: Tensor) -> Tensor:
            return self.norm(self.dropout(sublayer_out))

    SWAPS = {Residual: Wrap}


class NoNorm(Mutant):
    """The LayerNorm around the sub-layers is never applied: x + Sublayer(x)."""

    EXPECTED = ("3.1/residual-norm",)
    DIAGNOSIS = "no-norm"

    class Wrap(Residual):
        def forward(self, x: Tensor, sublayer_out: Tensor) -> Tensor:
            return x + self.dropout(sublayer_out)

    SWAPS = {Residual: Wrap}


class NormOncePerLayer(Mutant):
    """Each layer normalises once, after its last sub-layer; the other sub-layers get x + Sublayer(x)."""

    EXPECTED = ("3.1/residual-norm", "3.1/encoder-layer")

    def patch(self, model: T.Transformer) -> T.Transformer:
        kit.retype([layer.residual_1 for layer in model.encoder.layers], NoNorm.Wrap)
        kit.retype([r for layer in model.decoder.layers for r in (layer.residual_1, layer.residual_2)],
                   NoNorm.Wrap)
        return model


# -- 3.1 layers and stacks -------------------------------------------------------------------


class MissingFeedForward(Mutant):
    """The encoder layer returns after self-attention: the feed-forward sub-layer is never called."""

    EXPECTED = ("3.1/encoder-layer",)
    DIAGNOSIS = "missing-sublayer"

    class Layer(EncoderLayer):
        def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
            return self.residual_1(x, self.self_attn(x, mask=mask)[0])

    SWAPS = {EncoderLayer: Layer}


class CrossAttentionFirst(Mutant):
    """The decoder layer applies the encoder-decoder attention before the masked self-attention."""

    EXPECTED = ("3.1/decoder-layer",)
    DIAGNOSIS = "sublayer-order"

    class Layer(DecoderLayer):
        def forward(self, y: Tensor, memory: Tensor, src_mask: Tensor | None,
                    self_mask: Tensor | None = None, cache: LayerCache | None = None) -> Tensor:
            cross = cache.cross_attn if cache is not None else None
            y = self.residual_2(y, self.cross_attn(y, memory, src_mask, cache=cross)[0])
            causal = cache is None or cache.self_attn.k is None
            mine = cache.self_attn if cache is not None else None
            y = self.residual_1(y, self.self_attn(
                y, mask=self_mask, is_causal=causal and self_mask is None, cache=mine)[0])
            return self.residual_3(y, self.ffn(y))

    SWAPS = {DecoderLayer: Layer}


class SharedLayers(Mutant):
    """The encoder stack repeats one layer object: nn.ModuleList([layer] * N)."""

    EXPECTED = ("3.1/encoder-stack",)
    DIAGNOSIS = "shared-layers"

    def patch(self, model: T.Transformer) -> T.Transformer:
        layers = model.encoder.layers
        model.encoder.layers = nn.ModuleList([layers[0]] * len(layers))
        return model


class ReturnInsideLoop(Mutant):
    """The encoder's `return x` is indented into the loop: only the first layer runs."""

    EXPECTED = ("3.1/encoder-stack",)

    class Stack(Encoder):
        def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
            for layer in self.layers:
                x = layer(x, mask)
                return x
            return x

    SWAPS = {Encoder: Stack}


class HiddenFinalNorm(Mutant):
    """The encoder ends with a LayerNorm without learnable parameters, which no adapter can expose."""

    EXPECTED = ("3.1/no-final-norm",)
    DIAGNOSIS = "hidden-final-norm"

    class Stack(Encoder):
        def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
            x = super().forward(x, mask)
            return F.layer_norm(x, x.shape[-1:])

    SWAPS = {Encoder: Stack}


class SelfAttentionReusedForCross(Mutant):
    """The decoder layer uses one attention module for self- and encoder-decoder attention."""

    EXPECTED = ("3.1/decoder-layer", "table3/param-formula")

    def patch(self, model: T.Transformer) -> T.Transformer:
        for layer in model.decoder.layers:
            layer.cross_attn = layer.self_attn
        return model


class DecoderReadsEncoderLayers(Mutant):
    """Encoder and decoder run layer by layer: decoder layer i attends to encoder layer i's output."""

    EXPECTED = ("3.1/shared-memory",)
    DIAGNOSIS = "memory-not-shared"

    class Stack(Encoder):
        def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
            self.states = []
            for layer in self.layers:
                x = layer(x, mask)
                self.states.append(x)
            return x

    class Layers(Decoder):
        encoder: Encoder

        def forward(self, y: Tensor, memory: Tensor, src_mask: Tensor | None,
                    cache: list[LayerCache] | None = None, offset: int = 0) -> Tensor:
            states = getattr(self.encoder, "states", [])
            if not states or states[-1] is not memory:  # not the encoder's output: as before
                return super().forward(y, memory, src_mask, cache, offset)
            self_mask = T.causal_mask(y.size(1), y.device, offset) if offset and y.size(1) > 1 else None
            for i, layer in enumerate(self.layers):
                y = layer(y, states[i], src_mask, self_mask, cache[i] if cache is not None else None)
            return y

    SWAPS = {Encoder: Stack, Decoder: Layers}

    def patch(self, model: T.Transformer) -> T.Transformer:
        object.__setattr__(model.decoder, "encoder", model.encoder)  # not a submodule
        return model


# -- 3.3 the feed-forward network ------------------------------------------------------------


class NoReLU(Mutant):
    """The feed-forward network has no activation: two linear maps in a row."""

    name = "no-relu"

    EXPECTED = ("3.3/eq2",)
    DIAGNOSIS = "no-relu"

    class FFN(FeedForward):
        def forward(self, x: Tensor) -> Tensor:
            return self.w_2(self.w_1(x))

    SWAPS = {FeedForward: FFN}


class FFNWidthDModel(Mutant):
    """The feed-forward network is built as FeedForward(d_model, d_model): d_ff is never passed."""

    name = "ffn-width-dmodel"

    EXPECTED = ("3.3/dims",)

    def feed_forward(self, d_model: int, d_ff: int) -> nn.Module:
        return FeedForward(d_model, d_model)

    def patch(self, model: T.Transformer) -> T.Transformer:
        d = model.config.d_model
        for layer in [*model.encoder.layers, *model.decoder.layers]:
            layer.ffn = FeedForward(d, d)
        return model
