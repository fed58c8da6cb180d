"""Tests of the reference that kill mutants the other tests let survive (``nox -s mutation``).

Each asserts a property of the paper (Table 3, Eq. 3, section 3.4) or of the API contract:
exact values and error messages, dtypes, devices, shapes, what a cache holds. Devices are
checked on PyTorch's ``meta`` device, which runs on any machine and refuses to mix devices.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

import transformer as T
from spec import oracle
from tests.test_reference import small as config
from transformer.checkpoint import FORMAT
from transformer.masks import check_mask


def model_of(**overrides: object) -> T.Transformer:
    torch.manual_seed(0)
    return T.Transformer(config(**overrides)).eval()


def tokens(batch: int, length: int, seed: int, high: int = 17) -> torch.Tensor:
    return torch.randint(3, high, (batch, length), generator=torch.Generator().manual_seed(seed))


Step = Callable[[list[list[int]]], torch.Tensor]


def exactly(message: str) -> str:
    """A ``pytest.raises(match=)`` pattern for the whole message."""
    return "^" + re.escape(message) + "$"


# -- configuration (Table 3) ----------------------------------------------------------------
def test_base_and_big_follow_table_3() -> None:
    base, big = T.base(), T.big()
    for c in (base, big):  # section 6.1: a shared source-target vocabulary of 37000 tokens
        assert (c.src_vocab, c.tgt_vocab, c.share_vocab) == (37000, 37000, True)
        assert (c.n_layers, c.d_model // c.h, c.label_smoothing) == (6, 64, 0.1)  # d_k
    assert (base.d_model, base.d_ff, base.h, base.dropout) == (512, 2048, 8, 0.1)
    assert (big.d_model, big.d_ff, big.h, big.dropout) == (1024, 4096, 16, 0.3)
    untied = T.big(src_vocab=100, tgt_vocab=200)
    assert (untied.src_vocab, untied.tgt_vocab, untied.share_vocab) == (100, 200, False)
    assert untied.d_model == 1024


@pytest.mark.parametrize(("name", "value"), [("d_ff", 64.0), ("n_layers", True), ("h", 0)])
def test_config_sizes_must_be_positive_integers(name: str, value: object) -> None:
    with pytest.raises(
        ValueError, match=exactly(f"{name} must be a positive integer, got {value!r}")
    ):
        config(**{name: value})


def test_config_error_messages() -> None:
    with pytest.raises(
        ValueError, match=exactly("share_vocab needs src_vocab == tgt_vocab, got 17 and 20")
    ):
        config(tgt_vocab=20)
    for name in ("pad_id", "bos_id", "eos_id"):  # an id equal to the vocabulary size is out
        with pytest.raises(
            ValueError, match=exactly(f"{name} (17) must be a valid id in both vocabularies")
        ):
            config(**{name: 17})
    with pytest.raises(
        ValueError, match=exactly("eos_id (17) must be a valid id in both vocabularies")
    ):
        config(share_vocab=False, tgt_vocab=30, eos_id=17)  # the smaller vocabulary counts
    specials = "{'pad_id': 0, 'bos_id': 0, 'eos_id': 2}"
    with pytest.raises(
        ValueError, match=exactly(f"pad_id, bos_id and eos_id must differ, got {specials}")
    ):
        config(bos_id=0)


# -- masks and attention --------------------------------------------------------------------
def test_masks_are_made_on_the_requested_device() -> None:
    mask = T.causal_mask(3, device="meta", offset=2)
    assert mask.device.type == "meta" and mask.shape == (3, 5) and mask.dtype == torch.bool


def test_check_mask_accepts_what_broadcasts() -> None:
    for shape in ((4, 6), (6,), (3, 1, 6)):  # [L_q, L_k] (causal), [L_k], [B, 1, L_k] (padding)
        check_mask(torch.ones(shape, dtype=torch.bool), 3, 4, 6, name="mask")
    for shape in ((2, 4, 6), (4, 5), (1, 3, 4, 6)):
        with pytest.raises(ValueError, match="does not broadcast"):
            check_mask(torch.ones(shape, dtype=torch.bool), 3, 4, 6, name="mask")


def test_explicit_causal_attention_for_three_dimensional_inputs() -> None:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 5, 3, generator=g) for _ in range(3))  # [B, L, d_k], L != d_k
    out, weights = T.scaled_dot_product_attention(q, k, v, is_causal=True, need_weights=True)
    assert weights is not None and weights.shape == (2, 5, 5)
    assert bool((weights.triu(1) == 0).all())
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 5))
    fused, _ = T.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(out, fused, rtol=1e-5, atol=1e-6)


def test_explicit_attention_stays_on_the_inputs_device() -> None:
    q = torch.empty(2, 3, 5, 4, device="meta")
    out, weights = T.scaled_dot_product_attention(q, q, q, is_causal=True, need_weights=True)
    assert weights is not None and weights.device.type == out.device.type == "meta"
    assert weights.shape == (2, 3, 5, 5) and out.shape == (2, 3, 5, 4)


def test_cross_attention_keys_and_values_are_computed_once() -> None:
    torch.manual_seed(0)
    mha = T.MultiHeadAttention(16, 4)
    x, memory, other = torch.randn(2, 1, 16), torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    cache = T.KVCache()
    first, _ = mha(x, memory, cache=cache)
    assert cache.k is not None and cache.v is not None
    assert cache.k.shape == cache.v.shape == (2, 4, 5, 4)
    k, v = cache.k, cache.v
    again, _ = mha(x, other, cache=cache)  # the cached projections of `memory` are reused
    assert torch.equal(again, first) and cache.k is k and cache.v is v


# -- incremental decoding -------------------------------------------------------------------
def test_incremental_decoding_in_chunks_equals_full_pass() -> None:
    model = model_of()
    src, tgt = tokens(3, 6, seed=1), tokens(3, 8, seed=2)
    src[0, 4:] = 0
    memory, src_mask = model.encode(src), T.padding_mask(src, 0)
    full = model.decode(tgt, memory, src_mask)
    state = model.new_state()
    # after a cached prefix, several new positions at once need the shifted causal mask
    chunks = [
        model.decode(tgt[:, a:b], memory, src_mask, state)
        for a, b in ((0, 2), (2, 4), (4, 7), (7, 8))
    ]
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, rtol=1e-5, atol=1e-5)
    assert state.length == 8


def test_decoder_state_caches_self_and_encoder_keys_and_values() -> None:
    model = model_of()
    src, tgt = tokens(3, 6, seed=1), tokens(3, 4, seed=2)
    memory = model.encode(src)
    state = model.new_state()
    model.decode(tgt[:, :1], memory, None, state)
    model.decode(tgt[:, 1:3], memory, None, state)
    assert len(state.layers) == 2
    for layer in state.layers:  # [batch, h, length, d_k]
        assert layer.self_attn.k is not None and layer.self_attn.k.shape == (3, 4, 3, 8)
        assert layer.cross_attn.k is not None and layer.cross_attn.k.shape == (3, 4, 6, 8)
        assert layer.cross_attn.v is not None and layer.cross_attn.v.shape == (3, 4, 6, 8)


def test_decoder_runs_on_the_inputs_device() -> None:
    with torch.device("meta"):
        model = T.Transformer(config())
    memory = torch.empty(2, 5, 32, device="meta")
    state = model.new_state()
    model.decoder(torch.empty(2, 2, 32, device="meta"), memory, None, state.layers, 0)
    out = model.decoder(torch.empty(2, 3, 32, device="meta"), memory, None, state.layers, 2)
    assert out.device.type == "meta" and out.shape == (2, 3, 32)


# -- greedy decoding and beam search (6.1/beam-search) ---------------------------------------
def eos_logit(model: T.Transformer, shift: float) -> None:
    """Add ``shift`` to every eos logit the model produces (a hook on the output layer)."""
    eos = model.config.eos_id

    def hook(module: nn.Module, inputs: object, logits: torch.Tensor) -> torch.Tensor:
        return logits + shift * (torch.arange(logits.size(-1)) == eos)

    model.generator.register_forward_hook(hook)


def test_greedy_decodes_one_token_a_step_with_the_cache_and_the_prefix_without() -> None:
    model = model_of()
    eos_logit(model, -1e4)  # nothing ends: every step runs
    seen: list[tuple[int, bool]] = []
    decode = model.decode

    def spy(tgt_in: torch.Tensor, *args: object) -> torch.Tensor:
        seen.append((tgt_in.size(1), args[-1] is not None))  # (positions fed, cache given)
        return decode(tgt_in, *args)  # type: ignore[arg-type]

    model.decode = spy  # type: ignore[method-assign]
    src = tokens(2, 5, seed=1)
    cached = T.greedy_decode(model, src, max_len=4)
    assert seen == [(1, True)] * 4
    seen.clear()
    recomputed = T.greedy_decode(model, src, max_len=4, use_cache=False)
    assert seen == [(1, False), (2, False), (3, False), (4, False)]
    assert torch.equal(cached, recomputed) and cached.shape == (2, 4)


def test_greedy_length_limit_and_early_stop() -> None:
    model = model_of()
    src = tokens(2, 5, seed=1)
    eos_logit(model, -1e4)
    assert T.greedy_decode(model, src).shape == (2, 5 + 50)  # 6.1: input length + 50
    eos_logit(model, 2e4)  # now eos wins at once: decoding stops after one step
    eos = model.config.eos_id
    assert T.greedy_decode(model, src, max_len=9).tolist() == [[eos], [eos]]


def test_decoding_takes_int32_sources_and_returns_long_ids() -> None:
    model = model_of()
    src = tokens(2, 5, seed=1)
    expected = T.greedy_decode(model, src, max_len=6)
    assert torch.equal(T.greedy_decode(model, src.int(), max_len=6), expected)
    empty = T.greedy_decode(model, src.int(), max_len=0)
    assert empty.shape == (2, 0) and empty.dtype == torch.long
    assert T.beam_search(model, src[:1].int(), max_len=6) == T.beam_search(
        model, src[:1], max_len=6
    )


def test_decoding_ignores_source_padding() -> None:
    model = model_of()
    for seed in range(4):  # the encoder's padding positions must stay invisible to the decoder
        src = tokens(1, 4, seed=seed)
        padded = torch.cat([src, torch.zeros(1, 8, dtype=torch.long)], dim=1)
        assert T.beam_search(model, padded, max_len=12) == T.beam_search(model, src, max_len=12)
        batch = torch.cat([padded, tokens(1, 12, seed=6)])
        greedy = T.greedy_decode(model, batch, max_len=12)[:1]
        assert torch.equal(greedy, T.greedy_decode(model, src, 12))


def scripted(table: dict[int, dict[int, float]]) -> T.Transformer:
    """A model whose next-token probabilities depend only on the last token: ``table[last]``
    (other tokens get a negligible share), so that beam searches can be worked out by hand."""
    model = model_of()
    vocab = model.config.tgt_vocab
    logits = torch.full((vocab, vocab), -30.0)
    for last, row in table.items():
        for token, p in row.items():
            logits[last, token] = math.log(p)
    fed: list[torch.Tensor] = []
    model.tgt_embed.register_forward_pre_hook(lambda m, args: fed.append(args[0][:, -1]))
    model.generator.register_forward_hook(lambda m, i, out: logits[fed[-1]])
    return model


def test_length_penalty_decides_between_a_short_and_a_long_translation() -> None:
    """log P: [eos] -0.92, [A, eos] -1.71, [A, B, eos] -0.97. Divided by lp = ((5 + |Y|) / 6)^a:
    with a = 0 the short one wins; with the paper's a = 0.6 the long one (-0.82 > -0.92)."""
    c, a, b = config(), 3, 4
    bos, eos = c.bos_id, c.eos_id
    model = scripted({bos: {eos: 0.4, a: 0.6}, a: {eos: 0.3, b: 0.7}, b: {eos: 0.9, a: 0.1}})
    src = tokens(1, 4, seed=1)
    assert T.beam_search(model, src, alpha=0.0) == [eos]
    assert T.beam_search(model, src) == [a, b, eos]
    assert T.greedy_decode(model, src).tolist() == [[a, b, eos]]


