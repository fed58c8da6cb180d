"""The 3.4 and 3.5 clause tests on implementations that cut the embeddings differently.

Each adapter below is the reference over a reference model with one change (as in the mutant
corpus, :mod:`tests.mutants.kit`), run through one suite module in-process: a positional table
computed or stored in float32 (correct, or wrong), one kept as a plain attribute that ``.to()``
leaves behind, a LayerNorm on the embedding sums (exposed, hidden, or over unscaled
embeddings), and a ``project`` that returns log-probabilities (declared or not, correct or
scaled). Correct code must conform (or be the named variant); each broken one must deviate
with its diagnosis, or with none where the suite has no bug model for it.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch._dynamo  # (imported lazily by torch; pytester must not unload it)
from torch import Tensor, nn

import spec.adapters.reference
import spec.oracle  # noqa: F401  (imported before pytester snapshots sys.modules)
import transformer as T
from tests.mutants import impl
from tests.mutants.kit import Implementation, Layout, copy_with
from tests.suite_run import bug, suite_report
from transformer.embeddings import Embedding, PositionalEncoding

pytest_plugins = ["pytester"]


# -- positional tables in float32 ------------------------------------------------------------


def sinusoids32(length: int, d_model: int, *, swap: bool = False) -> Tensor:
    """The sinusoids computed in float32 throughout, as ``torch.arange(...)`` code does by
    default (``swap``: cos on the even columns, sin on the odd ones: a wrong table)."""
    pos = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    angle = pos / 10000.0 ** (torch.arange(0, d_model, 2, dtype=torch.float32) / d_model)
    even, odd = (torch.cos, torch.sin) if swap else (torch.sin, torch.cos)
    pe = torch.empty(length, d_model)
    pe[:, 0::2], pe[:, 1::2] = even(angle), odd(angle)
    return pe


class Float32Table(Implementation):
    """The positional table is computed in float32 and kept in a buffer (``.to()`` casts it)."""

    SWAP = False

    def positional_encoding(self, length: int, d_model: int) -> Tensor:
        return sinusoids32(length, d_model, swap=self.SWAP)

    def patch(self, model: T.Transformer) -> T.Transformer:
        model.positions.pe = self.positional_encoding(model.config.max_len, model.config.d_model)
        return model


class Float32Swapped(Float32Table):
    """A float32 buffer table with sin and cos swapped."""

    SWAP = True


class UncastPositions(PositionalEncoding):
    """Adds the table as it is, without casting it to the embeddings' dtype."""

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        return self.dropout(x + self.pe[offset : offset + x.size(1)])


class PlainTable(Implementation):
    """The positional table is a plain float32 attribute, not a buffer: ``.to()`` leaves it."""

    DTYPE = torch.float32
    SWAPS = {PositionalEncoding: UncastPositions}  # noqa: RUF012

    def patch(self, model: T.Transformer) -> T.Transformer:
        table = model.positions.pe.to(self.DTYPE)
        del model.positions.pe  # the buffer
        model.positions.pe = table
        return model


class PlainFloat64Table(PlainTable):
    """The positional table is a plain float64 attribute: a float32 model adds it in float64."""

    DTYPE = torch.float64


# -- a LayerNorm on the embeddings -------------------------------------------------------------


class EmbeddingNorm(Implementation):
    """LayerNorm(sqrt(d_model) E + PE) on both stacks (eps 1e-6), gain and bias exposed."""

    EPS = 1e-6
    EXPOSED = True

    def patch(self, model: T.Transformer) -> T.Transformer:
        for which in ("src", "tgt"):
            setattr(model, f"{which}_embedding_norm", nn.LayerNorm(model.config.d_model,
                                                                   eps=self.EPS))
        return model

    def layout(self, module: nn.Module) -> Layout:
        out = super().layout(module)
        if self.EXPOSED and isinstance(module, T.Transformer):
            for which in ("src", "tgt"):
                for leaf, attr in (("gamma", "weight"), ("beta", "bias")):
                    out[f"{which}_embedding_norm.{leaf}"] = (
                        f"{which}_embedding_norm.{attr}", _same, copy_with(_same))
        return out

    def embed_source(self, model: T.Transformer, src: Tensor) -> Tensor:
        return model.src_embedding_norm(model.positions(model.src_embed(src)))

    def embed_target(self, model: T.Transformer, tgt: Tensor) -> Tensor:
        return model.tgt_embedding_norm(model.positions(model.tgt_embed(tgt)))


def _same(t: Tensor) -> Tensor:
    return t


class BertEmbeddingNorm(EmbeddingNorm):
    """LayerNorm(sqrt(d_model) E + PE) with BERT's epsilon 1e-12, gain and bias exposed."""

    EPS = 1e-12


class HiddenEmbeddingNorm(EmbeddingNorm):
    """A LayerNorm on the embedding sums that the adapter does not expose."""

    EXPOSED = False


