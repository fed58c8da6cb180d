"""Protocol version 2: declarations and sub-checks judged on their own.

An implementation that is only part of the paper's model (encoder-only, self-attention only)
is judged on what it has: a clause is NOT PROVIDED only when none of its sub-checks can run,
and otherwise says what it did not check. Run in-process on the reference adapter with one
declaration or one refusal added.
"""

from __future__ import annotations

import re

import pytest
import torch
import torch._dynamo
from torch import Tensor, nn

import spec.oracle  # noqa: F401  (imported before pytester snapshots sys.modules)
from spec.adapter import AdapterError, NotProvided, capability, declared
from spec.adapters.reference import ReferenceAdapter
from spec.suite.helpers import aliases
from spec.verdicts import Outcome, Verdict, combine
from tests.suite_run import Report, suite_report

pytest_plugins = ["pytester"]


class SelfAttentionOnly(ReferenceAdapter):
    """A multi-head module that refuses a memory (it only does self-attention)."""

    name = "self-attention-only"

    def multi_head_forward(
        self, module: nn.Module, x: Tensor, memory: Tensor | None, mask: Tensor | None
    ) -> Tensor:
        if memory is not None:
            raise NotProvided("multi_head_forward", "the module only does self-attention")
        return super().multi_head_forward(module, x, memory, mask)


class EncoderOnly(ReferenceAdapter):
    """The reference's encoder, declared as an encoder-only implementation."""

    name = "encoder-only"
    architecture = "encoder-only"


def report(pytester: pytest.Pytester, impl: str, *modules: str) -> Report:
    return suite_report(pytester, impl, list(modules))


def test_a_self_attention_only_module_is_judged_on_self_attention(pytester) -> None:
    clauses = report(pytester, f"{__name__}:SelfAttentionOnly", "spec.suite.test_3_2_2_multi_head")
    eq = clauses["3.2.2/eq"]
    assert eq["verdict"] == "CONFORMS", eq
    assert eq["reason"] == ("not checked: cross-attention (`multi_head_forward`: the module only "
                            "does self-attention)")


def test_an_encoder_only_model_is_judged_on_its_encoder(pytester) -> None:
    clauses = report(pytester, f"{__name__}:EncoderOnly", "spec.suite.test_3_3_ffn",
                     "spec.suite.test_3_1_stacks")
    for cid in ("3.3/dims", "3.1/encoder-stack", "3.1/residual-norm", "3.1/no-final-norm"):
        assert clauses[cid]["verdict"] == "CONFORMS", clauses[cid]
    for cid in ("3.1/decoder-layer", "3.1/decoder-causal", "3.1/shared-memory"):
        assert clauses[cid]["verdict"] == "NOT PROVIDED", clauses[cid]
        assert "`decode`: the implementation is encoder-only" in clauses[cid]["reason"]


def test_declarations_have_defaults_and_are_validated() -> None:
    assert declared(ReferenceAdapter(), "architecture") == "encoder-decoder"
    assert declared(ReferenceAdapter(), "outputs") == "logits"
    assert declared(EncoderOnly(), "architecture") == "encoder-only"
    with pytest.raises(NotProvided, match="the implementation is encoder-only"):
        capability(EncoderOnly(), "greedy")
    assert capability(EncoderOnly(), "encode")

    class Wrong(ReferenceAdapter):
        outputs = "probabilities"

    with pytest.raises(AdapterError, match=re.escape("adapter.outputs is 'probabilities'; it "
                                                      "must be one of 'logits', 'log-probs'")):
        declared(Wrong(), "outputs")


def test_aliases_finds_shared_names_and_heads() -> None:
    a, b = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    assert aliases({"W_K": a, "W_V": b}, ("W_K", "W_V")) == []
    assert aliases({"W_K": a, "W_V": a.clone()}, ("W_K", "W_V", "W_Q")) == [("W_K", "W_V")]
    heads = torch.randn(3, 3, 4)
    heads[2] = heads[0]
    assert aliases({"W_Q": heads}, ("W_Q",)) == [("W_Q[0]", "W_Q[2]")]


def test_combining_runs_keeps_a_diagnosis_and_every_note() -> None:
    """The float64 run of a clause may deviate without a name where the float32 run names the
    bug: the combined verdict keeps the name. Passing runs keep their notes, once each."""
    unnamed = Outcome("3.5/added", Verdict.DEVIATES, "427 times the tolerance", test="float64")
    named = Outcome("3.5/added", Verdict.DEVIATES, "12 times the tolerance", test="float32",
                    diagnosis="sin-cos-swapped: sin and cos are swapped")
    assert combine([unnamed, named]) == named
    assert combine([named, unnamed]) == named
    notes = [Outcome("3.5/added", Verdict.CONFORMS, reason) for reason in ("a", "", "a", "b")]
    assert combine(notes).reason == "a; b"
