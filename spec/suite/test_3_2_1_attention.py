"""3.2.1 Scaled dot-product attention: Attention(Q, K, V) = softmax(QK^T / sqrt(d_k)) V."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from spec import oracle
from spec.check import Check, Env
from spec.strategies import attention_shapes, key_masks, settings


def _inputs(env: Env, rng: torch.Generator, b: int, lq: int, lk: int, dk: int, dv: int):
    return (
        env.randn(b, lq, dk, generator=rng),
        env.randn(b, lk, dk, generator=rng),
        env.randn(b, lk, dv, generator=rng),
    )


def _scale_bugs(q, k, v, mask=None) -> dict[str, torch.Tensor]:
    return {
        "no-scale": oracle.attention(q, k, v, mask, scale="none"),
        "scale-dk": oracle.attention(q, k, v, mask, scale="dk"),
        "softmax-over-queries": oracle.attention(q, k, v, mask, softmax_axis="queries"),
    }


@pytest.mark.clause("3.2.1/eq1")
def test_eq1(clause: Check, env: Env, rng: torch.Generator) -> None:
    """Any L_q, L_k, d_k and d_v: the output equals Eq. 1 computed in float64."""
    attention = clause.require("attention")

    @settings()
    @given(shape=attention_shapes())
    def check(shape: tuple[int, int, int, int, int]) -> None:
        q, k, v = _inputs(env, rng, *shape)
        clause.close(
            attention(q, k, v, None),
            oracle.attention(q, k, v),
            "Attention(Q, K, V)",
            env.tol,
            _scale_bugs(q, k, v),
        )

    check()


@pytest.mark.clause("3.2.1/scale")
def test_scale(clause: Check, env: Env, rng: torch.Generator) -> None:
    """The scale is exactly 1/sqrt(d_k): d_k = 16 tells 1, 1/d_k and 1/sqrt(d_k) apart."""
    attention = clause.require("attention")
    q, k, v = _inputs(env, rng, 2, 5, 6, 16, 8)
    q = q * 2  # large scores make the scale matter
    clause.close(
        attention(q, k, v, None),
        oracle.attention(q, k, v),
        "Attention(Q, K, V)",
        env.tol,
        _scale_bugs(q, k, v),
    )


@pytest.mark.clause("3.2.1/softmax-over-keys")
def test_softmax_over_keys(clause: Check, env: Env, rng: torch.Generator) -> None:
    """The weights of each query are non-negative and sum to 1 over the keys."""
    q, k, v = _inputs(env, rng, 2, 5, 7, 8, 8)
    if clause.has("attention_weights"):
        weights = clause.require("attention_weights")(q, k, v, None)
        expected = oracle.attention_weights(q, k)
        bugs = {"softmax-over-queries": oracle.attention_weights(q, k, softmax_axis="queries")}
        clause.close(weights, expected, "attention weights", env.tol, bugs)
        return
    # without weights: attending to V = I (one-hot values) returns the weights themselves
    attention = clause.require("attention")
    eye = torch.eye(7, dtype=env.dtype, device=env.device).expand(2, 7, 7)
    weights = attention(q, k, eye, None)
    bugs = {"softmax-over-queries": oracle.attention(q, k, eye, softmax_axis="queries")}
    clause.close(weights, oracle.attention(q, k, eye), "attention weights (V = I)", env.tol, bugs)


@pytest.mark.clause("3.2.1/mask")
def test_mask(clause: Check, env: Env, rng: torch.Generator) -> None:
    """Masked keys get weight exactly 0: the output ignores their keys and values. An adapter
    that refuses some masks (``NotProvided``: an implementation that masks by key lengths has
    no mask with holes) is judged on the others."""
    attention = clause.require("attention")

    @settings()
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        with clause.part("masked attention"):
            example(data)

    def example(data: st.DataObject) -> None:
        b, lq, lk, dk, dv = data.draw(attention_shapes())
        mask = data.draw(key_masks(b, lq, lk)).to(env.device)
        q, k, v = _inputs(env, rng, b, lq, lk, dk, dv)
        expected = oracle.attention(q, k, v, mask)
        bugs = {"mask-ignored": oracle.attention(q, k, v), "mask-inverted":
                oracle.attention(q, k, v, ~mask), **_scale_bugs(q, k, v, mask)}
        clause.close(attention(q, k, v, mask), expected, "masked attention", env.tol, bugs)
        # values behind the mask must not matter at all
        hidden = ~mask.any(dim=1).unsqueeze(-1)  # [b, lk, 1]: keys that no query may see
        v2 = torch.where(hidden, v + 100 * env.randn(b, lk, dv, generator=rng), v)
        changed = attention(q, k, v2, mask)
        clause.close(changed, expected, "masked attention with changed hidden values", env.tol)

    check()
    clause.parts_done()


@pytest.mark.clause("3.2.1/permutation")
def test_permutation(clause: Check, env: Env, rng: torch.Generator) -> None:
    """Permuting keys with values leaves the output; permuting queries permutes its rows."""
    attention = clause.require("attention")

    @settings()
    @given(shape=attention_shapes(), seed=st.integers(0, 2**16))
    def check(shape: tuple[int, int, int, int, int], seed: int) -> None:
        b, lq, lk, dk, dv = shape
        q, k, v = _inputs(env, rng, b, lq, lk, dk, dv)
        g = torch.Generator().manual_seed(seed)
        pk, pq = torch.randperm(lk, generator=g), torch.randperm(lq, generator=g)
        out = attention(q, k, v, None)
        permuted_keys = attention(q, k[:, pk], v[:, pk], None)
        clause.close(permuted_keys, out, "output after permuting keys and values", env.tol)
        permuted_queries = attention(q[:, pq], k, v, None)
        clause.close(permuted_queries, out[:, pq], "output after permuting queries", env.tol)

    check()
