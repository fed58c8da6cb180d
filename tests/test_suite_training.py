# ruff: noqa: RUF012
# (RUF012: the SWAPS tables are class-level constants, never mutated)
"""The 5.4 clause tests (spec/suite/test_5_training.py) judge what they claim: every dropout and
loss check can fail, names a bug only when the bug's model matches, and implementations cut
differently from the reference pass.

Each implementation here is the reference adapter with one change (:mod:`tests.mutants.kit`),
run through the clause tests in-process; the helpers the tests measure with are also checked on
synthetic data. The corpus (tests/mutants) holds the bugs and variants that every release must
keep catching; these are the cases of the regularisation clauses' own logic.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch._dynamo  # imported lazily by torch; pytester must not unload it
import torch.nn.functional as F
from torch import Tensor, nn

import spec.adapters.reference
import spec.oracle  # imported before pytester snapshots sys.modules
import tests.mutants.variants as corpus
import transformer as T
from spec.suite import test_5_training as S
from spec.suite.helpers import dropout as D
from spec.tolerances import tolerance
from tests.mutants import kit, training
from tests.suite_run import said, suite_report
from transformer.embeddings import PositionalEncoding
from transformer.layers import FeedForward, Residual
from transformer.model import Decoder, Encoder

pytest_plugins = ["pytester"]


def run(pytester: pytest.Pytester, cls: type, select: str) -> dict[str, dict[str, Any]]:
    """The report on ``cls`` of the 5.x tests whose names match ``select`` (``-k``)."""
    return suite_report(pytester, f"{cls.__module__}:{cls.__qualname__}",
                        ["spec.suite.test_5_training"], "-k", select)


# -- implementations without dropout elsewhere, cut differently --------------------------------


class GatedFFN(kit.Implementation):
    """A gated FFN, (ReLU(x W_1 + b_1) * (x W_3 + b_3)) W_2 + b_2, its gate not exposed."""

    class FFN(FeedForward):
        gate: nn.Linear

        def forward(self, x: Tensor) -> Tensor:
            return self.w_2(self.w_1(x).relu() * self.gate(x))

    SWAPS = {FeedForward: FFN}

    def patch(self, model: T.Transformer) -> T.Transformer:
        for layer in [*model.encoder.layers, *model.decoder.layers]:
            layer.ffn.gate = nn.Linear(model.config.d_model, model.config.d_ff)
            nn.init.ones_(layer.ffn.gate.bias)
        return model


class BiasFreeFixedWidth(kit.Implementation):
    """An FFN of fixed width 24 (no d_ff argument) without biases."""

    def patch(self, model: T.Transformer) -> T.Transformer:
        for layer in [*model.encoder.layers, *model.decoder.layers]:
            layer.ffn.w_1 = nn.Linear(model.config.d_model, 24, bias=False)
            layer.ffn.w_2 = nn.Linear(24, model.config.d_model, bias=False)
        return model

    def layout(self, module: nn.Module) -> kit.Layout:
        return {n: e for n, e in super().layout(module).items()
                if not n.endswith((".ffn.b_1", ".ffn.b_2"))}


class HiddenFinalNorm(kit.Implementation):
    """A LayerNorm after each stack that the adapter does not expose."""

    SWAPS = {Encoder: corpus.FinalNorm.EncoderStack, Decoder: corpus.FinalNorm.DecoderStack}

    def patch(self, model: T.Transformer) -> T.Transformer:
        model.encoder.norm = nn.LayerNorm(model.config.d_model)
        model.decoder.norm = nn.LayerNorm(model.config.d_model)
        return model


class EncoderOnly(kit.Implementation):
    """The reference, declared encoder-only: the 5.4 clauses judge the parts that exist."""

    architecture = "encoder-only"


# -- broken dropout ------------------------------------------------------------------------------


class HeadOutputDropout(kit.Implementation):
    """Dropout on the concatenated heads, before W^O: neither on the weights nor in the FFN."""

    class Attention(kit.Attention):
        p = 0.0

        def output(self, t: Tensor) -> Tensor:
            return self.out_proj(F.dropout(t, self.p, self.training))

    SWAPS = {T.MultiHeadAttention: Attention}

    def patch(self, model: T.Transformer) -> T.Transformer:
        for _, _, attn in kit.attention_modules(model):
            attn.p = model.config.dropout
        return model


def _redrop(model: T.Transformer, kind: type[nn.Module], make: Any) -> T.Transformer:
    """``model`` with the dropout of every ``kind`` module replaced by ``make(p)``."""
    for sub in model.modules():
        if isinstance(sub, kind):
            sub.dropout = make(model.config.dropout)
    return model


def _twice(p: float) -> nn.Module:
    return nn.Sequential(nn.Dropout(p), nn.Dropout(p))


def _fixed(p: float) -> nn.Module:
    return nn.Dropout(0.1)


class DoubleResidualDropout(kit.Implementation):
    """Each sub-layer output is dropped twice: LayerNorm(x + Dropout(Dropout(Sublayer(x))))."""

    def patch(self, model: T.Transformer) -> T.Transformer:
        return _redrop(model, Residual, _twice)


class FixedResidualRate(kit.Implementation):
    """Residual dropout at a hard-coded rate of 0.1, whatever P_drop the configuration gives."""

    def patch(self, model: T.Transformer) -> T.Transformer:
        return _redrop(model, Residual, _fixed)


class DoubleEmbeddingDropout(kit.Implementation):
    """The embedding sums are dropped twice."""

    def patch(self, model: T.Transformer) -> T.Transformer:
        return _redrop(model, PositionalEncoding, _twice)


class FixedEmbeddingRate(kit.Implementation):
    """Embedding dropout at a hard-coded rate of 0.1."""

    def patch(self, model: T.Transformer) -> T.Transformer:
        return _redrop(model, PositionalEncoding, _fixed)


DROPOUT = "dropout"
CASES: list[tuple[type, str, dict[str, str]]] = [
    (spec.adapters.reference.ReferenceAdapter, DROPOUT, {
        "5.4/residual-dropout": "CONFORMS", "5.4/embedding-dropout": "CONFORMS",
        "5.4/dropout-elsewhere": "CONFORMS"}),
    (GatedFFN, "residual or elsewhere",
     {"5.4/residual-dropout": "CONFORMS", "5.4/dropout-elsewhere": "CONFORMS"}),
    (BiasFreeFixedWidth, "residual or elsewhere",
     {"5.4/residual-dropout": "CONFORMS", "5.4/dropout-elsewhere": "CONFORMS"}),
    (HiddenFinalNorm, "residual or elsewhere",
     {"5.4/residual-dropout": "CONFORMS", "5.4/dropout-elsewhere": "CONFORMS"}),
    (EncoderOnly, "dropout or eval", {
        "5.4/residual-dropout": "CONFORMS", "5.4/embedding-dropout": "CONFORMS",
        "5.4/dropout-elsewhere": "CONFORMS", "5.4/eval-deterministic": "CONFORMS"}),
    (corpus.AttentionDropout, "residual or elsewhere", {
        "5.4/residual-dropout": "CONFORMS",
        "5.4/dropout-elsewhere": "VARIANT attention-dropout"}),
    (corpus.FFNDropout, "residual or elsewhere", {
        "5.4/residual-dropout": "CONFORMS", "5.4/dropout-elsewhere": "VARIANT ffn-dropout"}),
    (HeadOutputDropout, "elsewhere", {"5.4/dropout-elsewhere": "DEVIATES"}),
    (DoubleResidualDropout, "residual or elsewhere", {
        "5.4/residual-dropout": "DEVIATES (double-dropout)",
        "5.4/dropout-elsewhere": "CONFORMS"}),
    (FixedResidualRate, "residual or elsewhere", {
        "5.4/residual-dropout": "DEVIATES (dropout-rate-ignored)",
        "5.4/dropout-elsewhere": "CONFORMS"}),
    (training.NoResidualDropout, "residual",
     {"5.4/residual-dropout": "DEVIATES (no-residual-dropout)"}),
    (DoubleEmbeddingDropout, "embedding",
     {"5.4/embedding-dropout": "DEVIATES (double-dropout)"}),
    (FixedEmbeddingRate, "embedding",
     {"5.4/embedding-dropout": "DEVIATES (dropout-rate-ignored)"}),
]


@pytest.mark.parametrize(("cls", "select", "expected"), CASES, ids=lambda c: getattr(c, "name", None))
def test_dropout_verdicts(pytester: pytest.Pytester, cls: type, select: str,
                          expected: dict[str, str]) -> None:
    """Differently cut implementations without dropout elsewhere conform (a gated FFN, an FFN
    of fixed width without biases, an unexposed final norm, no decoder); the named variants
    are named; dropout elsewhere that matches no variant's model deviates with no variant;
    dropout at the wrong rate deviates with the bug whose model matches."""
    clauses = run(pytester, cls, select)
    assert {cid: said(clauses[cid]) for cid in expected} == expected
    assert all(c["variant"] is None for c in clauses.values() if c["verdict"] == "DEVIATES")


class ScheduledFromZero(kit.Implementation):
    """The paper's Adam, returned with PyTorch's LambdaLR attached, whose rate at step 0 is 0:
    the optimizer states a learning rate of 0."""

    betas = (0.9, 0.98)

    def optimizer(self, params: Any) -> torch.optim.Optimizer:
        adam = torch.optim.Adam(params, lr=1.0, betas=self.betas, eps=1e-9)
        torch.optim.lr_scheduler.LambdaLR(adam, lambda step: step * 4000**-1.5)
        return adam


class ScheduledFromZeroBeta2(ScheduledFromZero):
    """The same, with PyTorch's default beta2 (0.999)."""

    betas = (0.9, 0.999)


