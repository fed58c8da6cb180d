# ruff: noqa: RUF012
# (RUF012: the SWAPS tables are class-level constants, never mutated)
"""The practice clause tests (spec/suite/test_practice.py) judge what they claim: training is
judged on what the model learns, whatever its loss; a row of an embedding that a lookup freezes
is found, tied or not; cached decoding is checked at the token level and per step, by whichever
of its three parts an adapter provides. Each check can fail, and code cut differently from the
reference passes.

Each implementation here is the reference adapter with one change (:mod:`tests.mutants.kit`),
run through the clause tests in-process.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
import torch
import torch._dynamo  # imported lazily by torch; pytester must not unload it
import torch.nn.functional as F
from torch import Tensor, nn

import spec.adapters.reference
import spec.oracle
import tests.mutants.variants as corpus
import transformer as T
from spec.check import Check
from spec.clauses import CLAUSES
from spec.suite import helpers as H
from spec.suite import test_practice as S
from spec.suite.helpers import gradients
from tests.mutants import kit, training
from tests.suite_run import said, suite_report
from transformer.embeddings import Embedding

pytest_plugins = ["pytester"]


def run(pytester: pytest.Pytester, cls: type, select: str) -> dict[str, dict[str, Any]]:
    """The report on ``cls`` of the practice tests whose names match ``select`` (``-k``)."""
    return suite_report(pytester, f"{cls.__module__}:{cls.__qualname__}",
                        ["spec.suite.test_practice"], "-k", select)


# -- practice/trainable: losses cut differently, and a model that cannot learn ---------------------


class SummedCrossEntropy(kit.Implementation):
    """Plain cross-entropy summed over the tokens: no label smoothing, no mean."""

    def loss(self, logits: Tensor, target: Tensor, pad_id: int) -> Tensor:
        return F.cross_entropy(logits.flatten(0, -2), target.flatten(), ignore_index=pad_id,
                               reduction="sum")


class KLDivergence(kit.Implementation):
    """KL(q || p) to the label-smoothed targets, per sentence: its floor is 0, not their entropy."""

    def loss(self, logits: Tensor, target: Tensor, pad_id: int) -> Tensor:
        v = logits.size(-1)
        q = torch.full_like(logits, 0.1 / (v - 2)).scatter(-1, target.unsqueeze(-1), 0.9)
        q = (q.index_fill(-1, torch.tensor([pad_id], device=q.device), 0.0)
             * (target != pad_id).unsqueeze(-1))
        return F.kl_div(logits.log_softmax(-1), q, reduction="sum") / target.size(0)


class LogProbs(kit.Implementation):
    """``project`` returns log-probabilities (declared), and the loss is their NLL."""

    outputs = "log-probs"

    def project(self, model: T.Transformer, y: Tensor) -> Tensor:
        return model.generator(y).log_softmax(-1)

    def loss(self, logits: Tensor, target: Tensor, pad_id: int) -> Tensor:
        return F.nll_loss(logits.flatten(0, -2), target.flatten(), ignore_index=pad_id)


class OptimizerOnCopies(kit.Implementation):
    """The optimizer is given copies of the parameters: the model itself never changes."""

    def optimizer(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        copies = [nn.Parameter(p.detach().clone()) for p in params]
        return torch.optim.Adam(copies, lr=1e-3, betas=(0.9, 0.98), eps=1e-9)


class EncoderOnly(kit.Implementation):
    """The reference's encoder and tied projection alone, declared encoder-only."""

    architecture = "encoder-only"


TRAINABLE = [
    (SummedCrossEntropy, "CONFORMS"),
    (KLDivergence, "CONFORMS"),
    (LogProbs, "CONFORMS"),
    (EncoderOnly, "CONFORMS"),
    (OptimizerOnCopies, "DEVIATES"),
]


