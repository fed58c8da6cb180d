"""3.2.3 Applications of attention: encoder-decoder attention (queries from the decoder, keys and
values from the encoder output, no causal mask), unmasked encoder self-attention, and causally
masked decoder self-attention.

The "who sees whom" checks use one-layer models and :func:`helpers.influence`: with a single
layer, output position i depends on input position j != i exactly when query i gives key j a
non-zero weight.
"""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch
from torch import Tensor, nn

from spec import oracle
from spec.check import Check, Env
from spec.diagnosis import explain
from spec.suite import helpers as H
from spec.suite.helpers import SMALL, judge, multi_head_bugs, randomize

ONE_LAYER = dataclasses.replace(SMALL, n_layers=1)


def _real(env: Env, batch: int, length: int) -> Tensor:
    return torch.ones(batch, length, dtype=torch.bool, device=env.device)


def _pairs(m: Tensor) -> list[tuple[int, int]]:
    return [(int(i), int(j)) for i, j in m.nonzero().tolist()]


def _diagnosis(
    clause: Check,
    env: Env,
    rng: torch.Generator,
    model: nn.Module,
    params: dict[str, Tensor],
    stack: H.Stack,
    x: Tensor,
    memory: Tensor | None = None,
) -> str | None:
    """The known bug of a one-layer ``stack`` that its output on ``x`` reproduces, if any."""
    reading = H.reading_of(clause, env, rng, model, params, ONE_LAYER, stack)
    if stack == "encoder":
        mask = _real(env, x.shape[0], x.shape[1])
        actual = clause.require("encode")(model, x, mask)
        run = functools.partial(H.encoder, x, params, ONE_LAYER, mask, reading)
    else:
        assert memory is not None
        mask = _real(env, memory.shape[0], memory.shape[1])
        actual = clause.require("decode")(model, x, memory, mask)
        run = functools.partial(H.decoder, x, memory, params, ONE_LAYER, mask, reading)
    return H.diagnosis(actual, run(), H.stack_bugs(run, reading, stack), env.tol)


@pytest.mark.clause("3.2.3/cross-attention")
def test_cross_attention_module(clause: Check, env: Env, rng: torch.Generator) -> None:
    """Multi-head attention over a memory takes its queries from x and its keys and values from
    the memory, with no mask of its own (L_q = 3 < L_k = 6, so a causal mask would show)."""
    forward = clause.require("multi_head_forward")
    module = clause.require("multi_head")(SMALL.d_model, SMALL.h).to(env.device, env.dtype).eval()
    params = randomize(clause, module, env, rng)
    x = env.randn(2, 3, SMALL.d_model, generator=rng)
    memory = env.randn(2, 6, SMALL.d_model, generator=rng)
    run = functools.partial(oracle.multi_head, x, memory, memory, params)
    causal = torch.ones(3, 6, dtype=torch.bool).tril()
    judge(clause, forward(module, x, memory, None), run(), "MultiHead(X, M, M)", env.tol,
          lambda: {"cross-attention-causal": run(causal),
                   "cross-attention-self": oracle.multi_head(x, x, x, params),
                   **multi_head_bugs(run)})


@pytest.mark.clause("3.2.3/cross-attention")
def test_cross_attention_in_decoder(clause: Check, env: Env, rng: torch.Generator) -> None:
    """In a one-layer decoder every target position depends on every source position."""
    decode = clause.require("decode")
    model, params = H.build_stacks(clause, env, rng, ONE_LAYER)
    d = SMALL.d_model
    y, memory, mask = env.randn(2, 4, d, generator=rng), env.randn(2, 6, d, generator=rng), \
        _real(env, 2, 6)
    seen = H.influence(lambda m: decode(model, y, m, mask), memory, env, rng)  # [T, S]
    unseen = _pairs(~seen)
    if unseen:
        causal = _pairs(~torch.ones(4, 6, dtype=torch.bool).tril()) == unseen
        clause.deviates(
            f"decoder outputs do not depend on some encoder positions: (target i, source j) in "
            f"{unseen}",
            _diagnosis(clause, env, rng, model, params, "decoder", y, memory)
            or (explain("cross-attention-causal") if causal else None),
        )


@pytest.mark.clause("3.2.3/encoder-self")
def test_encoder_self(clause: Check, env: Env, rng: torch.Generator) -> None:
    """In a one-layer encoder every output position depends on every input position (no mask
    apart from padding; here there is none)."""
    encode = clause.require("encode")
    model, params = H.build_stacks(clause, env, rng, ONE_LAYER)
    x, mask = env.randn(2, 5, SMALL.d_model, generator=rng), _real(env, 2, 5)
    seen = H.influence(lambda t: encode(model, t, mask), x, env, rng)  # [S, S]
    unseen = _pairs(~seen)
    if unseen:
        causal = _pairs(~torch.ones(5, 5, dtype=torch.bool).tril()) == unseen
        clause.deviates(
            f"encoder outputs do not depend on some positions: (output i, input j) in {unseen}",
            _diagnosis(clause, env, rng, model, params, "encoder", x)
            or (explain("encoder-causal") if causal else None),
        )


@pytest.mark.clause("3.2.3/decoder-self")
def test_decoder_self(clause: Check, env: Env, rng: torch.Generator) -> None:
    """In a one-layer decoder output i depends on the inputs j < i and not on j > i; and the
    output matches the oracle with the causal mask j <= i (not j <= i + 1, nor j < i). The
    memory has one position, so that the encoder-decoder attention cannot disturb the
    judgement."""
    decode = clause.require("decode")
    model, params = H.build_stacks(clause, env, rng, ONE_LAYER)
    t, d = 5, SMALL.d_model
    y, memory, mask = env.randn(2, t, d, generator=rng), env.randn(2, 1, d, generator=rng), \
        _real(env, 2, 1)
    reading = H.reading_of(clause, env, rng, model, params, ONE_LAYER, "decoder")
    run = functools.partial(H.decoder, y, memory, params, ONE_LAYER, mask, reading)
    out = decode(model, y, memory, mask)

    def bugs() -> dict[str, Tensor]:
        return H.stack_bugs(run, reading, "decoder")

    def found() -> str | None:
        return H.diagnosis(out, run(), bugs(), env.tol)

    seen = H.influence(lambda v: decode(model, v, memory, mask), y, env, rng)
    future = _pairs(seen.triu(1))
    if future:
        # a leak pattern alone names no bug (a LayerNorm over the sequence axis leaks
        # everything too): only the oracle's bug models do, and the one-step pattern
        pattern = "causal-off-by-one-future" if future == [(i, i + 1) for i in range(t - 1)] \
            else None
        clause.deviates(
            f"decoder outputs depend on later positions: (output i, input j) in {future}",
            found() or explain(pattern),
        )
    past = _pairs(torch.ones(t, t, dtype=torch.bool).tril(-1) & ~seen)
    clause.expect(not past, f"decoder outputs do not depend on earlier positions: (output i, "
                  f"input j) in {past}", found() if past else None)
    H.judge(clause, out, run(), "decoder output", env.tol, bugs)
