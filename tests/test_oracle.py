"""The oracle against independent facts: hand computations, identities, and a second,
batched implementation built from torch.nn.functional (spec/oracle/)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from spec import oracle

F64 = torch.float64


def assert_tight(actual: Tensor, expected: Tensor, msg: str | None = None) -> None:
    """Equal up to float64 rounding (1e-12): the oracle's facts are exact."""
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12, msg=msg)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(g: torch.Generator, *shape: int, scale: float = 1.0) -> Tensor:
    return torch.randn(*shape, generator=g, dtype=F64) * scale


def attn_params(
    g: torch.Generator, d_model: int, h: int, *, biases: bool = False
) -> dict[str, Tensor]:
    d_k = d_model // h
    s = 1 / math.sqrt(d_model)
    p = {n: randn(g, h, d_model, d_k, scale=s) for n in ("W_Q", "W_K", "W_V")}
    p["W_O"] = randn(g, h * d_k, d_model, scale=s)
    if biases:
        p |= {n: randn(g, h, d_k, scale=0.1) for n in ("b_Q", "b_K", "b_V")}
        p["b_O"] = randn(g, d_model, scale=0.1)
    return p


def model_params(
    seed: int, d: int = 16, h: int = 4, d_ff: int = 32, n: int = 2, *, final_norm: bool = False
) -> dict[str, Tensor]:
    """Random canonical parameters of a whole model (entries O(1), activations O(1))."""
    g = gen(seed)
    p: dict[str, Tensor] = {}
    for side, attns, norms in (
        ("encoder", ["self_attn"], 2),
        ("decoder", ["self_attn", "cross_attn"], 3),
    ):
        for i in range(n):
            for a in attns:
                p |= {f"{side}.{i}.{a}.{k}": v for k, v in attn_params(g, d, h).items()}
            p[f"{side}.{i}.ffn.W_1"] = randn(g, d, d_ff, scale=d**-0.5)
            p[f"{side}.{i}.ffn.b_1"] = randn(g, d_ff, scale=0.1)
            p[f"{side}.{i}.ffn.W_2"] = randn(g, d_ff, d, scale=d_ff**-0.5)
            p[f"{side}.{i}.ffn.b_2"] = randn(g, d, scale=0.1)
            for k in range(1, norms + 1):
                p[f"{side}.{i}.norm_{k}.gamma"] = 1 + randn(g, d, scale=0.1)
                p[f"{side}.{i}.norm_{k}.beta"] = randn(g, d, scale=0.1)
        if final_norm:
            p[f"{side}.norm.gamma"] = 1 + randn(g, d, scale=0.1)
            p[f"{side}.norm.beta"] = randn(g, d, scale=0.1)
    return p


# -- 3.2.1 attention -------------------------------------------------------------------------

Q2 = torch.tensor([[1.0, 0.0], [2.0, 1.0]], dtype=F64)
K2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64)
V2 = torch.tensor([[1.0, 2.0, 0.0], [3.0, 4.0, 1.0]], dtype=F64)  # d_v = 3 != d_k = 2


def hand_attention(scale: float) -> Tensor:
    """softmax(Q K^T * scale) V for the 2x2 example, with math.exp."""
    rows = []
    for q in Q2.tolist():
        s = [scale * (q[0] * k[0] + q[1] * k[1]) for k in K2.tolist()]
        e = [math.exp(x) for x in s]
        w = [x / sum(e) for x in e]
        rows.append([w[0] * a + w[1] * b for a, b in zip(*V2.tolist(), strict=True)])
    return torch.tensor(rows, dtype=F64)


@pytest.mark.parametrize(
    ("scale", "factor"),
    [
        ("sqrt_dk", 1 / math.sqrt(2)),
        ("none", 1.0),
        ("dk", 0.5),
        ("sqrt_dmodel", 1 / math.sqrt(8)),
        (0.25, 0.25),
    ],
)
def test_attention_by_hand(scale: oracle.Scale, factor: float) -> None:
    out = oracle.attention(Q2, K2, V2, scale=scale, d_model=8)
    assert_tight(out, hand_attention(factor))


def test_attention_converts_to_float64() -> None:
    out = oracle.attention(Q2.float(), K2.float(), V2.float())
    assert out.dtype == F64
    torch.testing.assert_close(out, hand_attention(1 / math.sqrt(2)), rtol=1e-6, atol=1e-6)


def test_scale_knobs_differ_and_need_d_model() -> None:
    correct = oracle.attention(Q2, K2, V2)
    for scale in ("none", "dk"):
        assert not torch.allclose(oracle.attention(Q2, K2, V2, scale=scale), correct)
    with pytest.raises(ValueError, match="d_model"):
        oracle.attention(Q2, K2, V2, scale="sqrt_dmodel")
    with pytest.raises(ValueError, match="unknown scale"):
        oracle.attention(Q2, K2, V2, scale="sqrt")  # type: ignore[arg-type]


def test_softmax_over_queries_normalises_columns() -> None:
    w = oracle.attention_weights(Q2, K2, softmax_axis="queries")
    assert_tight(w.sum(dim=-2), torch.ones(2, dtype=F64))
    assert not torch.allclose(w, oracle.attention_weights(Q2, K2))
    with pytest.raises(ValueError, match="softmax_axis"):
        oracle.attention_weights(Q2, K2, softmax_axis="rows")  # type: ignore[arg-type]