@pytest.mark.parametrize(("cls", "expected"), TRAINABLE, ids=lambda c: getattr(c, "name", None))
def test_trainable_verdicts(pytester: pytest.Pytester, cls: type, expected: str) -> None:
    """A summed plain cross-entropy, a KL loss (floor 0) and log-probability outputs train and
    conform, as does an encoder-only model (on reversing); a model the optimizer never
    changes deviates, without a diagnosis. The report gives the criterion and the values."""
    entry = run(pytester, cls, "trainable")["practice/trainable"]
    assert said(entry) == expected
    assert "at least 80% asked" in entry["reason"] and "untrained" in entry["reason"]
    if expected == "DEVIATES":
        assert entry["reason"].startswith("the model does not learn")


def test_a_task_solved_untrained_is_a_failed_premise(pytester: pytest.Pytester) -> None:
    """A decoder fed the target itself (not shifted right) predicts it before any training: the
    clause names the premise that fails instead of judging learning."""
    entry = run(pytester, training.NotShifted, "trainable")["practice/trainable"]
    assert entry["verdict"] == "DEVIATES" and entry["reason"].startswith("premise failed")


# -- practice/gradients: embedding rows that a lookup freezes ---------------------------------------


class PaddingIdxZero(kit.Implementation):
    """The embedding hard-codes ``padding_idx=0``, whatever the configured padding id."""

    class Lookup(Embedding):
        def forward(self, tokens: Tensor) -> Tensor:
            return F.embedding(tokens, self.weight, padding_idx=0) * self.scale

    SWAPS = {Embedding: Lookup}


class UntiedPaddingIdxZero(PaddingIdxZero):
    """``padding_idx=0`` hard-coded, with three separate matrices (untied)."""

    def patch(self, model: T.Transformer) -> nn.Module:
        return self.swapped(corpus.UntiedEmbeddings.patch(self, model))  # type: ignore[arg-type]


class PaddingIdxConfigured(kit.Implementation):
    """The embedding freezes the configured padding id's row (``padding_idx=config.pad_id``)."""

    class Lookup(Embedding):
        pad_id = 0

        def forward(self, tokens: Tensor) -> Tensor:
            return F.embedding(tokens, self.weight, padding_idx=self.pad_id) * self.scale

    SWAPS = {Embedding: Lookup}

    def patch(self, model: T.Transformer) -> T.Transformer:
        for module in (model.src_embed, model.tgt_embed):
            module.pad_id = model.config.pad_id  # type: ignore[assignment]
        return model


class NoEmbeddingNames(kit.Implementation):
    """The adapter exposes no embedding matrices (nor the projection) under canonical names."""

    def layout(self, module: nn.Module) -> kit.Layout:
        hidden = ("src_embedding", "tgt_embedding", "generator.W")
        return {n: e for n, e in super().layout(module).items() if n not in hidden}


def test_a_hard_coded_padding_id_freezes_a_tied_row(pytester: pytest.Pytester) -> None:
    """``padding_idx=0`` with the configured padding id 3: the lookups of token 0 send nothing
    to its row, which the pre-softmax use of the shared matrix alone would hide. The message
    names the padding id, the method and the token; one real token frozen is the model of
    ``padding-id-hard-coded``."""
    entry = run(pytester, PaddingIdxZero, "gradients")["practice/gradients"]
    assert said(entry) == "DEVIATES (padding-id-hard-coded)"
    assert entry["reason"].startswith("with padding id 3, embed_source passes no gradient")
    assert "src_embedding rows (token ids) [0]" in entry["reason"]


def test_an_untied_frozen_row_shows_in_the_loss_gradient(pytester: pytest.Pytester) -> None:
    """Untied, the training loss itself sends nothing to the frozen rows of both embeddings."""
    entry = run(pytester, UntiedPaddingIdxZero, "gradients")["practice/gradients"]
    assert said(entry) == "DEVIATES (padding-id-hard-coded)"
    assert entry["reason"].startswith("with padding id 3, the loss sends no gradient")
    assert "src_embedding rows (token ids) [0]; tgt_embedding rows (token ids) [0]" in (
        entry["reason"])