def test_adam_is_judged_at_a_rate_that_moves(pytester: pytest.Pytester) -> None:
    """An optimizer whose stated rate is 0 would move nothing, and any betas would pass: it
    is judged at rate 1, which the report notes, and a wrong beta2 is caught."""
    adam = run(pytester, ScheduledFromZero, "test_adam")["5.3/adam"]
    assert said(adam) == "CONFORMS"
    assert "learning rate is 0" in adam["reason"] and "judged at rate 1" in adam["reason"]
    adam = run(pytester, ScheduledFromZeroBeta2, "test_adam")["5.3/adam"]
    assert said(adam) == "DEVIATES (adam-beta2-0.999)"


def test_a_probe_premise_that_fails_is_named(pytester: pytest.Pytester) -> None:
    """Dropout that stays on in evaluation mode leaves the dropout probes without their
    reference: 5.4/dropout-elsewhere is NOT PROVIDED, naming 5.4/eval-deterministic, and
    5.4/residual-dropout judges what it can (the P_drop = 1 part) and says what it did not."""
    clauses = run(pytester, training.DropoutInEval, "residual or elsewhere")
    elsewhere, residual = clauses["5.4/dropout-elsewhere"], clauses["5.4/residual-dropout"]
    assert elsewhere["verdict"] == "NOT PROVIDED"
    assert "5.4/eval-deterministic" in elsewhere["reason"]
    assert residual["verdict"] == "CONFORMS"
    assert "not checked" in residual["reason"] and "rate" in residual["reason"]