@st.composite
def attention_inputs(draw: st.DrawFn) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    b, lq, lk = draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    d_k, d_v = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    g = gen(draw(st.integers(0, 2**16)))
    mask = torch.rand(b, lq, lk, generator=g) < 0.7
    mask[..., 0] = True  # every query may see at least one key
    return randn(g, b, lq, d_k), randn(g, b, lk, d_k), randn(g, b, lk, d_v), mask


@settings(max_examples=40, deadline=None)
@given(attention_inputs())
def test_weights_are_a_distribution_over_allowed_keys(
    inputs: tuple[Tensor, Tensor, Tensor, Tensor],
) -> None:
    q, k, v, mask = inputs
    w = oracle.attention_weights(q, k, v, mask)
    assert w.shape == mask.shape
    assert bool((w >= 0).all())
    assert_tight(w.sum(-1), torch.ones(mask.shape[:-1], dtype=F64))
    assert bool((w[~mask] == 0).all())  # exactly zero, not tiny
    # The output does not depend on keys or values at masked positions (3.2.1/mask).
    out = oracle.attention(q, k, v, mask)
    hidden = (~mask).all(dim=1)  # keys masked for every query: [B, Lk]
    k2, v2 = k.clone(), v.clone()
    k2[hidden], v2[hidden] = 1e3, -1e3
    assert torch.equal(oracle.attention(q, k2, v2, mask), out)
    # The unmasked reference (torch's softmax) where nothing is masked.
    expected = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), -1) @ v
    assert_tight(oracle.attention(q, k, v), expected)


@settings(max_examples=25, deadline=None)
@given(attention_inputs(), st.integers(0, 1000))
def test_permutation_equivariance(inputs: tuple[Tensor, Tensor, Tensor, Tensor], seed: int) -> None:
    q, k, v, _ = inputs
    pk = torch.randperm(k.shape[1], generator=gen(seed))
    pq = torch.randperm(q.shape[1], generator=gen(seed + 1))
    out = oracle.attention(q, k, v)
    assert_tight(oracle.attention(q, k[:, pk], v[:, pk]), out)
    assert_tight(oracle.attention(q[:, pq], k, v), out[:, pq])


def test_fully_masked_row_gives_zeros() -> None:
    mask = torch.tensor([[True, False], [False, False]])
    w = oracle.attention_weights(Q2, K2, mask=mask)
    out = oracle.attention(Q2, K2, V2, mask)
    assert torch.equal(w[1], torch.zeros(2, dtype=F64))
    assert torch.equal(out[1], torch.zeros(3, dtype=F64))
    assert torch.equal(w[0], torch.tensor([1.0, 0.0], dtype=F64))
    assert not out.isnan().any()


def test_mask_must_be_bool_and_broadcasts() -> None:
    with pytest.raises(TypeError, match="bool"):
        oracle.attention(Q2, K2, V2, torch.ones(2, 2))
    q, k, v = randn(gen(0), 3, 4, 2), randn(gen(1), 3, 5, 2), randn(gen(2), 3, 5, 2)
    valid = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    out = oracle.attention(q, k, v, oracle.padding_mask(valid))
    for b in range(3):
        n = int(valid[b].sum())
        assert_tight(out[b], oracle.attention(q[b], k[b, :n], v[b, :n]))


def test_causal_mask() -> None:
    assert torch.equal(
        oracle.causal_mask(3),
        torch.tensor([[True, False, False], [True, True, False], [True, True, True]]),
    )
    assert torch.equal(oracle.causal_mask(3, offset=1)[0], torch.tensor([True, True, False]))
    assert not oracle.causal_mask(3, offset=-1)[0].any()  # row 0 fully masked


@pytest.mark.parametrize("offset", [-1, 1, 2])
def test_mask_offset_shifts_a_causal_mask(offset: int) -> None:
    g = gen(3)
    q, k, v = randn(g, 2, 5, 4), randn(g, 2, 5, 4), randn(g, 2, 5, 3)
    shifted = oracle.attention(q, k, v, oracle.causal_mask(5), mask_offset=offset)
    expected = oracle.attention(q, k, v, oracle.causal_mask(5, offset))
    assert_tight(shifted, expected)
    assert not torch.allclose(shifted, oracle.attention(q, k, v, oracle.causal_mask(5)))


def test_padding_mask_shape_and_type() -> None:
    valid = torch.tensor([[True, True, False]])
    assert oracle.padding_mask(valid).shape == (1, 1, 3)
    with pytest.raises(TypeError, match="bool"):
        oracle.padding_mask(valid.long())


# -- 3.2.2 multi-head attention --------------------------------------------------------------


def batched_multi_head(q: Tensor, k: Tensor, v: Tensor, p: dict[str, Tensor]) -> Tensor:
    """An independent, batched (einsum) multi-head attention."""
    qh = torch.einsum("bld,hdk->bhlk", q, p["W_Q"]) + p.get("b_Q", torch.zeros(1))[:, None]
    kh = torch.einsum("bld,hdk->bhlk", k, p["W_K"]) + p.get("b_K", torch.zeros(1))[:, None]
    vh = torch.einsum("bld,hdk->bhlk", v, p["W_V"]) + p.get("b_V", torch.zeros(1))[:, None]
    heads = F.scaled_dot_product_attention(qh, kh, vh)  # [B, h, L, d_v]
    concat = heads.transpose(1, 2).reshape(q.shape[0], q.shape[1], -1)
    return concat @ p["W_O"] + p.get("b_O", torch.zeros(1))


