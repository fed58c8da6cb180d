# ruff: noqa: RUF012
# (RUF012: the SWAPS tables are class-level constants, never mutated)
"""Broken training and decoding: the decoder input, dropout, the loss, the optimizer and its
schedule, beam search, the key/value cache, checkpoints (3.1, 5.3, 5.4, 6.1, practice)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from unittest import mock

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import transformer as T
import transformer.decoding
from spec.adapter import Config
from tests.mutants import kit
from tests.mutants.kit import Mutant
from transformer.layers import Residual

# -- 3.1/shifted-right ---------------------------------------------------------------------------


class NotShifted(Mutant):
    """The decoder is fed the target itself in training, not the target shifted right."""

    EXPECTED = ("3.1/shifted-right",)
    DIAGNOSIS = "not-shifted"

    def decoder_input(self, tgt: Tensor, bos_id: int) -> Tensor:
        return tgt


class ShiftedWithPadding(Mutant):
    """The target is shifted right with F.pad, so the decoder input starts with 0 (padding), not bos."""

    EXPECTED = ("3.1/shifted-right",)

    def decoder_input(self, tgt: Tensor, bos_id: int) -> Tensor:
        return F.pad(tgt[:, :-1], (1, 0))


# -- 5.4 residual dropout and evaluation mode ----------------------------------------------------


class DropoutAfterResidual(Mutant):
    """Dropout is applied to x + Sublayer(x), after the residual addition: LayerNorm(Dropout(x + s))."""

    EXPECTED = ("5.4/residual-dropout", "5.4/dropout-elsewhere")
    DIAGNOSIS = "dropout-after-residual"

    class Wrap(Residual):
        def forward(self, x: Tensor, sublayer_out: Tensor) -> Tensor:
            return self.norm(self.dropout(x + sublayer_out))

    SWAPS = {Residual: Wrap}


class NoResidualDropout(Mutant):
    """The sub-layer outputs get no dropout: LayerNorm(x + Sublayer(x)) in training too."""

    EXPECTED = ("5.4/residual-dropout",)
    DIAGNOSIS = "no-residual-dropout"

    class Wrap(Residual):
        def forward(self, x: Tensor, sublayer_out: Tensor) -> Tensor:
            return self.norm(x + sublayer_out)

    SWAPS = {Residual: Wrap}


class DropoutInEval(Mutant):
    """Residual dropout is F.dropout(s, p), whose training=True default ignores eval()."""

    EXPECTED = ("5.4/eval-deterministic",)
    DIAGNOSIS = "dropout-in-eval"

    class Wrap(Residual):
        def forward(self, x: Tensor, sublayer_out: Tensor) -> Tensor:
            return self.norm(x + F.dropout(sublayer_out, self.dropout.p))

    SWAPS = {Residual: Wrap}


# -- 5.4 label smoothing ---------------------------------------------------------------------


class NoLabelSmoothing(Mutant):
    """The loss is plain cross-entropy: label smoothing forgotten."""

    EXPECTED = ("5.4/label-smoothing",)
    DIAGNOSIS = "no-label-smoothing"

    def loss(self, logits: Tensor, target: Tensor, pad_id: int) -> Tensor:
        return F.cross_entropy(logits.flatten(0, -2), target.flatten(), ignore_index=pad_id)


class LabelSmoothingTwice(Mutant):
    """The smoothing is 0.2: eps_ls = 0.1 applied in the data pipeline and again in the loss."""

    EXPECTED = ("5.4/label-smoothing",)
    DIAGNOSIS = "label-smoothing-0.2"

    def loss(self, logits: Tensor, target: Tensor, pad_id: int) -> Tensor:
        return T.LabelSmoothingLoss(logits.size(-1), pad_id, 0.2)(logits, target)


class PaddingInLoss(Mutant):
    """The loss is averaged over every position, padding included (no ignore_index)."""

    EXPECTED = ("5.4/label-smoothing", "practice/padding")
    DIAGNOSIS = "padding-in-loss"

    def loss(self, logits: Tensor, target: Tensor, pad_id: int) -> Tensor:
        logp = logits.log_softmax(-1)
        true = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        others = (logp.sum(-1) - true) / (logits.size(-1) - 1)
        return -(0.9 * true + 0.1 * others).mean()


# -- 5.3 optimizer and schedule ------------------------------------------------------------------


class AdamDefaults(Mutant):
    """The optimizer is torch.optim.Adam with PyTorch's defaults (beta2 0.999, eps 1e-8)."""

    EXPECTED = ("5.3/adam",)
    DIAGNOSIS = "adam-defaults"

    def optimizer(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=1.0)