class UnscaledEmbedding(Embedding):
    def forward(self, tokens: Tensor) -> Tensor:
        return torch.nn.functional.embedding(tokens, self.weight)


class EmbeddingNormNoScale(EmbeddingNorm):
    """An exposed LayerNorm over embeddings that are not multiplied by sqrt(d_model)."""

    SWAPS = {Embedding: UnscaledEmbedding}  # noqa: RUF012


# -- project returns log-probabilities ---------------------------------------------------------


class LogProbs(Implementation):
    """``project`` returns log-probabilities, and the adapter says so."""

    outputs: str | None = "log-probs"
    SCALE = 1.0

    def project(self, model: T.Transformer, y: Tensor) -> Tensor:
        return (model.generator(y) * self.SCALE).log_softmax(-1)


class LogProbsUndeclared(LogProbs):
    """``project`` returns log-probabilities, and the adapter does not say so."""

    outputs = None


class ScaledLogProbs(LogProbs):
    """Declared log-probabilities of logits multiplied by sqrt(d_model) (pre-softmax-scale)."""

    SCALE = 4.0  # sqrt(16)


class LogitsDeclaredLogProbs(Implementation):
    """The adapter declares log-probabilities, but ``project`` returns the logits."""

    outputs = "log-probs"


# -- running the suite -------------------------------------------------------------------------

Report = dict[str, dict[str, Any]]


def run(pytester: pytest.Pytester, cls: type[Implementation], modules: list[str],
        select: str = "") -> Report:
    """The report on ``cls`` of ``spec.suite.<module>`` for each of ``modules`` (only the tests
    that ``-k select`` selects), clause id -> clause entry."""
    return suite_report(pytester, impl(cls), [f"spec.suite.{m}" for m in modules],
                        *(["-k", select] if select else []))


POSITIONAL, EMBEDDINGS = "test_3_5_positional", "test_3_4_embeddings"
BOTH = [EMBEDDINGS, POSITIONAL]
EMBEDDING_TESTS = "not wavelengths and not relative_linear and not formula"
"""The tests that embed tokens or project (the table-only 3.5 tests are not about these)."""


def verdicts(report: Report, *clauses: str) -> dict[str, tuple[str, str | None]]:
    """(verdict, diagnosed bug) of each of ``clauses``."""
    return {cid: (report[cid]["verdict"], bug(report[cid])) for cid in clauses}


# -- 1. tables in float32 -----------------------------------------------------------------


def test_a_float32_table_is_judged_at_float32_tolerance(pytester: pytest.Pytester) -> None:
    """A correct table computed in float32 (in a buffer, so the float64 model adds it rounded
    to float32) conforms in both runs, and the report says at which precision it was judged;
    3.5/formula agrees on the same table."""
    report = run(pytester, Float32Table, [POSITIONAL], "formula or added")
    assert verdicts(report, "3.5/formula", "3.5/added") == {
        "3.5/formula": ("CONFORMS", None), "3.5/added": ("CONFORMS", None)}
    assert ("the positional table is float32: its part of the sum is judged at the float32 "
            "tolerance") in report["3.5/added"]["reason"]
    assert ("the table comes in float32: judged at that dtype's tolerance"
            in report["3.5/formula"]["reason"])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_wrong_float32_table_deviates_with_its_diagnosis(
    pytester: pytest.Pytester, dtype: str
) -> None:
    """A float32 table with sin and cos swapped deviates on 3.5/added with the diagnosis in
    each run on its own (the float64 run's, which comes first, is the one a report keeps)."""
    report = run(pytester, Float32Swapped, [POSITIONAL], f"added and cpu-{dtype}")
    assert verdicts(report, "3.5/added") == {"3.5/added": ("DEVIATES", "sin-cos-swapped")}