@pytest.mark.parametrize("biases", [False, True])
def test_multi_head_matches_batched_form(biases: bool) -> None:
    g = gen(4)
    p = attn_params(g, 16, 4, biases=biases)
    q, kv = randn(g, 2, 5, 16), randn(g, 2, 7, 16)
    assert_tight(oracle.multi_head(q, kv, kv, p), batched_multi_head(q, kv, kv, p))


def test_multi_head_one_head_identity_weights_is_attention() -> None:
    g = gen(5)
    x, y = randn(g, 2, 4, 6), randn(g, 2, 3, 6)
    eye = torch.eye(6, dtype=F64)
    p = {"W_Q": eye[None], "W_K": eye[None], "W_V": eye[None], "W_O": eye}
    mask = torch.tensor([True, True, False])
    assert_tight(oracle.multi_head(x, y, y, p, mask), oracle.attention(x, y, y, mask))


def mh_inputs() -> tuple[Tensor, dict[str, Tensor]]:
    g = gen(6)
    return randn(g, 2, 5, 16), attn_params(g, 16, 4, biases=True)


def test_every_multi_head_bug_changes_the_output() -> None:
    x, p = mh_inputs()
    correct = oracle.multi_head(x, x, x, p)
    for bug in oracle.MULTI_HEAD_BUGS:
        out = oracle.multi_head(x, x, x, p, bug=bug)
        assert out.shape == correct.shape
        assert (out - correct).abs().max() > 1e-3, bug
    with pytest.raises(ValueError, match="known: no-scale"):
        oracle.multi_head(x, x, x, p, bug="typo")


@pytest.mark.parametrize(
    ("bug", "q_factor"), [("no-scale", 2.0), ("scale-dk", 0.5), ("scale-dmodel", 0.5)]
)
def test_scale_bugs_equal_rescaled_queries(bug: str, q_factor: float) -> None:
    # d_k = 4, d_model = 16: 1 = 2 / sqrt(d_k), 1/d_k = 0.5 / sqrt(d_k), 1/sqrt(16) likewise.
    x, p = mh_inputs()
    rescaled = dict(p, W_Q=p["W_Q"] * q_factor, b_Q=p["b_Q"] * q_factor)
    assert_tight(oracle.multi_head(x, x, x, p, bug=bug), oracle.multi_head(x, x, x, rescaled))


def test_slice_input_equals_block_diagonal_projections() -> None:
    x, p = mh_inputs()
    blocked = dict(p)
    for name in ("W_Q", "W_K", "W_V"):
        w = p[name].clone()
        for i in range(4):
            keep = torch.zeros(16, dtype=torch.bool)
            keep[i * 4 : (i + 1) * 4] = True
            w[i, ~keep] = 0.0  # head i sees input features [4i, 4i+4) only
        blocked[name] = w
    assert_tight(
        oracle.multi_head(x, x, x, p, bug="slice-input"),
        oracle.multi_head(x, x, x, blocked),
    )


def test_no_output_projection_returns_the_concatenation() -> None:
    x, p = mh_inputs()
    identity = dict(p, W_O=torch.eye(16, dtype=F64))
    del identity["b_O"]
    assert_tight(
        oracle.multi_head(x, x, x, p, bug="no-output-projection"),
        oracle.multi_head(x, x, x, identity),
    )


def test_concat_without_transpose_is_harmless_only_for_one_query() -> None:
    x, p = mh_inputs()
    one = x[:, :1]
    assert_tight(
        oracle.multi_head(one, x, x, p, bug="concat-without-transpose"),
        oracle.multi_head(one, x, x, p),
    )


# -- 3.1 LayerNorm, 3.3 FFN ------------------------------------------------------------------


def test_layer_norm_standardises() -> None:
    x = randn(gen(7), 3, 5, 8, scale=3.0) + 2.0
    ones, zeros = torch.ones(8, dtype=F64), torch.zeros(8, dtype=F64)
    y = oracle.layer_norm(x, ones, zeros, eps=0.0)
    assert_tight(y.mean(-1), torch.zeros(3, 5, dtype=F64))
    assert_tight(y.var(-1, unbiased=False), torch.ones(3, 5, dtype=F64))
    gamma, beta = randn(gen(8), 8), randn(gen(9), 8)
    assert_tight(oracle.layer_norm(x, gamma, beta), F.layer_norm(x, (8,), gamma, beta, 1e-5))
    for knob in ({"unbiased": True}, {"eps_inside_sqrt": False}):
        assert not torch.allclose(oracle.layer_norm(x, gamma, beta, 0.1, **knob),
                                  oracle.layer_norm(x, gamma, beta, 0.1))  # fmt: skip


def test_feed_forward_by_hand() -> None:
    p = {
        "W_1": torch.tensor([[1.0, -1.0]]),
        "b_1": torch.zeros(2),
        "W_2": torch.tensor([[1.0], [1.0]]),
        "b_2": torch.tensor([0.5]),
    }
    x = torch.tensor([[2.0], [-3.0]])
    assert_tight(oracle.feed_forward(x, p), torch.tensor([[2.5], [3.5]], dtype=F64))
    torch.testing.assert_close(
        oracle.feed_forward(x, p, activation="none"), torch.tensor([[0.5], [0.5]], dtype=F64)
    )
    gelu = oracle.feed_forward(x, p, activation="gelu")
    torch.testing.assert_close(
        gelu, F.gelu(x.double() @ p["W_1"].double()).sum(-1, keepdim=True) + 0.5
    )
    with pytest.raises(ValueError, match="activation"):
        oracle.feed_forward(x, p, activation="tanh")  # type: ignore[arg-type]


