"""3.3 Position-wise feed-forward networks: FFN(x) = max(0, x W_1 + b_1) W_2 + b_2, applied to
each position separately and identically, d_model -> d_ff -> d_model, per layer.

Where the adapter has no standalone FFN (``feed_forward``), Eq. 2 and position-wise application
are checked inside a one-layer encoder instead, through the model's parameters.
"""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch
from torch import Tensor, nn

from spec import oracle
from spec.adapter import Config
from spec.check import Check, Env
from spec.diagnosis import explain
from spec.suite import helpers as H
from spec.suite.helpers import SMALL, randomize
from spec.tolerances import error_ratio

ONE_LAYER = dataclasses.replace(SMALL, n_layers=1)
FFN_NAMES = ("W_1", "b_1", "W_2", "b_2")


def _ffn(clause: Check, env: Env, rng: torch.Generator, d_model: int, d_ff: int
         ) -> tuple[nn.Module, dict[str, Tensor]]:
    module: nn.Module = clause.require("feed_forward")(d_model, d_ff)
    module = module.to(env.device, env.dtype).eval()
    return module, randomize(clause, module, env, rng)


def _has_eq2_parameters(clause: Check, params: dict[str, Tensor], where: str) -> None:
    missing = [name for name in FFN_NAMES if name not in params]
    clause.expect(not missing, f"{where} has no {', '.join(missing)}: Eq. 2 has two weight "
                  "matrices and two biases")


@pytest.mark.clause("3.3/eq2")
def test_eq2(clause: Check, env: Env, rng: torch.Generator) -> None:
    """FFN(x) = max(0, x W_1 + b_1) W_2 + b_2 against the oracle (GELU is the variant ``gelu``),
    on a standalone FFN, or else on one-position sequences through a one-layer encoder."""
    if clause.has("feed_forward"):
        forward = clause.require("feed_forward_forward")
        module, params = _ffn(clause, env, rng, SMALL.d_model, SMALL.d_ff)
        _has_eq2_parameters(clause, params, "the feed-forward network")
        x = env.randn(2, 5, SMALL.d_model, generator=rng, scale=2.0)
        actual = forward(module, x)
        ffn = functools.partial(oracle.feed_forward, x, params)
        if error_ratio(actual, ffn(), env.tol) > 1.0 >= error_ratio(
            actual, ffn(activation="gelu"), env.tol
        ):
            clause.variant("gelu", "the FFN applies GELU between its two linear maps")
            return
        clause.close(actual, ffn(), "FFN(x)", env.tol, {"no-relu": ffn(activation="none")})
        return
    clause.require("encode")  # no standalone FFN: judge it inside the model
    model, params = H.build_stacks(clause, env, rng, ONE_LAYER)
    _has_eq2_parameters(clause, H.sub(params, "encoder.0.ffn"), "encoder layer 0's FFN")
    actual, run = H.probe(clause, env, rng, model, params, ONE_LAYER, "encoder")
    reading = H.match_reading(actual, run, env.tol)
    if reading is not None:
        if reading.activation == "gelu":
            clause.variant("gelu", "the FFN applies GELU between its two linear maps")
        return
    clause.close(actual, run(), "encoder layer output (one position)", env.tol,
                 {"no-relu": run(activation="none")})


@pytest.mark.clause("3.3/position-wise")
def test_position_wise(clause: Check, env: Env, rng: torch.Generator) -> None:
    """Output i depends on x_i only; the same function at every position (each position alone
    gives the same output); permuting the positions permutes the output. Without a standalone
    FFN: a one-layer encoder whose attention is silenced (W^O = 0) must be position-wise."""
    x = env.randn(2, 6, SMALL.d_model, generator=rng)
    if clause.has("feed_forward"):
        forward = clause.require("feed_forward_forward")
        module, _ = _ffn(clause, env, rng, SMALL.d_model, SMALL.d_ff)

        def apply(t: Tensor) -> Tensor:
            return forward(module, t)

        what = "the FFN"
    else:
        encode, load = clause.require("encode"), clause.require("load_parameters")
        model, params = H.build_stacks(clause, env, rng, ONE_LAYER)
        load(model, {"encoder.0.self_attn.W_O": 0 * params["encoder.0.self_attn.W_O"]})

        def apply(t: Tensor) -> Tensor:
            real = torch.ones(t.shape[:2], dtype=torch.bool, device=env.device)
            return encode(model, t, real)

        what = "a one-layer encoder with its attention silenced"
    seen = H.influence(apply, x, env, rng)
    mixed = [(int(i), int(j)) for i, j in (seen & ~torch.eye(6, dtype=torch.bool)).nonzero()]
    clause.expect(not mixed, f"outputs of {what} depend on other positions: (output i, input j) "
                  f"in {mixed}", explain("ffn-mixes-positions"))
    out = apply(x)
    alone = torch.cat([apply(x[:, i : i + 1]) for i in range(6)], dim=1)
    clause.close(out, alone, f"{what} applied to each position alone", env.tol)
    perm = torch.randperm(6, generator=rng)
    clause.close(apply(x[:, perm]), out[:, perm], f"{what} of permuted positions", env.tol)


@pytest.mark.clause("3.3/dims")
def test_dims(clause: Check, env: Env, rng: torch.Generator) -> None:
    """W_1 is d_model x d_ff, W_2 is d_ff x d_model (d_model = 24, d_ff = 40); every layer of
    both stacks has its own FFN parameters."""
    config = Config(d_model=24, h=4, d_ff=40, n_layers=2)
    d, d_ff = config.d_model, config.d_ff
    expected = {"W_1": [d, d_ff], "b_1": [d_ff], "W_2": [d_ff, d], "b_2": [d]}

    def shapes(params: dict[str, Tensor], where: str) -> None:
        for name, shape in expected.items():
            if name in params:
                clause.expect(list(params[name].shape) == shape,
                              f"{where}.{name} has shape {list(params[name].shape)}, expected "
                              f"{shape} (d_model = {d}, d_ff = {d_ff})")

    checked = False
    if clause.has("feed_forward"):
        module, params = _ffn(clause, env, rng, d, d_ff)
        shapes(params, "ffn")
        out = clause.require("feed_forward_forward")(module, env.randn(2, 3, d, generator=rng))
        clause.expect(list(out.shape) == [2, 3, d], f"FFN output shape {list(out.shape)}")
        checked = True
    if clause.has("model") and clause.has("parameters"):
        _, params = H.build_stacks(clause, env, rng, config)
        for stack in ("encoder", "decoder") if clause.has("decode") else ("encoder",):
            ffns = {i: H.sub(layer, "ffn") for i, layer in H.layers(params, stack).items()}
            clause.expect(len(ffns) == config.n_layers and all(ffns.values()),
                          f"the {stack} layers {list(ffns)} do not each have FFN parameters")
            for i, ffn in ffns.items():
                shapes(ffn, f"{stack}.{i}.ffn")
            if clause.has("load_parameters"):  # distinct values were loaded into each layer
                same = [n for n, t in ffns[0].items() if torch.equal(t, ffns[1].get(n, -t))]
                clause.expect(not same, f"{stack} layers 0 and 1 read back the same FFN values "
                              f"{same}: they share their FFN", explain("shared-layers"))
        checked = True
    if not checked:
        clause.not_provided("feed_forward", "no FFN and no model parameters to measure")