def test_float32_added_tells_a_float32_table_from_a_float64_one() -> None:
    """The premise of the float32 tolerance: what the model adds to sqrt(d_model) E[ids] is
    float32 numbers (for a table rounded or computed in float32), not for the float64 table."""
    from spec import oracle
    from spec.suite.test_3_5_positional import _float32_added

    E = torch.randn(13, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ids = torch.randint(0, 13, (2, 11), generator=torch.Generator().manual_seed(1))
    exact = oracle.positional_encoding(11, 16)
    for table, float32 in ((exact, False), (exact.float(), True), (sinusoids32(11, 16), True)):
        added = _float32_added(oracle.embed(ids, E, positions=table.double()), ids, E)
        assert (added is not None) == float32
        if float32:
            assert torch.allclose(added, table.double().expand_as(added), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("cls", "dtype", "verdict"),
    [(PlainTable, "float64", "DEVIATES"), (PlainFloat64Table, "float32", "DEVIATES"),
     (PlainTable, "float32", "CONFORMS")],
    ids=["float32-table-float64-model", "float64-table-float32-model", "same-dtype"],
)
def test_a_table_that_does_not_follow_to_is_named(
    pytester: pytest.Pytester, cls: type[Implementation], dtype: str, verdict: str
) -> None:
    """A table kept as a plain attribute stays in its dtype when the model is cast: the float64
    model adds a float32 table (not judged at float32 tolerance: it is the bug), or the float32
    model's embeddings come out in float64. Either deviates naming it; where the dtypes agree
    nothing shows, and nothing deviates."""
    report = run(pytester, cls, [POSITIONAL], f"added and cpu-{dtype}")
    entry = report["3.5/added"]
    assert entry["verdict"] == verdict, entry
    if verdict == "DEVIATES":
        assert bug(entry) == "positions-not-buffer"
        assert "the positional table does not follow .to()" in entry["reason"]
        assert "positions.pe is a plain attribute" in entry["reason"]


# -- 3. a LayerNorm on the embeddings -------------------------------------------------------


@pytest.mark.parametrize(("cls", "eps"), [(EmbeddingNorm, "1e-06"), (BertEmbeddingNorm, "1e-12")])
def test_an_exposed_embedding_norm_is_a_variant(
    pytester: pytest.Pytester, cls: type[EmbeddingNorm], eps: str
) -> None:
    """LN(sqrt(d_model) E + PE) with its gain and bias exposed is variant embedding-norm of
    3.5/added (the epsilon named), and the other clauses about the embeddings conform."""
    report = run(pytester, cls, BOTH, EMBEDDING_TESTS)
    added = report["3.5/added"]
    assert (added["verdict"], added["variant"]) == ("VARIANT", "embedding-norm")
    assert f"eps {eps}" in added["reason"]
    others = ("3.4/learned-embeddings", "3.4/scale", "3.4/weight-tying", "3.4/output-softmax",
              "3.5/extrapolation")
    assert {cid: report[cid]["verdict"] for cid in others} == dict.fromkeys(others, "CONFORMS")


def test_a_hidden_embedding_norm_deviates_without_a_diagnosis(pytester: pytest.Pytester) -> None:
    """A LayerNorm the adapter does not expose is not the paper's sum, and the suite has no bug
    model for it: cause unknown."""
    report = run(pytester, HiddenEmbeddingNorm, [POSITIONAL], "added")
    assert verdicts(report, "3.5/added") == {"3.5/added": ("DEVIATES", None)}


def test_a_norm_over_unscaled_embeddings_is_diagnosed(pytester: pytest.Pytester) -> None:
    """LN(E + PE): the missing sqrt(d_model) is named under the norm too, by 3.5/added and
    3.4/scale; 3.4/learned-embeddings (any scale) conforms."""
    report = run(pytester, EmbeddingNormNoScale, BOTH, "added or scale or learned")
    assert verdicts(report, "3.5/added", "3.4/scale", "3.4/learned-embeddings") == {
        "3.5/added": ("DEVIATES", "no-embedding-scale"),
        "3.4/scale": ("DEVIATES", "no-embedding-scale"),
        "3.4/learned-embeddings": ("CONFORMS", None),
    }


# -- 4. project returns log-probabilities ---------------------------------------------------

PROJECT = ("3.4/scale", "3.4/weight-tying", "3.4/output-softmax")


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (LogProbs, {cid: ("CONFORMS", None) for cid in PROJECT}),
        (LogProbsUndeclared, {"3.4/scale": ("DEVIATES", None),
                              "3.4/weight-tying": ("DEVIATES", None),
                              "3.4/output-softmax": ("CONFORMS", None)}),
        (ScaledLogProbs, {"3.4/scale": ("DEVIATES", "pre-softmax-scale"),
                          "3.4/weight-tying": ("CONFORMS", None),
                          "3.4/output-softmax": ("DEVIATES", "pre-softmax-scale")}),
        (LogitsDeclaredLogProbs, {cid: ("DEVIATES", None) for cid in PROJECT}),
    ],
    ids=["declared", "undeclared", "scaled", "logits-declared-log-probs"],
)
def test_log_probabilities_are_judged_as_declared(
    pytester: pytest.Pytester, cls: type[Implementation], expected: dict[str, Any]
) -> None:
    """``outputs = "log-probs"`` makes ``project`` compare after a log-softmax: declared and
    right conforms, a sqrt(d_model) on the logits is still named, and an adapter that returns
    log-probabilities without saying so (or declares them and returns logits) deviates."""
    report = run(pytester, cls, [EMBEDDINGS], "scale or tying or softmax")
    assert verdicts(report, *PROJECT) == expected
    if cls is LogitsDeclaredLogProbs:
        assert "declares log-probabilities" in report["3.4/output-softmax"]["reason"]