@pytest.mark.parametrize("cls", [PaddingIdxConfigured, NoEmbeddingNames],
                         ids=lambda c: c.name)
def test_gradients_that_reach_every_real_row_conform(pytester: pytest.Pytester,
                                                     cls: type) -> None:
    """Freezing the configured padding id's row is right; an adapter without canonical
    embeddings is judged on whole parameters."""
    entry = run(pytester, cls, "gradients")["practice/gradients"]
    assert said(entry) == "CONFORMS", entry["reason"]


def test_frozen_rows_are_read_in_the_canonical_layout() -> None:
    """Rows of an embedding, columns of ``generator.W``; only ids the batch uses; names the
    adapter does not expose are skipped."""
    grads = {"src_embedding": torch.ones(5, 2), "generator.W": torch.ones(2, 5)}
    grads["src_embedding"][3] = 0
    grads["generator.W"][:, 1] = 0
    used = {"src_embedding": torch.tensor([3, 4, 3]), "generator.W": torch.tensor([0, 1]),
            "tgt_embedding": torch.tensor([0])}
    assert gradients.frozen_rows(grads, used) == {"src_embedding": [3], "generator.W": [1]}
    assert gradients.frozen_rows(grads, {"src_embedding": torch.tensor([4])}) == {}


# -- practice/incremental-decoding: three parts, each on its own ------------------------------------


class _IncrementalLogits(kit.Implementation):
    """``incremental_logits`` with the reference's own cache: one target token at a time."""

    def incremental_logits(self, model: T.Transformer, src: Tensor, src_mask: Tensor,
                           tgt_in: Tensor) -> Tensor:
        mask = src_mask.unsqueeze(1)
        memory, state = model.encode(src, mask), model.new_state()
        steps = [model.generator(model.decode(tgt_in[:, t : t + 1], memory, mask, state))
                 for t in range(tgt_in.size(1))]
        return torch.cat(steps, 1)


class IncrementalLogits(_IncrementalLogits):
    """The reference with ``incremental_logits`` (its cache, positions from the cache length)."""


class IncrementalLogitsOnly(_IncrementalLogits):
    """``incremental_logits`` is the only cached decoding the adapter exposes."""

    decode_incremental = None
    greedy = None


class PositionZeroLogits(_IncrementalLogits):
    """``incremental_logits`` and greedy embed every cached token at position 0."""

    SWAPS = training.PositionsRestartWithCache.SWAPS


class CacheNotReadLogits(_IncrementalLogits):
    """The cache is never read, and only ``incremental_logits`` shows it."""

    SWAPS = training.CacheNotRead.SWAPS
    decode_incremental = None
    greedy = None


class GreedyOnly(kit.Implementation):
    """Greedy decoding with the cache is the only cached decoding the adapter exposes."""

    decode_incremental = None


class PositionZeroGreedyOnly(GreedyOnly):
    """Greedy decoding, the only one exposed, embeds every cached token at position 0."""

    SWAPS = training.PositionsRestartWithCache.SWAPS


class ForwardOnly(_IncrementalLogits):
    """The whole model only through ``forward``: no embed, encode, decode or project."""

    embed_source = embed_target = encode = decode = project = None

    def forward(self, model: T.Transformer, src: Tensor, tgt_in: Tensor,
                src_mask: Tensor) -> Tensor:
        return model(src, tgt_in, src_mask.unsqueeze(1))


class PositionZeroForwardOnly(ForwardOnly):
    """Only ``forward``, and the cached steps embed every token at position 0."""

    SWAPS = training.PositionsRestartWithCache.SWAPS


class NoCachedDecoding(kit.Implementation):
    """No ``decode_incremental``, no ``incremental_logits``, no ``greedy``."""

    decode_incremental = None
    greedy = None


