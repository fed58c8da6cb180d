"""3.4 Embeddings and softmax: learned embeddings scaled by sqrt(d_model), one tied matrix,
a linear map and a softmax for the next-token probabilities."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pytest
import torch
from torch import Tensor

from spec import oracle
from spec.adapter import declared
from spec.check import Check, Env
from spec.suite.helpers import (
    SMALL,
    as_outputs,
    build,
    embedded,
    embedding_norm,
    normed,
    randomize,
    tied_pairs,
    tokens,
)

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


def _table(clause: Check, params: Mapping[str, Tensor], which: str, length: int) -> Tensor:
    """The positional table ``[length, d_model]`` (float64) of the ``which`` stack as the
    adapter has it: the learned ``{which}_positions``, its ``positional_encoding``, or else the
    paper's (3.5 judges which is right). Needed under an embedding norm only: elsewhere the
    table cancels."""
    learned = params.get(f"{which}_positions")
    if learned is not None:
        return learned[:length].to("cpu", torch.float64)
    if clause.has("positional_encoding"):
        table = clause.require("positional_encoding")(length, SMALL.d_model)
        return table.detach().to("cpu", torch.float64)
    return oracle.positional_encoding(length, SMALL.d_model)


def _scale_under_norm(
    actual: Tensor, norm: Mapping[str, Tensor], rows: Tensor, table: Tensor
) -> float:
    """The c of LN(c E[ids] + PE) that ``actual`` ``[B, L, d]`` shows, whatever the LayerNorm's
    epsilon (``rows`` = E[ids], float64). u = (actual - beta) / gamma is (z - mean z) / s for
    z = c E[ids] + PE, so every row's s u - c (E[ids] - its mean) = PE - its mean: linear in
    (one s per row, c), solved by least squares."""
    gamma, beta = (norm[k].detach().to("cpu", torch.float64) for k in ("gamma", "beta"))
    u = ((actual.detach().to("cpu", torch.float64) - beta) / gamma).flatten(0, -2)
    e, p = rows.flatten(0, -2), table.expand_as(rows).flatten(0, -2)
    e, p = e - e.mean(-1, keepdim=True), p - p.mean(-1, keepdim=True)
    n, d = u.shape
    A = torch.zeros(n * d, n + 1, dtype=torch.float64)
    A[torch.arange(n * d), torch.arange(n).repeat_interleave(d)] = u.flatten()
    A[:, n] = -e.flatten()
    return float(torch.linalg.lstsq(A, p.reshape(-1, 1)).solution[n])


def _project_what(clause: Check) -> str:
    """How the oracle's side of a ``project`` comparison reads (see :func:`as_outputs`)."""
    return "log_softmax(y W)" if declared(clause.adapter, "outputs") == "log-probs" else "y W"


@pytest.mark.clause("3.4/learned-embeddings")
def test_learned_embeddings(clause: Check, env: Env, rng: torch.Generator) -> None:
    """Each stack looks its token ids up in a learned ``[V, d_model]`` matrix.

    Independent of the scale (3.4/scale) and of the positional encoding (3.5): the embeddings of
    two id sequences, at the same positions, must differ by c (E[a] - E[b]) for one constant
    c != 0, E being the matrix the adapter reads back; and the embedding output must receive a
    gradient (the matrix is learned, not fixed). Under an exposed LayerNorm on the embedding
    sums (variant ``embedding-norm`` of 3.5/added) the output must be LN(c E[a] + PE) for the c
    it shows (:func:`_scale_under_norm`), the table as the adapter has it.
    """
    model, params = build(clause, env, rng)
    a, b = _ids(rng)
    for method, name in STACKS:
        with clause.part(method):  # a stack the implementation lacks is not checked
            embed = clause.require(method)
            if name not in params:
                clause.not_provided("parameters", f"no canonical {name}")
            E = params[name]
            clause.expect(
                E.dim() == 2 and E.shape[1] == SMALL.d_model,
                f"{name} has shape {list(E.shape)}, expected [vocab, d_model={SMALL.d_model}]",
            )
            which = name.removesuffix("_embedding")
            norm = embedding_norm(params, which)
            if norm is None:
                actual = embedded(clause, method, model, a, env) - embedded(clause, method, model,
                                                                             b, env)
                base = _lookup_difference(E, a, b)
                c = float((actual.detach().double().cpu() * base.cpu()).sum()
                          / (base.cpu() ** 2).sum())
                what, expected = f"{method}(a) - {method}(b) = c ({name}[a] - {name}[b])", c * base
            else:
                actual = embedded(clause, method, model, a, env)
                rows = E.to("cpu", torch.float64)[a]
                table = _table(clause, params, which, a.shape[1])
                c = _scale_under_norm(actual, norm, rows, table)
                ln, _ = normed(norm, actual, c * rows + table, env.tol)
                what, expected = f"{method}(a) = LN(c {name}[a] + PE)", ln(c * rows + table)
            clause.expect(
                abs(c) > 1e-6, f"{method}: the output does not depend on the rows of {name}"
            )
            clause.close(actual, expected, what, env.tol)
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
    clause.parts_done()