# -- losses ------------------------------------------------------------------------------------


def _smoothed(logits: Tensor, target: Tensor, pad_id: int, others: int) -> Tensor:
    """Targets: 0.9 on the true token, 0.1 / ``others`` on the other tokens, 0 at padding."""
    true = F.one_hot(target, logits.size(-1)).to(logits.dtype)
    q = 0.9 * true + 0.1 / others * (1 - true)
    return q * (target != pad_id).unsqueeze(-1)


class Loss(kit.Implementation):
    """Base: a loss of its own over the reference."""

    def loss(self, logits: Tensor, target: Tensor, pad_id: int) -> Tensor:
        raise NotImplementedError


class SpreadOverAll(Loss):
    """F.cross_entropy(label_smoothing=0.1): eps spread over all K tokens (Szegedy et al.)."""

    def loss(self, logits: Tensor, target: Tensor, pad_id: int) -> Tensor:
        return F.cross_entropy(logits.flatten(0, -2), target.flatten(), ignore_index=pad_id,
                               label_smoothing=0.1)


class SpreadOverOthers(Loss):
    """Cross-entropy against 0.9 / 0.1 over the K - 1 other tokens, averaged over real tokens."""

    def loss(self, logits: Tensor, target: Tensor, pad_id: int) -> Tensor:
        q = _smoothed(logits, target, pad_id, logits.size(-1) - 1)
        return -(q * logits.log_softmax(-1)).sum() / (target != pad_id).sum()