def test_feed_forward_is_position_wise() -> None:
    p = {k.removeprefix("encoder.0.ffn."): v for k, v in model_params(10).items() if ".0.ffn." in k}
    x = randn(gen(11), 2, 6, 16)
    perm = torch.randperm(6, generator=gen(12))
    out = oracle.feed_forward(x, p)
    assert_tight(oracle.feed_forward(x[:, perm], p), out[:, perm])
    assert_tight(oracle.feed_forward(x[:, 2], p), out[:, 2])


# -- 3.5 positional encoding, 3.4 embeddings -------------------------------------------------


def test_pe_by_hand() -> None:
    pe = oracle.positional_encoding(3, 4)
    assert pe.dtype == F64 and pe.shape == (3, 4)
    assert pe[0].tolist() == [0.0, 1.0, 0.0, 1.0]
    assert pe[1, 0].item() == math.sin(1) and pe[1, 1].item() == math.cos(1)
    for pos in range(3):  # 10000^(2/4) = 100
        assert pe[pos, 2].item() == pytest.approx(math.sin(pos / 100), abs=1e-15)
        assert pe[pos, 3].item() == pytest.approx(math.cos(pos / 100), abs=1e-15)
    big = oracle.positional_encoding(60, 512)
    assert big[50, 300].item() == pytest.approx(math.sin(50 / 10000 ** (300 / 512)), abs=1e-15)
    assert big[50, 301].item() == pytest.approx(math.cos(50 / 10000 ** (300 / 512)), abs=1e-15)


def test_pe_odd_width_ends_with_a_sine() -> None:
    pe = oracle.positional_encoding(4, 5)
    assert pe[3, 4].item() == pytest.approx(math.sin(3 / 10000 ** (4 / 5)), abs=1e-15)


def test_pe_knobs_by_hand() -> None:
    p = 3.0
    cases = {
        "concatenated": (
            {"layout": "concatenated"},
            [math.sin(p), math.sin(p / 100), math.cos(p), math.cos(p / 100)],
        ),
        "swapped": (
            {"swap_sin_cos": True},
            [math.cos(p), math.sin(p), math.cos(p / 100), math.sin(p / 100)],
        ),
        "exponent i": (
            {"exponent": "i"},
            [math.sin(p), math.cos(p), math.sin(p / 10), math.cos(p / 10)],
        ),
        "exponent column": (
            {"exponent": "column"},
            [math.sin(p), math.cos(p / 10), math.sin(p / 100), math.cos(p / 1000)],
        ),
        "t2t": (
            {"exponent": "t2t"},
            [math.sin(p), math.cos(p), math.sin(p / 10000), math.cos(p / 10000)],
        ),
        "base": ({"base": 16.0}, [math.sin(p), math.cos(p), math.sin(p / 4), math.cos(p / 4)]),
    }
    for name, (knobs, row) in cases.items():
        pe = oracle.positional_encoding(4, 4, **knobs)  # type: ignore[arg-type]
        assert_tight(pe[3], torch.tensor(row, dtype=F64), msg=name)
    one_based = oracle.positional_encoding(3, 4, start=1)
    assert_tight(one_based, oracle.positional_encoding(4, 4)[1:])


