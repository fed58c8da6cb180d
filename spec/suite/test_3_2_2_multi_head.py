"""3.2.2 Multi-head attention: MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O with
head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V), d_k = d_v = d_model / h."""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from spec import oracle
from spec.check import Check, Env
from spec.diagnosis import explain
from spec.strategies import key_masks, settings
from spec.suite.helpers import aliases, draw_all, judge, multi_head_bugs, randomize
from spec.tolerances import error_ratio

BIASES = ("b_Q", "b_K", "b_V", "b_O")


def _module(clause: Check, env: Env, d_model: int, h: int) -> nn.Module:
    module: nn.Module = clause.require("multi_head")(d_model, h)
    return module.to(env.device, env.dtype).eval()


@pytest.mark.clause("3.2.2/eq")
def test_eq(clause: Check, env: Env, rng: torch.Generator) -> None:
    """Any h, d_k, L_q and L_k, self- or cross-attention, with or without a key mask: the
    output equals the per-head oracle with the weights read back from the module."""
    forward = clause.require("multi_head_forward")
    clause.require("multi_head")  # NOT PROVIDED is decided here, before hypothesis runs
    clause.require("parameters")

    @settings()
    @given(
        shape=st.tuples(*(st.integers(1, n) for n in (2, 4, 6, 6, 6))),
        cross=st.booleans(),
        data=st.data(),
    )
    def check(shape: tuple[int, ...], cross: bool, data: st.DataObject) -> None:
        # a module that only does self-attention is still judged on it
        with clause.part("cross-attention" if cross else "self-attention"):
            example(shape, cross, data)

    def example(shape: tuple[int, ...], cross: bool, data: st.DataObject) -> None:
        b, h, d_k, lq, lk = shape
        d_model = h * d_k
        module = _module(clause, env, d_model, h)
        params = randomize(clause, module, env, rng)
        if clause.has("load_parameters"):  # distinct values were loaded into every name
            shared = aliases(params, ("W_Q", "W_K", "W_V", "b_Q", "b_K", "b_V"))
            clause.expect(not shared, f"{', '.join(f'{a} = {b}' for a, b in shared)} read back "
                          "the same values after distinct ones were loaded: the module shares "
                          "projections the paper keeps apart", explain("shared-projections"))
        x = env.randn(b, lq, d_model, generator=rng)
        memory = env.randn(b, lk, d_model, generator=rng) if cross else None
        kv = x if memory is None else memory
        mask = data.draw(st.none() | key_masks(b, lq, kv.shape[1]))
        mask = None if mask is None else mask.to(env.device)
        run = functools.partial(oracle.multi_head, x, kv, kv, params, mask)
        judge(clause, forward(module, x, memory, mask), run(), "MultiHead(Q, K, V)", env.tol,
              functools.partial(multi_head_bugs, run))
        present = [name for name in BIASES if name in params]
        if present:
            clause.variant("projection-biases", f"the projections have biases {', '.join(present)}")

    check()
    clause.parts_done()


@pytest.mark.clause("3.2.2/head-dims")
def test_head_dims(clause: Check, env: Env) -> None:
    """W_i^Q, W_i^K, W_i^V are d_model x d_model/h and W^O is h d_v x d_model, so the four
    projections hold 4 d_model^2 parameters, and the module holds no others (4 d_model more
    with biases: the variant ``projection-biases``)."""
    read = clause.require("parameters")
    for d_model, h in ((24, 4), (24, 3), (8, 1)):
        module = _module(clause, env, d_model, h)
        params = read(module)
        d_k = d_model // h
        expected = {"W_Q": [h, d_model, d_k], "W_K": [h, d_model, d_k], "W_V": [h, d_model, d_k],
                    "W_O": [h * d_k, d_model], "b_Q": [h, d_k], "b_K": [h, d_k], "b_V": [h, d_k],
                    "b_O": [d_model]}
        for name in ("W_Q", "W_K", "W_V", "W_O"):
            clause.expect(name in params, f"the multi-head module has no {name}")
        # names beyond the projections (a LayerNorm kept inside the attention module) are the
        # implementation's extras: not counted as projections, but they must be exposed
        extras = {n: t for n, t in params.items() if n not in expected}
        for name, t in params.items():
            if name in expected:
                clause.expect(list(t.shape) == expected[name],
                              f"d_model={d_model}, h={h}: {name} has shape {list(t.shape)}, "
                              f"expected {expected[name]} (d_k = d_v = d_model / h = {d_k})")
        biases = [name for name in BIASES if name in params]
        count = sum(t.numel() for n, t in params.items() if n in expected)
        held = sum(p.numel() for p in module.parameters()) - sum(t.numel() for t in extras.values())
        clause.expect(held == count == 4 * d_model**2 + (4 * d_model if biases else 0),
                      f"d_model={d_model}, h={h}: the module holds {held} parameters besides "
                      f"the extras {sorted(extras)}, the projections {count}; expected "
                      f"4 d_model^2 = {4 * d_model**2}"
                      + (f" + 4 d_model = {4 * d_model} for the biases" if biases else ""),
                      # fewer parameters than the names expose: some names share them
                      explain("shared-projections") if held < count else None)
        if biases:
            clause.variant("projection-biases", f"the projections have biases {', '.join(biases)}")


@pytest.mark.clause("3.2.2/heads-split-by-projection")
def test_heads_split_by_projection(clause: Check, env: Env, rng: torch.Generator) -> None:
    """Each head projects the whole d_model-wide input: full d_model x d_k matrices load and
    read back per head (a head that only sees its slice of the input cannot hold them), and the
    output matches the oracle, not the one with the input sliced per head."""
    forward = clause.require("multi_head_forward")
    read = clause.require("parameters")
    d_model, h = 24, 4
    module = _module(clause, env, d_model, h)
    params = read(module)
    if clause.has("load_parameters"):
        fresh = draw_all(params, env, rng)
        clause.require("load_parameters")(module, fresh)
        params = {n: t.detach() for n, t in read(module).items()}
        w = d_model // h
        for name in ("W_Q", "W_K", "W_V"):
            if error_ratio(params[name], fresh[name], env.tol) <= 1.0:
                continue
            if any(torch.equal(params[name], fresh[other]) for other in fresh if other != name):
                continue  # shared with another projection: 3.2.2/eq reports that
            back = params[name]
            sliced = all(
                bool(back[i, : i * w].eq(0).all() and back[i, (i + 1) * w :].eq(0).all())
                for i in range(h)
            )
            clause.deviates(
                f"{name} loaded as full d_model x d_k matrices per head does not read back"
                + (": each head keeps only the rows of its own slice of the input" if sliced
                   else ""),
                explain("slice-input") if sliced else None,
            )
    x = env.randn(2, 5, d_model, generator=rng)
    run = functools.partial(oracle.multi_head, x, x, x, params, None)
    judge(clause, forward(module, x, None, None), run(), "MultiHead(X, X, X)", env.tol,
          functools.partial(multi_head_bugs, run))