class KLBatchmeanRows(Loss):
    """KL with reduction='batchmean' over B x T rows: divided by every position, padding too."""

    def loss(self, logits: Tensor, target: Tensor, pad_id: int) -> Tensor:
        q = _smoothed(logits, target, pad_id, logits.size(-1) - 1)
        return F.kl_div(logits.log_softmax(-1).flatten(0, 1), q.flatten(0, 1),
                        reduction="batchmean")


class KLBatchmeanSentences(Loss):
    """KL with reduction='batchmean' over [B, T, V]: divided by the batch size."""

    def loss(self, logits: Tensor, target: Tensor, pad_id: int) -> Tensor:
        q = _smoothed(logits, target, pad_id, logits.size(-1) - 1)
        return F.kl_div(logits.log_softmax(-1), q, reduction="batchmean")


class ScaledLoss(Loss):
    """The summed cross-entropy divided by 7.5, a constant of no known meaning."""

    def loss(self, logits: Tensor, target: Tensor, pad_id: int) -> Tensor:
        q = _smoothed(logits, target, pad_id, logits.size(-1) - 1)
        return -(q * logits.log_softmax(-1)).sum() / 7.5


class PaddingMaskedToInf(Loss):
    """An additive -inf mask on the padding rows' logits: the loss and its gradient are NaN."""

    def loss(self, logits: Tensor, target: Tensor, pad_id: int) -> Tensor:
        pad = (target == pad_id).unsqueeze(-1)
        logp = (logits + torch.zeros_like(logits).masked_fill(pad, -math.inf)).log_softmax(-1)
        q = _smoothed(logits, target, pad_id, logits.size(-1) - 1)
        return -(q * logp).sum() / (~pad).sum()


class PaddingPenalty(Loss):
    """The reference loss plus a penalty on the padding positions' logits (no target model)."""

    def loss(self, logits: Tensor, target: Tensor, pad_id: int) -> Tensor:
        penalty = 1e-3 * logits[target == pad_id].square().sum()
        return T.LabelSmoothingLoss(logits.size(-1), pad_id, 0.1)(logits, target) + penalty


class PerSentenceMean(Loss):
    """Each sentence's mean over its tokens, averaged over the batch: no one normaliser."""

    def loss(self, logits: Tensor, target: Tensor, pad_id: int) -> Tensor:
        q = _smoothed(logits, target, pad_id, logits.size(-1) - 1)
        per_token = -(q * logits.log_softmax(-1)).sum(-1)
        return (per_token.sum(-1) / (target != pad_id).sum(-1)).mean()


class SummedNoSmoothing(Loss):
    """Plain cross-entropy, summed: no label smoothing, read off with N = 1."""

    def loss(self, logits: Tensor, target: Tensor, pad_id: int) -> Tensor:
        return F.cross_entropy(logits.flatten(0, -2), target.flatten(), ignore_index=pad_id,
                               reduction="sum")


LOSSES: list[tuple[type, str]] = [
    (SpreadOverAll, "CONFORMS"),
    (SpreadOverOthers, "CONFORMS"),
    (KLBatchmeanRows, "VARIANT kl-loss, mean-over-all-positions"),
    (KLBatchmeanSentences, "VARIANT kl-loss, mean-over-sentences"),
    (ScaledLoss, "VARIANT other-normaliser"),
    (corpus.AnnotatedTransformer, "VARIANT kl-loss, spread-excluding-true-and-pad, summed-loss"),
    (PaddingMaskedToInf, "DEVIATES"),
    (PaddingPenalty, "DEVIATES"),
    (PerSentenceMean, "DEVIATES"),
    (SummedNoSmoothing, "DEVIATES (no-label-smoothing)"),
    (training.PaddingInLoss, "DEVIATES (padding-in-loss)"),
]


@pytest.mark.parametrize(("cls", "expected"), LOSSES, ids=lambda c: getattr(c, "name", None))
def test_label_smoothing_verdicts(pytester: pytest.Pytester, cls: type, expected: str) -> None:
    """Both readings of the uniform spread conform; normalisers that keep the targets right
    are named variants; a NaN loss, a padding gradient of no known model and a per-sentence
    normaliser deviate without a diagnosis; a known bug read off with another normaliser is
    still named."""
    clauses = run(pytester, cls, "label_smoothing")
    assert said(clauses["5.4/label-smoothing"]) == expected


def test_a_loss_that_is_not_finite_says_so(pytester: pytest.Pytester) -> None:
    clauses = run(pytester, PaddingMaskedToInf, "label_smoothing")
    assert "the loss is not finite" in clauses["5.4/label-smoothing"]["reason"]