@pytest.mark.clause("3.4/scale")
def test_scale(clause: Check, env: Env, rng: torch.Generator) -> None:
    """Embedding rows are multiplied by sqrt(d_model), in the embedding layers only.

    The embeddings of two id sequences at the same positions differ by exactly
    sqrt(d_model) (E[a] - E[b]) (the positional encoding cancels); under an exposed LayerNorm
    on the embedding sums (variant ``embedding-norm`` of 3.5/added) the embedding is
    LN(sqrt(d_model) E[a] + PE), the table as the adapter has it. The pre-softmax map is not
    scaled: project(y) = y W (+ b), or its log-softmax where the adapter declares
    log-probabilities. d_model = 16 tells 1, sqrt(d_model) and d_model apart.
    """
    model, params = build(clause, env, rng)
    a, b = _ids(rng)
    d = SMALL.d_model
    for method, name in STACKS:
        with clause.part(method):  # a stack the implementation lacks is not checked
            clause.require(method)
            which = name.removesuffix("_embedding")
            norm = embedding_norm(params, which)
            if norm is None:
                actual = embedded(clause, method, model, a, env) - embedded(clause, method, model,
                                                                             b, env)
                base = _lookup_difference(params[name], a, b)
                bugs = {"no-embedding-scale": base, "embedding-scale-dmodel": d * base}
                clause.close(actual, math.sqrt(d) * base, f"{method}(a) - {method}(b)", env.tol,
                             bugs)
                continue
            actual = embedded(clause, method, model, a, env)
            rows = params[name].to("cpu", torch.float64)[a]
            table = _table(clause, params, which, a.shape[1])

            def sums(c: float, rows: Tensor = rows, table: Tensor = table) -> Tensor:
                return c * rows + table

            ln, _ = normed(norm, actual, sums(math.sqrt(d)), env.tol)
            bugs = {"no-embedding-scale": ln(sums(1.0)), "embedding-scale-dmodel": ln(sums(d))}
            clause.close(actual, ln(sums(math.sqrt(d))),
                         f"{method}(a) = LN(sqrt(d_model) {name}[a] + PE)", env.tol, bugs)
    clause.parts_done()
    y = env.randn(2, 5, d, generator=rng)
    logits = oracle.project(y, params)
    bugs = {"pre-softmax-scale": as_outputs(clause, logits * math.sqrt(d))}
    clause.close(clause.require("project")(model, y), as_outputs(clause, logits),
                 f"project(y) = {_project_what(clause)}", env.tol, bugs)


@pytest.mark.clause("3.4/weight-tying")
def test_weight_tying(clause: Check, env: Env, rng: torch.Generator) -> None:
    """Source embedding, target embedding and pre-softmax map are one matrix (shared vocabulary).

    Told by behaviour: distinct values are loaded into ``src_embedding``, ``tgt_embedding`` and
    ``generator.W`` and read back; tied names read back the same matrix (W = E^T). Then the
    pre-softmax map must use the matrix read back: project(y) = c y W, or its log-softmax
    where the adapter declares log-probabilities (the factor c, fitted on the values centred
    over the vocabulary, is 3.4/scale's and 3.4/output-softmax's business).
    """
    model = clause.require("model")(SMALL).to(env.device, env.dtype).eval()
    tied = tied_pairs(clause, model, env, rng)
    if not clause.has("embed_target"):  # no decoder: the source embedding and the map remain
        if tied == {"src-generator"}:
            clause.note("no target embedding (no decoder): the source embedding and the "
                        "pre-softmax map are one matrix")
        else:
            clause.variant("untied-embeddings", "the source embedding and the pre-softmax map "
                           "are separate matrices (no target embedding: no decoder)")
    elif tied == {"src-tgt", "tgt-generator", "src-generator"}:
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
    actual, logits = clause.require("project")(model, y), oracle.project(y, params)
    a = actual.detach().double().cpu()
    a, e = a - a.mean(-1, keepdim=True), logits - logits.mean(-1, keepdim=True)
    c = float((a * e).sum() / (e**2).sum())
    clause.close(actual, as_outputs(clause, c * logits),
                 f"project(y) = c {_project_what(clause)}, with the generator.W read back",
                 env.tol)


@pytest.mark.clause("3.4/output-softmax")
def test_output_softmax(clause: Check, env: Env, rng: torch.Generator) -> None:
    """A learned linear map and a softmax give the next-token distribution.

    Compared as log-probabilities, log_softmax(project(y)) = log_softmax(y W (+ b)), so an
    adapter may return logits or log-probabilities; where it declares log-probabilities
    (``outputs = "log-probs"``) they must be that: exp(project(y)) sums to 1 over the
    vocabulary. A bias on the map is variant ``generator-bias``.
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
    if declared(clause.adapter, "outputs") == "log-probs":
        total = actual.detach().double().exp().sum(-1)
        clause.close(total, torch.ones_like(total), "the sum of exp(project(y)) over the "
                     "vocabulary (the adapter declares log-probabilities)", env.tol)