INCREMENTAL = [
    (IncrementalLogits, "CONFORMS", ""),
    (IncrementalLogitsOnly, "CONFORMS", "not checked: decode_incremental"),
    (GreedyOnly, "CONFORMS", "not checked: decode_incremental"),
    (PositionZeroLogits, "DEVIATES", "incremental_logits (one token at a time"),
    (PositionZeroGreedyOnly, "DEVIATES", "greedy decoding of sequence"),
    (CacheNotReadLogits, "DEVIATES (cache-ignored)", "incremental_logits (one token at a time"),
    (ForwardOnly, "CONFORMS", "not checked: decode_incremental"),
    (PositionZeroForwardOnly, "DEVIATES", "incremental_logits (one token at a time"),
    (NoCachedDecoding, "NOT PROVIDED", "`practice/incremental-decoding`: decode_incremental"),
]


@pytest.mark.parametrize(("cls", "expected", "reason"), INCREMENTAL,
                         ids=lambda c: getattr(c, "name", None))
def test_incremental_decoding_verdicts(pytester: pytest.Pytester, cls: type, expected: str,
                                       reason: str) -> None:
    """Each part judges on its own: a correct cached decoder conforms through whichever part
    it exposes (saying which it did not); the newest token at position 0 deviates through
    ``incremental_logits`` (cause unknown) and through ``greedy`` alone; a cache never read is
    named through ``incremental_logits``; with no part at all the clause is NOT PROVIDED. An
    adapter with ``forward`` only is judged against it."""
    entry = run(pytester, cls, "incremental")["practice/incremental-decoding"]
    assert said(entry) == expected
    assert entry["reason"].startswith(reason)
    if cls is NoCachedDecoding:
        assert all(p in entry["reason"] for p in ("incremental_logits", "greedy ("))


class OneTokenGreedy(kit.Implementation):
    """Greedy decoding only, on a model whose pre-softmax map favours token 5 by far."""

    decode_incremental = None

    class Generator(nn.Linear):
        def forward(self, x: Tensor) -> Tensor:
            return super().forward(x) + 100.0 * F.one_hot(torch.tensor(5), self.out_features)

    def patch(self, model: T.Transformer) -> T.Transformer:
        kit.retype([model.generator], self.Generator)
        return model


def test_greedy_output_that_never_changes_is_a_failed_premise(pytester: pytest.Pytester) -> None:
    """Greedy output that repeats one token on every random model cannot show a position or
    cache bug: the greedy part says that its premise failed, and is not counted as checked."""
    entry = run(pytester, OneTokenGreedy, "incremental")["practice/incremental-decoding"]
    assert entry["verdict"] == "NOT PROVIDED"
    assert "greedy (`greedy`: premise failed" in entry["reason"]


def test_greedy_changes_count_what_positions_and_cache_decide() -> None:
    """Token changes after the first generated token count; the first change follows the
    start symbol, and a row that settles on one token counts nothing."""
    case = S._Greedy(nn.Identity(), torch.zeros(1), torch.zeros(1),
                     [[5, 11, 11, 11], [4, 4, 7, 4], [3]], [True, True, True])
    assert case.changes == 2


class ListsParametersBackwards(kit.Implementation):
    """The reference, with its canonical parameters listed in reverse order."""

    def parameters(self, module: nn.Module) -> dict[str, Tensor]:
        return dict(reversed(super().parameters(module).items()))


def test_weights_are_drawn_whatever_order_the_adapter_lists_them_in() -> None:
    """Given one generator, an adapter that lists its parameters in another order gets the same
    random weights, so that the seeds chosen for the greedy and beam-search checks give every
    implementation of one function the same model."""
    env = H.cpu_float64()
    drawn = []
    for adapter in (spec.adapters.reference.adapter, ListsParametersBackwards()):
        clause = Check(CLAUSES["practice/incremental-decoding"], adapter, "pytest x")
        _, params = H.build(clause, env, torch.Generator().manual_seed(S.GREEDY_SEED))
        drawn.append(params)
    assert list(drawn[1]) == list(reversed(drawn[0]))  # the order is the adapter's
    assert drawn[0].keys() == drawn[1].keys()
    assert all(torch.equal(drawn[0][n], drawn[1][n]) for n in drawn[0])
