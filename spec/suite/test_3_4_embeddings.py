"""3.4 Embeddings and softmax: learned embeddings scaled by sqrt(d_model), one tied matrix,
a linear map and a softmax for the next-token probabilities."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from spec import oracle
from spec.check import Check, Env
from spec.suite.helpers import SMALL, build, randomize, tied_pairs, tokens

STACKS = (("embed_source", "src_embedding"), ("embed_target", "tgt_embedding"))
"""(adapter method, canonical embedding matrix) for the two stacks."""


def _ids(rng: torch.Generator) -> tuple[Tensor, Tensor]:
    """Two different id sequences ``[2, 9]`` (the same positions), special ids avoided."""
    a, _ = tokens(rng, SMALL, 2, 9)
    b, _ = tokens(rng, SMALL, 2, 9)
    return a, b


def _lookup_difference(E: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """E[a] - E[b] in float64: what the embedding of ``a`` minus that of ``b`` is made of (the
    positional encoding, the same at the same positions, cancels)."""
    E = E.to(torch.float64)
    return E[a.to(E.device)] - E[b.to(E.device)]


@pytest.mark.clause("3.4/learned-embeddings")
def test_learned_embeddings(clause: Check, env: Env, rng: torch.Generator) -> None:
    """Each stack looks its token ids up in a learned ``[V, d_model]`` matrix.

    Independent of the scale (3.4/scale) and of the positional encoding (3.5): the embeddings of
    two id sequences, at the same positions, must differ by c (E[a] - E[b]) for one constant
    c != 0, E being the matrix the adapter reads back; and the embedding output must receive a
    gradient (the matrix is learned, not fixed).
    """
    model, params = build(clause, env, rng)
    a, b = _ids(rng)
    for method, name in STACKS:
        embed = clause.require(method)
        if name not in params:
            clause.not_provided("parameters", f"no canonical {name}")
        E = params[name]
        clause.expect(
            E.dim() == 2 and E.shape[1] == SMALL.d_model,
            f"{name} has shape {list(E.shape)}, expected [vocab, d_model={SMALL.d_model}]",
        )
        actual = embed(model, a.to(env.device)) - embed(model, b.to(env.device))
        base = _lookup_difference(E, a, b)
        c = float((actual.detach().double().cpu() * base.cpu()).sum() / (base.cpu() ** 2).sum())
        clause.expect(
            abs(c) > 1e-6, f"{method}: the output does not depend on the rows of {name}"
        )
        clause.close(actual, c * base, f"{method}(a) - {method}(b) = c ({name}[a] - {name}[b])",
                     env.tol)
        # learned: the embedding output is differentiable in some trainable parameter
        model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            out = embed(model, a.to(env.device))
            clause.expect(out.requires_grad, f"{method}: the output depends on no trainable "
                          "parameter (the embedding is not learned)")
            weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=out.device)
            (out * weights.view_as(out)).sum().backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
        clause.expect(
            any(bool((g != 0).any()) for g in grads),
            f"{method}: no trainable parameter receives a gradient from the embedding output "
            "(the embedding is not learned)",
        )


@pytest.mark.clause("3.4/scale")
def test_scale(clause: Check, env: Env, rng: torch.Generator) -> None:
    """Embedding rows are multiplied by sqrt(d_model), in the embedding layers only.

    The embeddings of two id sequences at the same positions differ by exactly
    sqrt(d_model) (E[a] - E[b]) (the positional encoding cancels); the pre-softmax map is not
    scaled: project(y) = y W (+ b). d_model = 16 tells 1, sqrt(d_model) and d_model apart.
    """
    model, params = build(clause, env, rng)
    a, b = _ids(rng)
    d = SMALL.d_model
    for method, name in STACKS:
        embed = clause.require(method)
        actual = embed(model, a.to(env.device)) - embed(model, b.to(env.device))
        base = _lookup_difference(params[name], a, b)
        bugs = {"no-embedding-scale": base, "embedding-scale-dmodel": d * base}
        clause.close(actual, math.sqrt(d) * base, f"{method}(a) - {method}(b)", env.tol, bugs)
    y = env.randn(2, 5, d, generator=rng)
    expected = oracle.project(y, params)
    bugs = {"pre-softmax-scale": expected * math.sqrt(d)}
    clause.close(clause.require("project")(model, y), expected, "project(y) = y W", env.tol, bugs)


@pytest.mark.clause("3.4/weight-tying")
def test_weight_tying(clause: Check, env: Env, rng: torch.Generator) -> None:
    """Source embedding, target embedding and pre-softmax map are one matrix (shared vocabulary).

    Told by behaviour: distinct values are loaded into ``src_embedding``, ``tgt_embedding`` and
    ``generator.W`` and read back; tied names read back the same matrix (W = E^T). Then the
    pre-softmax map must use the matrix read back: project(y) = c y W (the factor c is
    3.4/scale's and 3.4/output-softmax's business).
    """
    model = clause.require("model")(SMALL).to(env.device, env.dtype).eval()
    tied = tied_pairs(clause, model, env, rng)
    if tied == {"src-tgt", "tgt-generator", "src-generator"}:
        pass
    elif tied == {"tgt-generator"}:
        clause.variant("two-way-tying", "the target embedding and the pre-softmax map are "
                       "tied; the source embedding is a separate matrix")
    elif tied == {"src-tgt"}:
        clause.variant("shared-embeddings", "source and target embeddings are one matrix; the "
                       "pre-softmax map is a separate matrix")
    elif not tied:
        clause.variant("untied-embeddings", "src_embedding, tgt_embedding and generator.W hold "
                       "three separate matrices")
    else:
        clause.deviates(f"only {', '.join(sorted(tied))} are tied: the pre-softmax map shares "
                        "its weights with the source embedding but not with the target one")
    params = randomize(clause, model, env, rng)
    y = env.randn(2, 5, SMALL.d_model, generator=rng)
    actual, expected = clause.require("project")(model, y), oracle.project(y, params)
    c = float((actual.detach().double().cpu() * expected.cpu()).sum() / (expected**2).sum())
    clause.close(actual, c * expected, "project(y) = c y W, with the generator.W read back",
                 env.tol)


@pytest.mark.clause("3.4/output-softmax")
def test_output_softmax(clause: Check, env: Env, rng: torch.Generator) -> None:
    """A learned linear map and a softmax give the next-token distribution.

    Compared as log-probabilities, log_softmax(project(y)) = log_softmax(y W (+ b)), so an
    adapter may return logits or log-probabilities. A bias on the map is variant
    ``generator-bias``.
    """
    model, params = build(clause, env, rng)
    if "generator.W" not in params:
        clause.not_provided("parameters", "no canonical generator.W")
    if "generator.b" in params:
        clause.variant("generator-bias", "the pre-softmax linear map has a bias (generator.b)")
    y = env.randn(2, 5, SMALL.d_model, generator=rng)
    logits = oracle.project(y, params)
    actual = clause.require("project")(model, y)
    bugs = {
        "pre-softmax-scale": (logits * math.sqrt(SMALL.d_model)).log_softmax(-1),
        "pre-softmax-inverse-scale": (logits / math.sqrt(SMALL.d_model)).log_softmax(-1),
    }
    clause.close(actual.double().log_softmax(-1), logits.log_softmax(-1),
                 "log_softmax(project(y))", env.tol, bugs)
