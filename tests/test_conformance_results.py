"""The results that must hold: the reference conforms everywhere; torch.nn gets true verdicts."""

from __future__ import annotations

import json

import pytest
import torch
import torch._dynamo  # imported lazily by torch; pytester must not unload it

import spec.adapters.reference
import spec.adapters.torch_nn
import spec.oracle
from spec.clauses import CLAUSES
from tests import docs_data

pytest_plugins = ["pytester"]

# What PyTorch's nn.Transformer / nn.MultiheadAttention are, clause by clause (see the module
# docstring of spec.adapters.torch_nn for the reasons): (verdict, variant names).
TORCH_NN = {
    "3.1/no-final-norm": ("VARIANT", "final-norm"),
    "3.2.2/eq": ("VARIANT", "projection-biases"),
    "3.2.2/head-dims": ("VARIANT", "projection-biases"),
    "5.4/dropout-elsewhere": ("VARIANT", "attention-dropout, ffn-dropout"),
    **{
        cid: ("NOT PROVIDED", None)
        for cid in (
            "3.1/shifted-right",
            "3.4/learned-embeddings",
            "3.4/scale",
            "3.4/weight-tying",
            "3.4/output-softmax",
            "3.5/formula",
            "3.5/added",
            "3.5/wavelengths",
            "3.5/relative-linear",
            "3.5/extrapolation",
            "5.3/adam",
            "5.3/eq3",
            "5.4/embedding-dropout",
            "5.4/label-smoothing",
            "6.1/beam-search",
            "table3/param-formula",
            "practice/incremental-decoding",
            "practice/gradients",
            "practice/trainable",
        )
    },
}


def global_state() -> dict[str, object]:
    """What the suite must leave as it found it."""
    return {
        "default dtype": torch.get_default_dtype(),
        "grad mode": torch.is_grad_enabled(),
        "deterministic algorithms": torch.are_deterministic_algorithms_enabled(),
        "threads": torch.get_num_threads(),
        "cpu rng": torch.get_rng_state(),
    }


def run_suite(pytester: pytest.Pytester, impl: str) -> dict[str, dict[str, object]]:
    torch.manual_seed(1234)
    before = global_state()
    out = pytester.path / "report.json"
    result = pytester.runpytest_inprocess(
        "--pyargs", "spec.suite", "-p", "no:cacheprovider", "--impl", impl,
        "--conformance-json", str(out),
    )  # fmt: skip
    assert result.ret == 0, result.stdout.str()[-3000:]
    after = global_state()
    same = {
        k: torch.equal(v, after[k]) if torch.is_tensor(v) else v == after[k]
        for k, v in before.items()
    }
    changed = [k for k, unchanged in same.items() if not unchanged]
    assert not changed, f"the suite changed global state: {changed}"
    docs_data.keep_report(impl, out)
    report = json.loads(out.read_text())
    return {c["id"]: c for c in report["clauses"]}


@pytest.mark.slow
def test_reference_conforms_to_every_clause(pytester: pytest.Pytester) -> None:
    clauses = run_suite(pytester, "reference")
    assert list(clauses) == list(CLAUSES)
    not_conforming = {
        cid: (c["verdict"], c["reason"]) for cid, c in clauses.items() if c["verdict"] != "CONFORMS"
    }
    assert not not_conforming


@pytest.mark.slow
def test_torch_nn_verdicts_are_true_of_pytorch(pytester: pytest.Pytester) -> None:
    clauses = run_suite(pytester, "torch.nn")
    assert list(clauses) == list(CLAUSES)
    observed = {cid: (c["verdict"], c["variant"]) for cid, c in clauses.items()}
    expected = {cid: TORCH_NN.get(cid, ("CONFORMS", None)) for cid in CLAUSES}
    assert observed == expected
    for cid, c in clauses.items():  # every verdict other than CONFORMS says why
        assert c["verdict"] == "CONFORMS" or c["reason"], cid
    final_norm = str(clauses["3.1/no-final-norm"]["reason"])  # both of nn.Transformer's norms
    assert "(encoder.norm) follows the encoder" in final_norm, final_norm
    assert "(decoder.norm) follows the decoder" in final_norm, final_norm
    dropout = str(clauses["5.4/dropout-elsewhere"]["reason"])  # where its number comes from
    assert "of one of the 7 equal attention weights of a query" in dropout, dropout
    reasons = spec.adapters.torch_nn.TorchNNAdapter.not_provided
    assert reasons["embed_source"] in str(clauses["3.4/scale"]["reason"])