# -- the measuring helpers on synthetic data ----------------------------------------------------


def _factors(rows: list[list[float]]) -> Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def test_patterns_tell_dropout_sites_apart() -> None:
    """Entrywise 0 / K is dropout on the output; one varying factor per position is dropout
    inside the sub-layer; anything else is unexplained."""
    delta = D.factor_delta(tolerance("cpu", torch.float64))
    assert D.pattern_of(_factors([[0, 2, 2], [2, 0, 0]]), delta) == ("entrywise", 2.0)
    assert D.pattern_of(_factors([[1, 1, 1], [1, 1, 1]]), delta) == ("entrywise", 1.0)
    assert D.pattern_of(_factors([[0, 4 / 7, 4 / 7], [2, 2, 0]]), delta)[0] == "per-position"
    assert D.pattern_of(_factors([[0.3, 2, 1.7], [2, 0, 0]]), delta)[0] == "unexplained"


def test_the_lattice_of_attention_dropout() -> None:
    """Multiples of one unit >= 1/7 (at most 7 of them) are attention-weight dropout; other
    per-position factors are not."""
    c = torch.tensor([2 / 7, 8 / 7, 2.0, 10 / 7], dtype=torch.float64)
    assert D.lattice(c, 7, 1e-6) == pytest.approx(2 / 7)
    assert D.lattice(torch.tensor([0.93, 1.31, 0.4], dtype=torch.float64), 7, 1e-6) is None


def test_rates_have_a_binomial_margin() -> None:
    """A share within Z standard deviations and the scale 1 / (1 - p) fit p; at p = 0 any drop
    is too many; the scale must match."""
    delta = 1e-6
    assert D.Rate(0.32, 448, 1 / 0.7).fits(0.3, delta)
    assert not D.Rate(0.51, 448, 1 / 0.49).fits(0.3, delta)
    assert D.Rate(0.51, 448, 1 / 0.49).fits(0.51, delta)
    assert not D.Rate(1 / 448, 448, 1.0).fits(0.0, delta)
    assert not D.Rate(0.3, 448, 1.0).fits(0.3, delta)
    assert D.Rate(0.3, 448, None).fits(0.3, delta)


def test_the_readout_ignores_the_layer_norm_reading() -> None:
    """The sub-layer output read from post-norm outputs with any LayerNorm epsilon or variance,
    two norms deep, is the same up to a factor per position; a dropped feature outside the
    carried ones breaks the fit."""
    tol = tolerance("cpu", torch.float64)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 16, generator=g, dtype=torch.float64)
    s = torch.zeros(1, 3, 16, dtype=torch.float64)
    s[..., : D.CARRY] = 3 * torch.randn(1, 3, D.CARRY, generator=g, dtype=torch.float64)

    def norm(t: Tensor, eps: float, unbiased: bool) -> Tensor:
        return (t - t.mean(-1, keepdim=True)) / (t.var(-1, unbiased=unbiased, keepdim=True)
                                                 + eps).sqrt()

    plain, ok = D.read(norm(x + s, 1e-5, False), x, tol)
    other, ok2 = D.read(norm(norm(x + 2 * s, 1e-12, True), 1e-6, False), x, tol)
    assert ok and ok2
    torch.testing.assert_close(other / plain, torch.full_like(plain, 2.0))
    broken = norm(x + s, 1e-5, False)
    broken[..., -1] = 0
    assert not D.read(broken, x, tol)[1]


def test_the_normaliser_is_read_off_the_gradient() -> None:
    """Any positive N is found (the known ones exactly); a wrong target distribution has none."""
    tol = tolerance("cpu", torch.float64)
    g = torch.Generator().manual_seed(1)
    probs = torch.randn(5, 13, generator=g, dtype=torch.float64).softmax(-1)
    target = torch.randint(3, 13, (5,), generator=g)
    q = spec.oracle.smoothed_targets(target, 13, 0.1, 0, spread="all")
    for n in (5.0, 3.7):
        found = S._read_off(probs, (probs - q) / n, target, 0.1, (5.0, 1.0), tol)
        assert found is not None and found[0] == "all" and found[1] == pytest.approx(n)
    assert S._read_off(probs, (probs - q) / 2, target, 0.2, (5.0, 1.0), tol) is None