def sharpened(src: torch.Tensor, scale: float, p_eos: float) -> T.Transformer:
    """A float64 model whose logits are scaled by ``scale`` and whose eos logit is shifted so
    that eos is the first token of the translation of ``src`` with probability ``p_eos``: its
    beam searches end at various lengths."""
    model = model_of().double()
    bos, eos = model.config.bos_id, model.config.eos_id
    with torch.no_grad():
        first = model.generator(model.decode(torch.tensor([[bos]]), model.encode(src), None))
    z = first[0, -1] * scale
    others = torch.cat([z[:eos], z[eos + 1 :]]).logsumexp(0)
    shift = math.log(p_eos / (1 - p_eos)) - float(z[eos] - others)
    is_eos = torch.arange(z.numel()) == eos
    model.generator.register_forward_hook(lambda m, i, logits: logits * scale + shift * is_eos)
    return model


def next_token_log_probs(model: T.Transformer, src: torch.Tensor) -> Step:
    """The oracle's step function: full forward passes, no cache."""
    memory = model.encode(src)

    def step(prefixes: list[list[int]]) -> torch.Tensor:
        with torch.no_grad():
            n = len(prefixes)
            hidden = model.decode(torch.tensor(prefixes), memory.expand(n, -1, -1), None)
            return model.generator(hidden[:, -1]).double().log_softmax(-1)

    return step