class AdamW(Mutant):
    """The optimizer is AdamW with the paper's betas and eps, and AdamW's default weight decay."""

    name = "adamw"

    EXPECTED = ("5.3/adam",)
    DIAGNOSIS = "adamw-weight-decay"

    def optimizer(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=1.0, betas=(0.9, 0.98), eps=1e-9)


class ScheduleOffByOne(Mutant):
    """The schedule adds 1 to a step count that already starts at 1."""

    EXPECTED = ("5.3/eq3",)
    DIAGNOSIS = "schedule-off-by-one"

    def lr_schedule(self, d_model: int, warmup: int) -> Callable[[int], float]:
        return lambda step: T.noam_rate(step + 1, d_model, warmup)


class ScheduleWithoutDModel(Mutant):
    """The schedule drops the d_model^-0.5 factor: min(step^-0.5, step warmup^-1.5)."""

    name = "schedule-without-dmodel"

    EXPECTED = ("5.3/eq3",)
    DIAGNOSIS = "schedule-no-dmodel-factor"

    def lr_schedule(self, d_model: int, warmup: int) -> Callable[[int], float]:
        return lambda step: min(step**-0.5, step * warmup**-1.5)


# -- 6.1 beam search ---------------------------------------------------------------------------


class NoLengthPenalty(Mutant):
    """Beam search ranks finished hypotheses by raw log-probability (alpha = 0)."""

    EXPECTED = ("6.1/beam-search",)
    DIAGNOSIS = "beam-no-length-penalty"

    def beam_search(self, model: T.Transformer, src: Tensor, src_mask: Tensor, config: Config) -> list[int]:
        return T.beam_search(model, src, alpha=0.0)


class LengthPenaltyWithoutOffset(Mutant):
    """The length penalty is |Y|^alpha instead of ((5 + |Y|) / 6)^alpha."""

    EXPECTED = ("6.1/beam-search",)

    def length_penalty(self, length: int, alpha: float) -> float:
        return float(length**alpha)

    def beam_search(self, model: T.Transformer, src: Tensor, src_mask: Tensor, config: Config) -> list[int]:
        with mock.patch.object(transformer.decoding, "length_penalty", self.length_penalty):
            return T.beam_search(model, src)


class MaxLength50(Mutant):
    """Beam search stops after 50 tokens, not after the input length + 50."""

    EXPECTED = ("6.1/beam-search",)
    DIAGNOSIS = "beam-max-len-50"

    def beam_search(self, model: T.Transformer, src: Tensor, src_mask: Tensor, config: Config) -> list[int]:
        return T.beam_search(model, src, max_len=50)


# -- practice ----------------------------------------------------------------------------------


class CacheNotRead(Mutant):
    """The key/value cache is written at every step but never read: each step attends to itself."""

    EXPECTED = ("practice/incremental-decoding",)
    DIAGNOSIS = "cache-ignored"

    class Attention(kit.Attention):
        def extend(self, cached: Tensor, new: Tensor) -> Tensor:
            return new

    SWAPS = {T.MultiHeadAttention: Attention}


class PositionsRestartWithCache(Mutant):
    """Cached decoding embeds every new token at position 0: the offset is not passed on."""

    EXPECTED = ("practice/incremental-decoding",)

    class Positions(T.PositionalEncoding):
        def forward(self, x: Tensor, offset: int = 0) -> Tensor:
            return super().forward(x)

    SWAPS = {T.PositionalEncoding: Positions}


class LayersInPythonList(Mutant):
    """The layers are kept in a plain Python list: not registered, not saved, not moved or cast."""

    EXPECTED = ("practice/save-load",)
    ERRORS = ("practice/padding", "practice/batch-independence", "practice/incremental-decoding",
              "practice/gradients", "practice/devices-dtypes")

    def patch(self, model: T.Transformer) -> T.Transformer:
        for stack in (model.encoder, model.decoder):
            layers = list(stack.layers)
            del stack.layers
            stack.layers = layers  # type: ignore[assignment]
        return model


class CheckpointLosesDType(Mutant):
    """Loading builds the model in the default dtype and copies the saved weights into it."""

    name = "checkpoint-loses-dtype"

    EXPECTED = ("practice/save-load",)
    DIAGNOSIS = "checkpoint-dtype-lost"

    def load(self, path: str | os.PathLike[str]) -> nn.Module:
        payload = torch.load(path, weights_only=True)
        model = self.patch(T.Transformer(T.TransformerConfig.from_dict(payload["config"])))
        model.load_state_dict(payload["state"])
        return model