def test_pe_bad_knobs() -> None:
    with pytest.raises(ValueError, match="layout"):
        oracle.positional_encoding(2, 4, layout="split")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="even"):
        oracle.positional_encoding(2, 5, layout="concatenated")
    with pytest.raises(ValueError, match="exponent"):
        oracle.positional_encoding(2, 4, exponent="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="t2t"):
        oracle.positional_encoding(2, 2, exponent="t2t")


def test_pe_returns_a_fresh_tensor() -> None:
    a = oracle.positional_encoding(3, 4)
    a.zero_()
    assert oracle.positional_encoding(3, 4)[1, 0].item() == math.sin(1)


def rotation(k: int, d_model: int) -> Tensor:
    """R_k: the block-diagonal rotation with PE(pos + k) = R_k PE(pos) (interleaved layout)."""
    r = torch.zeros(d_model, d_model, dtype=F64)
    for i in range(d_model // 2):
        a = k / 10000 ** (2 * i / d_model)
        # sin(x + a) = sin x cos a + cos x sin a;  cos(x + a) = cos x cos a - sin x sin a
        r[2 * i, 2 * i], r[2 * i, 2 * i + 1] = math.cos(a), math.sin(a)
        r[2 * i + 1, 2 * i], r[2 * i + 1, 2 * i + 1] = -math.sin(a), math.cos(a)
    return r


@pytest.mark.parametrize("k", [1, 5, 17])
def test_pe_relative_linear(k: int) -> None:
    d = 16
    pe = oracle.positional_encoding(40 + k, d)
    shifted = pe[:40] @ rotation(k, d).T
    torch.testing.assert_close(shifted, pe[k : 40 + k], rtol=0, atol=1e-12)


def test_pe_wavelengths_geometric() -> None:
    d = 8
    pe = oracle.positional_encoding(2, d)
    # Column 2i at pos 1 is sin(omega_i): recover omega_i, then lambda_i = 2 pi / omega_i.
    omegas = [math.asin(pe[1, 2 * i].item()) for i in range(d // 2)]
    lambdas = [2 * math.pi / w for w in omegas]
    assert lambdas[0] == pytest.approx(2 * math.pi)
    ratios = [b / a for a, b in itertools.pairwise(lambdas)]
    assert ratios == pytest.approx([10000 ** (2 / d)] * (d // 2 - 1))
    assert lambdas[-1] < 10000 * 2 * math.pi


def test_embed() -> None:
    g = gen(13)
    E = randn(g, 7, 4)
    ids = torch.tensor([[3, 0, 6], [1, 1, 2]])
    expected = E[ids] * 2.0 + oracle.positional_encoding(3, 4)  # sqrt(4) = 2
    assert_tight(oracle.embed(ids, E), expected)
    assert_tight(oracle.embed(ids, E, scale=False), E[ids] + oracle.positional_encoding(3, 4))
    learned = randn(g, 10, 4)
    assert_tight(oracle.embed(ids, E, positions=learned), E[ids] * 2.0 + learned[:3])


# -- 3.1 stacks ------------------------------------------------------------------------------


def reference_stacks(
    x: Tensor, y: Tensor, p: dict[str, Tensor], n: int, h: int, valid: Tensor
) -> tuple[Tensor, Tensor]:
    """An independent batched encoder-decoder from torch.nn.functional, in float64."""

    def sub(prefix: str) -> dict[str, Tensor]:
        return {k[len(prefix) + 1 :]: v for k, v in p.items() if k.startswith(prefix + ".")}

    def mha(q: Tensor, kv: Tensor, a: dict[str, Tensor], mask: Tensor) -> Tensor:
        d, dk = q.shape[-1], q.shape[-1] // h

        def heads(t: Tensor, w: Tensor) -> Tensor:
            full = w.permute(1, 0, 2).reshape(d, d)  # [d_model, h*d_k], head-major columns
            return (t @ full).view(t.shape[0], t.shape[1], h, dk).transpose(1, 2)

        o = F.scaled_dot_product_attention(
            heads(q, a["W_Q"]), heads(kv, a["W_K"]), heads(kv, a["W_V"]), attn_mask=mask
        )
        return o.transpose(1, 2).reshape(q.shape) @ a["W_O"]

    def ln(t: Tensor, prefix: str) -> Tensor:
        s = sub(prefix)
        return F.layer_norm(t, t.shape[-1:], s["gamma"], s["beta"], 1e-5)

    def ffn(t: Tensor, prefix: str) -> Tensor:
        s = sub(prefix)
        return F.relu(t @ s["W_1"] + s["b_1"]) @ s["W_2"] + s["b_2"]

    src = valid[:, None, None, :]
    m = x
    for i in range(n):
        e = f"encoder.{i}"
        m = ln(m + mha(m, m, sub(f"{e}.self_attn"), src), f"{e}.norm_1")
        m = ln(m + ffn(m, f"{e}.ffn"), f"{e}.norm_2")
    causal = torch.ones(y.shape[1], y.shape[1], dtype=torch.bool).tril()
    t = y
    for i in range(n):
        dd = f"decoder.{i}"
        t = ln(t + mha(t, t, sub(f"{dd}.self_attn"), causal), f"{dd}.norm_1")
        t = ln(t + mha(t, m, sub(f"{dd}.cross_attn"), src), f"{dd}.norm_2")
        t = ln(t + ffn(t, f"{dd}.ffn"), f"{dd}.norm_3")
    return m, t


def stack_inputs(seed: int = 14) -> tuple[Tensor, Tensor, Tensor]:
    g = gen(seed)
    valid = torch.ones(2, 6, dtype=torch.bool)
    valid[1, 4:] = False
    return randn(g, 2, 6, 16), randn(g, 2, 5, 16), valid


def test_stacks_match_an_independent_batched_implementation() -> None:
    p = model_params(15)
    x, y, valid = stack_inputs()
    memory = oracle.encoder(x, p, 2, 4, valid)
    out = oracle.decoder(y, memory, p, 2, 4, valid)
    ref_memory, ref_out = reference_stacks(x, y, p, 2, 4, valid)
    assert_tight(memory, ref_memory)
    assert_tight(out, ref_out)


def test_decoder_is_causal_and_offset_bug_is_not() -> None:
    p = model_params(16)
    x, y, valid = stack_inputs()
    memory = oracle.encoder(x, p, 2, 4, valid)
    y2 = y.clone()
    y2[:, 3:] = randn(gen(17), 2, 2, 16)  # change target positions >= 3
    for offset, causal in ((0, True), (1, False)):
        a = oracle.decoder(y, memory, p, 2, 4, valid, causal_offset=offset)
        b = oracle.decoder(y2, memory, p, 2, 4, valid, causal_offset=offset)
        assert torch.equal(a[:, :3], b[:, :3]) is causal


def test_padding_content_does_not_leak() -> None:
    p = model_params(18)
    x, y, valid = stack_inputs()
    x2 = x.clone()
    x2[1, 4:] = 100.0
    m1, m2 = oracle.encoder(x, p, 2, 4, valid), oracle.encoder(x2, p, 2, 4, valid)
    assert_tight(m1[1, :4], m2[1, :4])
    assert_tight(oracle.decoder(y, m1, p, 2, 4, valid), oracle.decoder(y, m2, p, 2, 4, valid))


def test_norm_placements_and_final_norm() -> None:
    p = model_params(19, final_norm=True)
    x, y, valid = stack_inputs()
    post = oracle.encoder(x, p, 2, 4, valid, final_norm=False)
    with_final = oracle.encoder(x, p, 2, 4, valid)  # encoder.norm.* present: applied
    g, b = p["encoder.norm.gamma"], p["encoder.norm.beta"]
    assert_tight(with_final, oracle.layer_norm(post, g, b))
    variants = {
        norm: oracle.encoder(x, p, 2, 4, valid, norm=norm, final_norm=False)
        for norm in ("pre", "no-residual", "no-norm")
    }
    for norm, out in variants.items():
        assert (out - post).abs().max() > 1e-2, norm
    with pytest.raises(ValueError, match="unknown norm"):
        oracle.encoder(x, p, 1, 4, valid, norm="sandwich")  # type: ignore[arg-type]
    dec = oracle.decoder(y, post, p, 2, 4, valid, final_norm=False)
    dec_final = oracle.decoder(y, post, p, 2, 4, valid)
    assert_tight(dec_final, oracle.layer_norm(dec, p["decoder.norm.gamma"], p["decoder.norm.beta"]))
    with pytest.raises(KeyError):
        oracle.encoder(x, model_params(19), 1, 4, valid, final_norm=True)


def test_layer_one_by_hand_pre_norm() -> None:
    p = model_params(20)
    x, _, valid = stack_inputs()

    def sub(prefix: str) -> dict[str, Tensor]:
        return {k[len(prefix) + 1 :]: v for k, v in p.items() if k.startswith(prefix + ".")}

    n1, n2 = sub("encoder.0.norm_1"), sub("encoder.0.norm_2")
    a = oracle.layer_norm(x, n1["gamma"], n1["beta"])
    h1 = x + oracle.multi_head(a, a, a, sub("encoder.0.self_attn"), oracle.padding_mask(valid))
    expected = h1 + oracle.feed_forward(
        oracle.layer_norm(h1, n2["gamma"], n2["beta"]), sub("encoder.0.ffn")
    )
    out = oracle.encoder_layer(x, p, "encoder.0", 4, valid, norm="pre")
    assert_tight(out, expected)


def test_layers_use_their_own_parameters_and_bugs_propagate() -> None:
    p = model_params(21)
    x, y, valid = stack_inputs()
    one = oracle.encoder(x, p, 1, 4, valid)
    assert torch.equal(one, oracle.encoder_layer(x, p, "encoder.0", 4, valid))
    two = oracle.encoder(x, p, 2, 4, valid)
    assert torch.equal(two, oracle.encoder_layer(one, p, "encoder.1", 4, valid))
    assert torch.equal(oracle.encoder(x, p, 0, 4, valid), x)
    buggy = oracle.decoder(y, two, p, 2, 4, valid, bug="no-scale")
    assert (buggy - oracle.decoder(y, two, p, 2, 4, valid)).abs().max() > 1e-2


def test_head_count_is_checked() -> None:
    p = model_params(22)
    x, y, valid = stack_inputs()
    with pytest.raises(ValueError, match="expected h=2"):
        oracle.encoder(x, p, 1, 2, valid)
    with pytest.raises(KeyError, match=r"decoder\.0\.self_attn\.W_Q"):
        oracle.decoder(y, x, {}, 1, 4, valid)


def test_project() -> None:
    g = gen(23)
    y, W, b = randn(g, 2, 3, 4), randn(g, 4, 9), randn(g, 9)
    assert_tight(oracle.project(y, {"generator.W": W}), y @ W)
    assert_tight(oracle.project(y, {"generator.W": W, "generator.b": b}), y @ W + b)


# -- 5.4 label smoothing, 5.3 schedule -------------------------------------------------------


def test_smoothed_targets_values() -> None:
    target = torch.tensor([3, 0, 1])  # pad_id = 0
    q = oracle.smoothed_targets(target, 5, 0.1, 0)
    expected = torch.tensor(
        [
            [0.0, 0.1 / 3, 0.1 / 3, 0.9, 0.1 / 3],
            [0.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 0.9, 0.1 / 3, 0.1 / 3, 0.1 / 3],
        ],
        dtype=F64,
    )
    assert_tight(q, expected)
    excl = oracle.smoothed_targets(target, 5, 0.1, 0, spread="excluding-true")
    torch.testing.assert_close(excl[0], torch.tensor([0.025, 0.025, 0.025, 0.9, 0.025], dtype=F64))
    every = oracle.smoothed_targets(target, 5, 0.1, 0, spread="all")
    torch.testing.assert_close(every[0], torch.tensor([0.02, 0.02, 0.02, 0.92, 0.02], dtype=F64))
    for spread in ("excluding-true-and-pad", "excluding-true", "all"):
        rows = oracle.smoothed_targets(target, 5, 0.1, 0, spread=spread).sum(-1)
        assert_tight(rows, torch.tensor([1.0, 0.0, 1.0], dtype=F64))


def test_smoothed_targets_errors_and_no_pad() -> None:
    with pytest.raises(ValueError, match="pad_id"):
        oracle.smoothed_targets(torch.tensor([1]), 5, 0.1, None)
    with pytest.raises(ValueError, match="spread"):
        oracle.smoothed_targets(torch.tensor([1]), 5, 0.1, 0, spread="half")  # type: ignore[arg-type]
    q = oracle.smoothed_targets(torch.tensor([0, 4]), 5, 0.2, None, spread="excluding-true")
    assert q.sum().item() == pytest.approx(2.0)


def test_loss_without_smoothing_is_cross_entropy() -> None:
    g = gen(24)
    logits = randn(g, 2, 4, 6, scale=2.0)
    target = torch.tensor([[1, 2, 5, 0], [3, 0, 0, 0]])
    loss = oracle.label_smoothed_loss(logits, target, 0.0, 0)
    expected = F.cross_entropy(logits.reshape(-1, 6), target.reshape(-1), ignore_index=0)
    assert_tight(loss, expected)
    total = oracle.label_smoothed_loss(logits, target, 0.0, 0, reduction="sum")
    assert_tight(total, expected * 4)
    all_pad = oracle.label_smoothed_loss(logits, torch.zeros(2, 4, dtype=torch.long), 0.1, 0)
    assert all_pad.item() == 0.0


def test_kl_form_subtracts_the_target_entropy() -> None:
    target = torch.tensor([2, 1, 3])
    q = oracle.smoothed_targets(target, 4, 0.1, None, spread="all")
    logits = torch.log(q)  # the model predicting exactly the smoothed target
    kl = oracle.label_smoothed_loss(logits, target, 0.1, None, spread="all", kl=True)
    assert abs(kl.item()) < 1e-12
    ce = oracle.label_smoothed_loss(logits, target, 0.1, None, spread="all")
    entropy = -(q * torch.log(q)).sum(-1).mean()
    assert_tight(ce, entropy)
    # With the padding column at zero, 0 log 0 counts as 0.
    kl_pad = oracle.label_smoothed_loss(torch.zeros(3, 4), target, 0.1, 0, kl=True)
    assert math.isfinite(kl_pad.item()) and kl_pad.item() > 0


def test_noam_schedule() -> None:
    lrs = [oracle.noam_lr(s, 512) for s in range(1, 12001)]
    peak = max(range(len(lrs)), key=lrs.__getitem__) + 1
    assert peak == 4000
    assert lrs[3999] == pytest.approx(512**-0.5 * 4000**-0.5)
    assert all(a < b for a, b in itertools.pairwise(lrs[:4000]))
    assert all(a > b for a, b in itertools.pairwise(lrs[3999:]))
    assert oracle.noam_lr(1, 512) == pytest.approx(512**-0.5 * 4000**-1.5)
    assert oracle.noam_lr(16000, 512, warmup=4000) == pytest.approx(512**-0.5 / 16000**0.5)
    with pytest.raises(ValueError, match="step >= 1"):
        oracle.noam_lr(0, 512)


# -- 6.1 beam search, Table 3 ----------------------------------------------------------------

BOS, EOS, A, B = 1, 2, 3, 4
V = 5


Step = Callable[[list[list[int]]], Tensor]


def table_model(table: dict[tuple[int, ...], dict[int, float]], default: dict[int, float]) -> Step:
    """A fake model: next-token log-probs looked up by the whole prefix."""

    def step(prefixes: list[list[int]]) -> Tensor:
        out = torch.full((len(prefixes), V), -20.0, dtype=F64)
        for row, prefix in enumerate(prefixes):
            for token, lp in table.get(tuple(prefix), default).items():
                out[row, token] = lp
        return out

    return step


def greedy(step: Step, max_len: int) -> list[int]:
    seq = [BOS]
    for _ in range(max_len):
        token = int(step([seq])[0].argmax())
        seq.append(token)
        if token == EOS:
            break
    return seq[1:]


def test_length_penalty() -> None:
    assert oracle.length_penalty(1) == 1.0
    assert oracle.length_penalty(2, 0.6) == pytest.approx((7 / 6) ** 0.6)
    assert oracle.length_penalty(10, 0.0) == 1.0


def test_beam_one_is_greedy() -> None:
    g = gen(25)
    table: dict[tuple[int, ...], dict[int, float]] = {}
    for a in range(V):
        for b in range(V):
            table[(BOS, a, b)] = dict(enumerate(torch.log_softmax(randn(g, V), -1).tolist()))
        table[(BOS, a)] = dict(enumerate(torch.log_softmax(randn(g, V), -1).tolist()))
    table[(BOS,)] = dict(enumerate(torch.log_softmax(randn(g, V), -1).tolist()))
    step = table_model(table, {EOS: 0.0})
    for max_len in (1, 2, 5):
        assert oracle.beam_search(step, BOS, EOS, max_len, beam_size=1) == greedy(step, max_len)


def test_length_penalty_changes_the_winner() -> None:
    # [eos] alone: log P = -0.9; [a, eos]: -0.55 + -0.40 = -0.95.
    # alpha = 0: -0.9 > -0.95, the short one wins.
    # alpha = 0.6: lp(1) = 1, lp(2) = (7/6)^0.6 = 1.0969, -0.95 / 1.0969 = -0.866 > -0.9.
    table = {
        (BOS,): {EOS: -0.9, A: -0.55, B: -5.0},
        (BOS, A): {EOS: -0.40, B: -1.2},
    }
    step = table_model(table, {EOS: -0.1, A: -3.0})
    assert oracle.beam_search(step, BOS, EOS, 10, beam_size=2, alpha=0.0) == [EOS]
    assert oracle.beam_search(step, BOS, EOS, 10, beam_size=2, alpha=0.6) == [A, EOS]


def test_beam_beats_greedy() -> None:
    # Greedy takes a (-0.4) then is stuck with -3; beam keeps b (-1.1) which ends at -0.1.
    table = {
        (BOS,): {A: -0.4, B: -1.1},
        (BOS, A): {EOS: -3.0, A: -3.0},
        (BOS, B): {EOS: -0.1},
    }
    step = table_model(table, {EOS: -5.0})
    assert greedy(step, 5) == [A, EOS]
    assert oracle.beam_search(step, BOS, EOS, 5, beam_size=2) == [B, EOS]


def test_beam_ended_hypotheses_keep_their_place() -> None:
    # Beam 2: [eos] ends at step 1 and keeps its place, so step 2 keeps one candidate only:
    # [a, b] (-0.5) beats [a, eos] (-0.7), which is never set aside. [a, b, eos] ends at -2.0
    # (-1.68 normalised), the second ended hypothesis: the search stops and [eos] (-1.0) wins.
    # Keeping two candidates at every step would set [a, eos] (-0.64 normalised) aside instead.
    table = {
        (BOS,): {A: -0.3, EOS: -1.0},
        (BOS, A): {B: -0.2, EOS: -0.4},
        (BOS, A, B): {EOS: -1.5},
    }
    step = table_model(table, {EOS: -0.1})
    assert oracle.beam_search(step, BOS, EOS, 10, beam_size=2) == [EOS]
    assert oracle.beam_search(step, BOS, EOS, 10, beam_size=2, fixed_width=True) == [A, EOS]


def test_a_pool_keeps_the_beam_full() -> None:
    # The table above, in a pool search of beam 2: [eos] goes to the pool at step 1 and takes
    # no place of the beam, so step 2 keeps [a, b] live and sets [a, eos] (-0.64 normalised)
    # aside, which beats [eos] (-1.0). Count: the pool is full, stop. Bound: [a, b] (-0.5, at
    # most -0.29 at lp(10)) could still win, go on; [a, b, eos] (-1.68) does not enter the
    # pool's best two, and no live one can beat them: stop.
    table = {
        (BOS,): {A: -0.3, EOS: -1.0},
        (BOS, A): {B: -0.2, EOS: -0.4},
        (BOS, A, B): {EOS: -1.5},
    }
    step = table_model(table, {EOS: -0.1})
    for stop in ("count", "bound"):
        assert oracle.pool_search(step, BOS, EOS, 10, beam_size=2, stop=stop) == [A, EOS]


def test_a_pool_search_stops_by_count_or_by_bound() -> None:
    # Beam 2. Step 1: [eos] (-1.0) to the pool, [a] (-0.1) live. Step 2: [a, b] (-0.2) live,
    # [a, eos] (-2.1, -1.91 normalised) to the pool. Count: two have ended, stop: [eos] wins.
    # Bound: [a, b] could reach -0.2 / lp(10) = -0.12 > -1.91, go on; step 3: [a, b, eos]
    # (-0.25, -0.21 normalised) replaces [a, eos] in the pool and wins, as in the paper's
    # reading (the beam shrinks to [a, b] after step 1, and stops at the second end).
    table = {
        (BOS,): {EOS: -1.0, A: -0.1},
        (BOS, A): {EOS: -2.0, B: -0.1},
        (BOS, A, B): {EOS: -0.05},
    }
    step = table_model(table, {EOS: -0.1})
    assert oracle.pool_search(step, BOS, EOS, 10, beam_size=2, stop="count") == [EOS]
    assert oracle.pool_search(step, BOS, EOS, 10, beam_size=2, stop="bound") == [A, B, EOS]
    assert oracle.beam_search(step, BOS, EOS, 10, beam_size=2) == [A, B, EOS]


def test_a_pool_search_that_ends_nothing_returns_the_best_live() -> None:
    step = table_model({}, {A: -0.1, EOS: -40.0})
    for stop in ("count", "bound"):
        assert oracle.pool_search(step, BOS, EOS, 3, beam_size=1, stop=stop) == [A, A, A]
    with pytest.raises(ValueError, match="stop must be"):
        oracle.pool_search(step, BOS, EOS, 3, stop="never")


def test_beam_search_max_len_returns_unended() -> None:
    step = table_model({}, {A: -0.1, EOS: -4.0})
    assert oracle.beam_search(step, BOS, EOS, 3) == [A, A, A]


def test_beam_search_checks_the_callable() -> None:
    with pytest.raises(ValueError, match="n_prefixes=1"):
        oracle.beam_search(lambda prefixes: torch.zeros(V), BOS, EOS, 3)


def test_param_counts() -> None:
    base = oracle.param_count(512, 2048, 6, 37000)
    assert base["attention"] == 4 * 512**2 + 4 * 512
    assert base["ffn"] == 2 * 512 * 2048 + 2048 + 512
    assert base["layer_norm"] == 1024
    assert base["encoder_layer"] == base["attention"] + base["ffn"] + 2 * 1024
    assert base["decoder_layer"] == 2 * base["attention"] + base["ffn"] + 3 * 1024
    assert base["encoder"] + base["decoder"] == base["stacks"] == 44_138_496
    assert base["embeddings"] == 37000 * 512
    assert base["total"] == 63_082_496
    big = oracle.param_count(1024, 4096, 6, 37000)
    assert big["stacks"] == 176_357_376
    assert big["total"] == 214_245_376
    untied = oracle.param_count(512, 2048, 6, 37000, tied=False)
    assert untied["total"] == 44_138_496 + 3 * 37000 * 512  # about 101M
    assert oracle.param_count(1024, 4096, 6, 37000, tied=False)["total"] == pytest.approx(
        290e6, rel=0.01
    )


def test_scale_dk_and_scale_dmodel_differ_when_dk_squared_is_not_d_model() -> None:
    g = gen(26)
    x, p = randn(g, 1, 5, 32), attn_params(g, 32, 4)  # d_k = 8, d_k^2 = 64 != 32
    a = oracle.multi_head(x, x, x, p, bug="scale-dk")
    b = oracle.multi_head(x, x, x, p, bug="scale-dmodel")
    assert (a - b).abs().max() > 1e-3