@pytest.mark.parametrize(
    ("beam_size", "alpha", "max_len"), [(4, 0.0, 6), (4, 1.0, 6), (3, 2.0, 4), (2, 0.6, 1)]
)
def test_beam_search_equals_the_oracle_for_other_settings(
    beam_size: int, alpha: float, max_len: int
) -> None:
    """The suite checks the paper's settings; the arguments must work as documented too."""
    c = config()
    results = set()
    for seed in range(8):
        src = tokens(1, 3 + seed, seed=seed)
        model = sharpened(src, scale=1.0 + seed % 3, p_eos=0.05 + 0.04 * seed)
        step = next_token_log_probs(model, src)
        expected = oracle.beam_search(step, c.bos_id, c.eos_id, max_len, beam_size, alpha)
        actual = T.beam_search(model, src, beam_size=beam_size, alpha=alpha, max_len=max_len)
        assert actual == expected, f"seed {seed}"
        results.add((len(actual), actual[-1] == c.eos_id))
    assert len(results) > 1  # some end, some do not, or they end at different lengths


def test_beam_search_length_limit_must_be_positive() -> None:
    model, src = model_of(), tokens(1, 4, seed=1)
    with pytest.raises(
        ValueError, match=exactly("beam_size and max_len must be >= 1, got 4 and 0")
    ):
        T.beam_search(model, src, max_len=0)
    assert len(T.beam_search(model, src, max_len=1)) == 1


