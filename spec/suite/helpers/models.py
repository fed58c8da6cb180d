"""Models with well-conditioned random weights, their canonical parameters, and which of them
the implementation shares."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from spec.adapter import Config
from spec.check import Check, Env

SMALL = Config()
"""The configuration most model tests use: d_model 16, h 4, d_ff 32, N 2, vocab 13, no dropout."""


def draw(name: str, shape: torch.Size, rng: torch.Generator) -> Tensor:
    """A well-conditioned random value for the canonical parameter ``name`` (float64, CPU).

    Matrices are scaled by 1/sqrt(fan-in) so activations stay O(1); LayerNorm gains are near 1;
    biases are small but non-zero, so that a misplaced one shows.
    """
    x = torch.randn(*shape, generator=rng, dtype=torch.float64)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "gamma":
        return 1.0 + 0.2 * x
    if leaf == "beta" or leaf.startswith("b_") or leaf == "b":
        return 0.2 * x
    if leaf in ("W_Q", "W_K", "W_V"):
        return x / math.sqrt(shape[-2])
    if leaf in ("src_embedding", "tgt_embedding"):
        return x / math.sqrt(shape[-1])
    if leaf in ("src_positions", "tgt_positions"):
        return 0.5 * x
    return x / math.sqrt(shape[0])


ORDER = ("src_embedding", "tgt_embedding", "generator", "encoder", "decoder", "self_attn",
         "cross_attn", "ffn", "norm_1", "norm_2", "norm_3", "W", "W_Q", "W_K", "W_V", "W_O", "W_1",
         "b_1", "W_2", "b_2", "gamma", "beta")
"""The parts of canonical names in the order in which :func:`randomize` draws their values
(:func:`canonical_order`)."""


@functools.cache  # a few hundred names, sorted anew for every model a run builds
def canonical_order(name: str) -> tuple[tuple[int, int, str], ...]:
    """The sort key of a canonical name: part by part, layer numbers in numeric order, the
    parts of :data:`ORDER` in that order (embeddings, then the stacks; in a layer its sub-layers
    in the paper's order, then its norms; W_Q, W_K, W_V, W_O; gain before bias), any other part
    after them, by name (``encoder.norm`` after the encoder's layers)."""
    return tuple((0, int(part), "") if part.isdigit()
                 else (1, ORDER.index(part), "") if part in ORDER
                 else (2, 0, part) for part in name.split("."))


def draw_all(params: Mapping[str, Tensor], env: Env, rng: torch.Generator) -> dict[str, Tensor]:
    """A :func:`draw` for each of ``params``' names and shapes, on ``env``'s device and dtype,
    drawn in :func:`canonical_order`."""
    return {name: draw(name, params[name].shape, rng).to(env.device, env.dtype)
            for name in sorted(params, key=canonical_order)}


def randomize(
    clause: Check, module: nn.Module, env: Env, rng: torch.Generator
) -> dict[str, Tensor]:
    """Load random canonical parameters into ``module`` (when the adapter can write them) and
    return the parameters as the adapter reads them back, which is what the oracle uses.

    The values are drawn and loaded in :func:`canonical_order`, whatever order the adapter
    lists its parameters in: implementations of one function given one generator get the same
    weights (with tied matrices, the one loaded last: ``generator.W``), so that inputs chosen
    when a test was written (the seeds of the greedy and beam-search checks) are the same for
    all of them."""
    read = clause.require("parameters")
    params: dict[str, Tensor] = dict(read(module))
    if clause.has("load_parameters"):
        fresh = draw_all(params, env, rng)
        clause.require("load_parameters")(module, fresh)
        params = dict(read(module))
    return {name: t.detach().clone() for name, t in params.items()}


def aliases(params: Mapping[str, Tensor], names: Iterable[str]) -> list[tuple[str, str]]:
    """Pairs among ``names`` (those present in ``params``) that read back one and the same
    value although :func:`randomize` loaded distinct random values into each: parameters the
    implementation shares where the paper has distinct ones. Also pairs of heads
    (``W_K[0]``, ``W_K[1]``) within a per-head matrix ``[h, d_model, d_k]``. Meaningful only
    after :func:`randomize` could load (the adapter has ``load_parameters``)."""
    present = [n for n in names if n in params]
    pairs = [(a, b) for i, a in enumerate(present) for b in present[i + 1:]
             if params[a].shape == params[b].shape and bool(torch.equal(params[a], params[b]))]
    for name in present:
        t = params[name]
        if t.dim() == 3 and t.shape[0] > 1:
            pairs += [(f"{name}[{i}]", f"{name}[{j}]") for i in range(t.shape[0])
                      for j in range(i + 1, t.shape[0]) if bool(torch.equal(t[i], t[j]))]
    return pairs


def build(
    clause: Check, env: Env, rng: torch.Generator, config: Config = SMALL
) -> tuple[nn.Module, dict[str, Tensor]]:
    """A model from the adapter, on ``env``'s device and dtype, in evaluation mode, with random
    weights; and its canonical parameters."""
    model = clause.require("model")(config).to(env.device, env.dtype).eval()
    return model, randomize(clause, model, env, rng)


def twin(
    clause: Check, model: nn.Module, config: Config, env: Env, params: Mapping[str, Tensor]
) -> nn.Module:
    """A second model from the adapter, built from ``config`` on ``env``, with ``model``'s
    weights: every entry of ``model``'s ``state_dict`` that the new model has with the same
    shape (so parameters without a canonical name are copied too), then the canonical
    parameters ``params`` on top when some entries differ (a positional table built for
    another ``max_len``). Never a copy of the canonical parameters alone, which would leave
    the others at their initial values."""
    other = clause.require("model")(config).to(env.device, env.dtype).eval()
    state, target = model.state_dict(), other.state_dict()
    same = {k: v for k, v in state.items() if k in target and target[k].shape == v.shape}
    other.load_state_dict(same, strict=False)
    if len(same) < max(len(state), len(target)):
        clause.require("load_parameters")(other, {n: t.to(env.device, env.dtype)
                                                  for n, t in params.items()})
    return other


EMBEDDING_NAMES = ("src_embedding", "tgt_embedding", "generator.W")
"""The three matrices 3.4/weight-tying is about (``generator.W`` is stored ``[d_model, V]``)."""


def tied_pairs(clause: Check, model: nn.Module, env: Env, rng: torch.Generator) -> set[str]:
    """Which of the embedding matrices share their weights, told by behaviour, not by names.

    Loads *distinct* random values into ``src_embedding``, ``tgt_embedding`` and ``generator.W``
    (with every other parameter as read) and reads them back: tied names read back one and the
    same matrix (whichever was written last), untied ones their own value. Returns a subset of
    ``{"src-tgt", "tgt-generator", "src-generator"}``. The model's parameters are changed:
    re-randomize it before using it for numbers.
    """
    read = clause.require("parameters")
    params = dict(read(model))
    # an implementation without a decoder has no target embedding: the other two are judged
    names = [n for n in EMBEDDING_NAMES if n != "tgt_embedding" or clause.has("embed_target")]
    missing = [n for n in names if n not in params]
    if missing:
        clause.not_provided("parameters", f"no canonical {', '.join(missing)}")
    fresh = dict(params)
    for name in names:
        fresh[name] = draw(name, params[name].shape, rng).to(env.device, env.dtype)
    clause.require("load_parameters")(model, fresh)
    back = {n: read(model)[n].detach().to("cpu", torch.float64) for n in names}
    back["generator.W"] = back["generator.W"].T
    short = {"src_embedding": "src", "tgt_embedding": "tgt", "generator.W": "generator"}

    def same(a: Tensor, b: Tensor) -> bool:
        return a.shape == b.shape and bool(torch.equal(a, b))

    return {f"{short[a]}-{short[b]}" for i, a in enumerate(names) for b in names[i + 1:]
            if same(back[a], back[b])}