# -- the model ------------------------------------------------------------------------------
def test_untied_vocabularies() -> None:
    model = model_of(share_vocab=False, tgt_vocab=20)
    assert model.src_embed is not model.tgt_embed
    assert model.src_embed.weight.shape == (17, 32) and model.tgt_embed.weight.shape == (20, 32)
    assert model.generator.weight is model.tgt_embed.weight  # 3.4/weight-tying, target side
    logits = model(tokens(2, 5, seed=1), tokens(2, 4, seed=2, high=20))
    assert logits.shape == (2, 4, 20)


def test_initialisation() -> None:
    """Embeddings N(0, 1/d_model), so that the sqrt(d_model)-scaled embeddings (3.4) have unit
    variance; every other weight matrix Xavier-uniform."""
    torch.manual_seed(0)
    model = T.Transformer(config(src_vocab=1000, tgt_vocab=1000, d_model=64, d_ff=128, n_layers=1))
    embed = model.tgt_embed
    assert embed.weight.std().item() == pytest.approx(64**-0.5, rel=0.05)
    assert embed(torch.arange(1000).unsqueeze(0)).std().item() == pytest.approx(1.0, rel=0.05)
    matrices = [(n, p) for n, p in model.named_parameters() if p.dim() > 1 and "embed" not in n]
    assert len(matrices) == 2 + 4 + 2 * 2  # per layer: in_proj, out_proj, w_1, w_2
    for name, p in matrices:
        bound = (6 / sum(p.shape)) ** 0.5
        assert 0.9 * bound < p.abs().max().item() <= bound, name


def test_padding_is_invisible() -> None:
    model = model_of()
    src, tgt = tokens(1, 5, seed=3), tokens(1, 4, seed=4)
    padded = torch.cat([src, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    torch.testing.assert_close(model.encode(padded)[:, :5], model.encode(src), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model(padded, tgt), model(src, tgt), rtol=1e-5, atol=1e-5)


def test_a_given_source_mask_reaches_encoder_and_decoder() -> None:
    model = model_of()
    src, tgt = tokens(2, 6, seed=5), tokens(2, 4, seed=6)
    mask = torch.ones(2, 1, 6, dtype=torch.bool)
    mask[..., 4:] = False  # hide the last two source positions everywhere
    torch.testing.assert_close(model(src, tgt, mask), model(src[:, :4], tgt), rtol=1e-5, atol=1e-5)


def test_token_id_errors_name_the_input() -> None:
    model = model_of()
    memory = model.encode(tokens(1, 3, seed=1))
    with pytest.raises(
        ValueError, match=exactly("src token ids must lie in [0, 17), got values in [3, 17]")
    ):
        model.encode(torch.tensor([[3, 4, 17]]))  # the vocabulary size itself is out of range
    with pytest.raises(
        ValueError, match=exactly("tgt token ids must lie in [0, 17), got values in [3, 17]")
    ):
        model.decode(torch.tensor([[17, 3]]), memory, None)
    with pytest.raises(
        TypeError,
        match=exactly("tgt token ids must be torch.long or torch.int32, got torch.float32"),
    ):
        model.decode(torch.ones(1, 2), memory, None)
    with pytest.raises(
        ValueError, match=exactly("src token ids must be [batch, length], got shape [3]")
    ):
        model.encode(torch.tensor([3, 4, 5]))


def test_positional_table_covers_exactly_max_len() -> None:
    model = model_of(max_len=10)
    assert model(tokens(1, 10, seed=1), tokens(1, 10, seed=2)).shape == (1, 10, 17)
    message = (
        "sequence positions up to 11 exceed max_len=10 of the positional-encoding table; "
        "build the model with a larger max_len"
    )
    with pytest.raises(ValueError, match=exactly(message)):
        model(tokens(1, 11, seed=1), tokens(1, 3, seed=2))


def test_positional_table_is_a_float64_buffer_not_saved() -> None:
    model = model_of()
    c = model.config
    assert model.positions.pe.dtype == torch.float64
    assert model.positions.pe.shape == (c.max_len, c.d_model)
    assert not [name for name in model.state_dict() if name.endswith("pe")]


def test_positional_encoding_dtype_and_device() -> None:
    assert T.positional_encoding(6, 8).dtype == torch.float32
    exact = T.positional_encoding(6, 8, dtype=torch.float64)
    assert torch.equal(T.positional_encoding(6, 8, dtype=torch.float16), exact.half())
    meta = T.positional_encoding(6, 8, device="meta")
    assert meta.device.type == "meta" and meta.shape == (6, 8)


def test_layer_norm_epsilon() -> None:
    norms = [m for m in model_of(norm_eps=1e-3).modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) == 2 * 2 + 2 * 3 and {n.eps for n in norms} == {1e-3}
    for layer in (T.Residual(8, 0.0), T.EncoderLayer(8, 2, 16, 0.0), T.DecoderLayer(8, 2, 16, 0.0)):
        assert {m.eps for m in layer.modules() if isinstance(m, nn.LayerNorm)} == {1e-5}


# -- training -------------------------------------------------------------------------------
def test_label_smoothing_with_the_smallest_vocabulary() -> None:
    logits = torch.randn(1, 2, 2, generator=torch.Generator().manual_seed(0))
    loss = T.LabelSmoothingLoss(2, pad_id=0, smoothing=0.1)(logits, torch.tensor([[1, 0]]))
    logp = logits.log_softmax(-1)[0]  # V - 1 = 1: the smoothing mass goes to the other token
    expected = -(0.9 * logp[0, 1] + 0.1 * logp[0, 0])  # the padding target is ignored
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_label_smoothing_is_a_mean_over_real_tokens() -> None:
    loss_fn = T.LabelSmoothingLoss(5, pad_id=0, smoothing=0.1)
    logits = torch.randn(1, 3, 5, generator=torch.Generator().manual_seed(0))
    logp = logits[0, 0].log_softmax(-1)  # one real token: the loss is that token's loss
    one = -(0.9 * logp[2] + 0.1 / 4 * (logp[0] + logp[1] + logp[3] + logp[4]))
    assert loss_fn(logits, torch.tensor([[2, 0, 0]])).item() == pytest.approx(one.item(), rel=1e-6)
    assert loss_fn(logits, torch.zeros(1, 3, dtype=torch.long)).item() == 0.0


def test_label_smoothing_computes_half_precision_in_float32() -> None:
    loss_fn = T.LabelSmoothingLoss(5, pad_id=0, smoothing=0.1)
    logits = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(0)).bfloat16()
    target = torch.tensor([[1, 2, 0], [3, 4, 2]])
    loss = loss_fn(logits, target)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(loss_fn(logits.float(), target).item(), rel=1e-6)


def test_noam_schedule_defaults_to_4000_warmup_steps() -> None:
    assert T.noam_rate(4000, 512) == pytest.approx(512**-0.5 * 4000**-0.5, rel=1e-9)  # the peak
    optimizer = T.make_optimizer([nn.Parameter(torch.zeros(1))])
    T.noam_scheduler(optimizer, 512)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(512**-0.5 * 4000**-1.5, rel=1e-9)


# -- checkpoints ----------------------------------------------------------------------------
def test_checkpoint_without_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "empty.pt"
    torch.save({"format": FORMAT, "config": config().to_dict()}, path)
    with pytest.raises(
        T.CheckpointError, match=exactly(f"{path}: the checkpoint holds no state dict")
    ):
        T.load_checkpoint(path)


def test_checkpoint_with_non_tensor_weights(tmp_path: Path) -> None:
    path = tmp_path / "odd.pt"
    torch.save({"format": FORMAT, "config": config().to_dict(), "state_dict": {"w": 1}}, path)
    with pytest.raises(T.CheckpointError, match="weights do not fit"):
        T.load_checkpoint(path)


class Payload:
    """A pickled object that would run code when unpickled."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("payload executed",))


def test_checkpoints_refuse_pickles_whatever_torch_defaults_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "config": config().to_dict(), "extra": Payload()}, path)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # torch.load's default: unpickle
    with pytest.raises(T.CheckpointError, match="refused to load"):
        T.load_checkpoint(path)
    assert "payload executed" not in capsys.readouterr().out


def test_checkpoint_tensors_go_to_map_location(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    T.save_checkpoint(model_of(), path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # loading CPU tensors into a meta model only warns
        model = T.load_checkpoint(path, map_location="meta")
    assert {t.device.type for t in (*model.parameters(), *model.buffers())} == {"meta"}
