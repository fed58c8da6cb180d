"""The reference implementation refuses bad input with a clear error, before any work (issue 14).

Each test passes input that used to give a silent wrong result or an unclear error (the
allocator's, an ``AttributeError``, an index error from inside an operator) and checks the
error's type and that its message names the argument, what was given and what is expected.
Where a message is part of what the test shows, the whole of it is pinned (``exactly``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import transformer as T
from tests.test_reference import small
from tests.test_reference_mutation import exactly
from transformer import checkpoint
from transformer.checkpoint import FORMAT


def model_of(**overrides: object) -> T.Transformer:
    torch.manual_seed(0)
    return T.Transformer(small(**overrides)).eval()


def tokens(batch: int, length: int, seed: int) -> torch.Tensor:
    return torch.randint(3, 17, (batch, length), generator=torch.Generator().manual_seed(seed))


def never_ends(model: T.Transformer) -> None:
    """Make eos the least likely token at every step, so that decoding runs to its limit."""
    eos = model.config.eos_id

    def hook(module: nn.Module, inputs: object, logits: torch.Tensor) -> torch.Tensor:
        return logits - 1e4 * (torch.arange(logits.size(-1)) == eos)

    model.generator.register_forward_hook(hook)


# -- 1. masks must have the documented layout ----------------------------------------------
def test_a_two_dimensional_padding_mask_is_refused_where_a_batch_axis_is_expected() -> None:
    """With batch == S == T, a ``[B, S]`` mask broadcasts as ``[L_q, S]`` and used to be applied
    per query instead of per sentence."""
    model = model_of()
    src, tgt = tokens(4, 4, seed=1), tokens(4, 4, seed=2)
    flat = T.padding_mask(src, 0).squeeze(1)  # [4, 4]: the batch axis would be read as queries
    flat[0, 2:] = False
    hint = "for a [batch, S] padding mask, add the query axis: mask.unsqueeze(1)"
    message = exactly(
        f"src_mask must be 3-D ([batch, 1, S] or [batch, L_q, S]), got shape [4, 4]; {hint}"
    )
    with pytest.raises(ValueError, match=message):
        model(src, tgt, flat)
    with pytest.raises(ValueError, match=message):
        model.encode(src, flat)
    memory = model.encode(src)
    with pytest.raises(ValueError, match=message):
        model.decode(tgt, memory, flat)
    layer = model.encoder.layers[0]
    x = torch.randn(4, 4, 32)
    with pytest.raises(ValueError, match=exactly(
            f"mask must be 3-D ([batch, 1, S] or [batch, L_q, S]), got shape [4, 4]; {hint}")):
        layer(x, flat)
    with pytest.raises(ValueError, match=message):
        model.decoder.layers[0](x, memory, flat)
    with pytest.raises(ValueError, match=message):
        model.decoder(x, memory, flat)
    # the documented layout [B, 1, S] hides source positions 2 and 3 from sentence 0 only
    mask = flat.unsqueeze(1)
    logits = model(src, tgt, mask)
    torch.testing.assert_close(logits[:1], model(src[:1, :2], tgt[:1]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits[1:], model(src[1:], tgt[1:]), rtol=1e-5, atol=1e-5)
    assert layer(x, mask.expand(4, 4, 4)).shape == x.shape  # [B, S, S] for the encoder


def test_forward_needs_a_padding_mask_for_both_attentions() -> None:
    """``forward``'s mask serves the encoder (L_q = S) and the encoder-decoder attention
    (L_q = T): a ``[B, S, S]`` mask would be read as ``[B, T, S]`` when S == T."""
    model = model_of()
    src, tgt = tokens(2, 5, seed=1), tokens(2, 5, seed=2)
    full = torch.ones(2, 5, 5, dtype=torch.bool).tril()
    with pytest.raises(ValueError, match=exactly(
            "src_mask must be a padding mask [batch, 1, S]: forward uses it for both the "
            "encoder's self-attention and the encoder-decoder attention; got shape [2, 5, 5] "
            "(give encode and decode their own masks instead)")):
        model(src, tgt, full)
    assert model.encode(src, full).shape == (2, 5, 32)  # the encoder alone may take it


def test_a_source_mask_may_give_each_target_position_its_own_keys() -> None:
    """``[B, T, S]`` for the encoder-decoder attention: row t is what target position t sees."""
    model = model_of()
    src, tgt = tokens(2, 5, seed=1), tokens(2, 3, seed=2)
    memory = model.encode(src)
    padding = torch.ones(2, 1, 5, dtype=torch.bool)
    padding[0, 0, 3:] = False
    per_position = padding.expand(2, 3, 5)
    torch.testing.assert_close(
        model.decode(tgt, memory, per_position), model.decode(tgt, memory, padding)
    )
    layer = model.decoder.layers[0]
    y = torch.randn(2, 3, 32)
    torch.testing.assert_close(layer(y, memory, per_position), layer(y, memory, padding))


def test_source_mask_shape_and_dtype_name_the_argument() -> None:
    model = model_of()
    src, tgt = tokens(2, 5, seed=1), tokens(2, 3, seed=2)
    with pytest.raises(ValueError, match=re.escape("src_mask of shape [2, 1, 4] does not")):
        model(src, tgt, torch.ones(2, 1, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="src_mask must be boolean"):
        model(src, tgt, torch.ones(2, 1, 5))
    memory = model.encode(src)
    with pytest.raises(ValueError, match=re.escape("src_mask of shape [3, 1, 5] does not")):
        model.decode(tgt, memory, torch.ones(3, 1, 5, dtype=torch.bool))


def test_decode_checks_the_encoder_output() -> None:
    model = model_of()
    src, tgt = tokens(2, 5, seed=1), tokens(3, 4, seed=2)
    memory = model.encode(src)
    with pytest.raises(
        ValueError, match=re.escape("memory must be [batch, S, d_model] = [3, S, 32]")
    ):
        model.decode(tgt, memory, None)  # batch 2 against 3
    with pytest.raises(ValueError, match=re.escape("got shape [5, 32]")):
        model.decode(tgt, memory[0], None)
    with pytest.raises(ValueError, match=re.escape("got shape [3, 5, 16]")):
        model.decode(tgt, torch.zeros(3, 5, 16), None)
    with pytest.raises(ValueError, match=re.escape("memory must be [batch, S, d_model]")):
        model(src, tgt)  # two sources, three targets


# -- 2. attention masks must be boolean -----------------------------------------------------
@pytest.mark.parametrize("need_weights", [False, True])
def test_attention_refuses_a_float_mask(need_weights: bool) -> None:
    """The documented mask is boolean; a float 0/1 mask used to be added to the scores."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 4, 8, generator=g) for _ in range(3))
    mask = (torch.rand(2, 1, 4, 4, generator=g) > 0.5).float()
    with pytest.raises(
        TypeError, match=re.escape("mask must be boolean (True = may attend), got torch.float32")
    ):
        T.scaled_dot_product_attention(q, k, v, mask, need_weights=need_weights)


@pytest.mark.parametrize("need_weights", [False, True])
def test_attention_mask_must_broadcast_to_the_scores(need_weights: bool) -> None:
    q, k, v = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 6, 8), torch.randn(2, 3, 6, 8)
    message = "mask of shape [2, 1, 4, 4] does not broadcast to the scores [..., L_q, L_k] = "
    with pytest.raises(ValueError, match=re.escape(message + "[2, 3, 4, 6]")):
        T.scaled_dot_product_attention(
            q, k, v, torch.ones(2, 1, 4, 4, dtype=torch.bool), need_weights=need_weights
        )
    with pytest.raises(ValueError, match=re.escape("does not broadcast")):  # more dims
        T.scaled_dot_product_attention(q, k, v, torch.ones(1, 2, 3, 4, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match=exactly("pass either a mask or is_causal, not both")):
        T.scaled_dot_product_attention(
            q, q, q, torch.ones(4, 4, dtype=torch.bool), is_causal=True, need_weights=need_weights
        )
    keys = torch.tensor([True, True, False, True, False, True])  # [L_k] broadcasts too
    out, _ = T.scaled_dot_product_attention(q, k, v, keys, need_weights=need_weights)
    expected, _ = T.scaled_dot_product_attention(q, k[..., keys, :], v[..., keys, :])
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    one, _ = T.scaled_dot_product_attention(  # unbatched [L, d_k]: the [L_k] mask adds no axis
        q[0, 0], k[0, 0], v[0, 0], keys, need_weights=need_weights
    )
    assert one.shape == (4, 8)
    torch.testing.assert_close(one, out[0, 0], rtol=1e-5, atol=1e-6)
    every, _ = T.scaled_dot_product_attention(
        q, k, v, torch.tensor(True), need_weights=need_weights
    )
    torch.testing.assert_close(every, T.scaled_dot_product_attention(q, k, v)[0])


def test_multi_head_attention_names_its_mask() -> None:
    mha = T.MultiHeadAttention(16, 4)
    x, memory = torch.randn(2, 3, 16), torch.randn(2, 5, 16)
    with pytest.raises(ValueError, match=exactly(
            "mask of shape [2, 1, 3] does not broadcast to [batch, L_q, L_k] = [2, 3, 5]")):
        mha(x, memory, torch.ones(2, 1, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match=exactly(
            "mask must be boolean (True = may attend), got torch.int64")):
        mha(x, memory, torch.ones(2, 1, 5, dtype=torch.long))


# -- 3. the configuration -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("norm_eps", -1e-5, "norm_eps must be a finite number > 0, got -1e-05"),
        ("norm_eps", math.nan, "norm_eps must be a finite number > 0, got nan"),
        ("norm_eps", 0.0, "norm_eps must be a finite number > 0, got 0.0"),
        ("norm_eps", math.inf, "norm_eps must be a finite number > 0, got inf"),
        ("norm_eps", "1e-5", "norm_eps must be a finite number > 0, got '1e-5'"),
        ("dropout", 1.5, "dropout must be a number in [0, 1], got 1.5"),
        ("dropout", -0.1, "dropout must be a number in [0, 1], got -0.1"),
        ("dropout", math.nan, "dropout must be a number in [0, 1], got nan"),
        ("dropout", "0.1", "dropout must be a number in [0, 1], got '0.1'"),
        ("label_smoothing", 1.0, "label_smoothing must be a number in [0, 1), got 1.0"),
        ("label_smoothing", True, "label_smoothing must be a number in [0, 1), got True"),
        ("pad_id", True, "pad_id must be an integer token id, got True"),
        ("eos_id", 2.0, "eos_id must be an integer token id, got 2.0"),
        ("share_vocab", 1, "share_vocab must be True or False, got 1"),
        ("d_model", 9, "d_model must be even (the sinusoidal encoding pairs sin and cos), got 9"),
    ],
)
def test_bad_configuration_values(name: str, value: object, message: str) -> None:
    overrides: dict[str, object] = {name: value}
    if name == "d_model":
        overrides["h"] = 3
    with pytest.raises(ValueError, match=exactly(message)):
        small(**overrides)


def test_a_valid_configuration_is_accepted() -> None:
    c = small(dropout=0.0, label_smoothing=0.0, norm_eps=1e-6, d_model=6, h=2, pad_id=3)
    assert (c.d_model, c.norm_eps, c.pad_id) == (6, 1e-6, 3)
    # P_drop = 1 drops every sub-layer output: the suite's probe of 5.4/residual-dropout
    assert small(dropout=1.0, label_smoothing=0.99).dropout == 1.0


# -- 4., 5., 6. checkpoints -----------------------------------------------------------------
def save(path: Path, config: dict[str, Any], state: dict[Any, Any]) -> Path:
    torch.save({"format": FORMAT, "config": config, "state_dict": state}, path)
    return path


def test_a_checkpoint_loads_in_the_dtype_its_weights_have(tmp_path: Path) -> None:
    model = model_of()
    for dtype in (torch.float16, torch.float64):
        path = tmp_path / f"{dtype}.pt"
        T.save_checkpoint(model.to(dtype), path)
        loaded = T.load_checkpoint(path)
        assert {p.dtype for p in loaded.parameters()} == {dtype}
        assert torch.equal(loaded.tgt_embed.weight, model.tgt_embed.weight)


def test_a_checkpoint_with_mixed_dtypes_is_refused(tmp_path: Path) -> None:
    """Loading used to cast the whole model to the dtype of the state dict's first tensor."""
    model = model_of()
    state = model.state_dict()
    first, second, third = list(state)[:3]
    state[first] = state[first].half()
    path = save(tmp_path / "mixed.pt", model.config.to_dict(), state)
    with pytest.raises(
        T.CheckpointError,
        match=re.escape(f"mixes dtypes: torch.float16 ({first}), torch.float32 ({second} and "),
    ):
        T.load_checkpoint(path)
    state = model.state_dict()  # groups in dtype order, each named by its first key
    state[second], state[third] = state[second].half(), state[third].half()
    path = save(tmp_path / "mixed.pt", model.config.to_dict(), state)
    with pytest.raises(T.CheckpointError, match=exactly(
            f"{path}: the state dict mixes dtypes: torch.float16 ({second} and 1 more), "
            f"torch.float32 ({first} and {len(state) - 3} more); a checkpoint holds one dtype, "
            "the one the model is loaded in")):
        T.load_checkpoint(path)
    state = model.state_dict()
    state[first] = state[first].long()
    path = save(tmp_path / "integer.pt", model.config.to_dict(), state)
    with pytest.raises(T.CheckpointError, match=re.escape(f"{first} is torch.int64, not a float")):
        T.load_checkpoint(path)


def test_a_checkpoint_whose_tied_weights_differ_is_refused(tmp_path: Path) -> None:
    """The generator and the embeddings are one matrix (3.4/weight-tying): a state dict giving
    them different values used to load silently, the last of them winning."""
    model = model_of()
    assert model.config.share_vocab
    for name in ("generator.weight", "src_embed.weight"):
        state = {k: v.clone() for k, v in model.state_dict().items()}  # untie the copies
        state[name] += 1.0
        path = save(tmp_path / "untied.pt", model.config.to_dict(), state)
        with pytest.raises(T.CheckpointError, match=exactly(
                f"{path}: tgt_embed.weight and {name} are one tied matrix (3.4/weight-tying), "
                "but the checkpoint gives them different values")):
            T.load_checkpoint(path)
    state = {k: v.clone() for k, v in model.state_dict().items()}  # equal copies: one matrix
    loaded = T.load_checkpoint(save(tmp_path / "copies.pt", model.config.to_dict(), state))
    assert loaded.generator.weight is loaded.tgt_embed.weight


@pytest.fixture
def no_real_model(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the default device of every model the loader builds: ``meta`` costs no memory."""
    built: list[str] = []
    real: Callable[[T.TransformerConfig], T.Transformer] = T.Transformer

    def spy(config: T.TransformerConfig) -> T.Transformer:
        built.append(torch.empty(0).device.type)
        return real(config)

    monkeypatch.setattr(checkpoint, "Transformer", spy)
    return built


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"src_vocab": 10**12, "tgt_vocab": 10**12},
            "tgt_embed.weight has shape [17, 32], the configuration needs [1000000000000, 32]",
        ),
        ({"d_ff": 10**9}, "ffn.w_1.weight has shape [64, 32], the configuration needs"),
        (
            {"n_layers": 3},
            "the configuration asks for n_layers=3, the state dict holds 2 encoder layers",
        ),
        (
            {"max_len": 10**15},
            "max_len=1000000000000000 asks for a positional-encoding table of",
        ),
    ],
)
def test_a_checkpoint_is_checked_before_its_model_is_built(
    tmp_path: Path, no_real_model: list[str], overrides: dict[str, object], message: str
) -> None:
    """A small file whose configuration asks for a huge model used to be built first."""
    model = model_of()
    config = {**model.config.to_dict(), **overrides}
    path = save(tmp_path / "huge.pt", config, model.state_dict())
    with pytest.raises(T.CheckpointError, match=re.escape(message)):
        T.load_checkpoint(path)
    assert set(no_real_model) <= {"meta"}


def test_a_sound_checkpoint_builds_one_real_model(tmp_path: Path, no_real_model: list[str]) -> None:
    path = tmp_path / "model.pt"
    T.save_checkpoint(model_of(), path)
    T.load_checkpoint(path)
    assert no_real_model.count("cpu") == 1


def test_state_dict_keys_and_values(tmp_path: Path) -> None:
    """Integer keys used to raise ``AttributeError`` from inside ``load_state_dict``."""
    model = model_of()
    config = model.config.to_dict()
    tensors = list(model.state_dict().values())
    path = save(tmp_path / "ints.pt", config, dict(enumerate(tensors)))
    with pytest.raises(T.CheckpointError, match=exactly(
            f"{path}: state dict keys must be parameter names (str), got [0, 1, 2, 3, 4]")):
        T.load_checkpoint(path)
    state = model.state_dict()
    state.pop("encoder.layers.0.ffn.w_1.weight")
    state["colour"] = torch.zeros(1)
    path = save(tmp_path / "keys.pt", config, state)
    with pytest.raises(T.CheckpointError, match=exactly(
            f"{path}: weights do not fit the configuration: missing "
            "['encoder.layers.0.ffn.w_1.weight'], unexpected ['colour']")):
        T.load_checkpoint(path)


@pytest.mark.parametrize("count", [1, 3, 4])
def test_a_checkpoint_names_its_first_three_odd_values(tmp_path: Path, count: int) -> None:
    """One error lists the first three values that are not fitting tensors, and counts the rest."""
    model = model_of()
    state = model.state_dict()
    names = list(state)[:count]
    for name in names:
        state[name] = [[1.0]]
    path = save(tmp_path / "lists.pt", model.config.to_dict(), state)
    shown = "; ".join(f"{name} is a list, not a tensor" for name in names[:3])
    more = "; and 1 more" if count == 4 else ""
    with pytest.raises(T.CheckpointError, match=exactly(
            f"{path}: weights do not fit the configuration: {shown}{more}")):
        T.load_checkpoint(path)


def test_an_oversized_positional_table_names_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = model_of()
    fits, limit = 100, 100 * 32 * 8  # max_len x d_model x 8 bytes (float64)
    monkeypatch.setattr(checkpoint, "MAX_POSITION_TABLE_BYTES", limit)
    path = save(
        tmp_path / "fits.pt", {**model.config.to_dict(), "max_len": fits}, model.state_dict()
    )
    assert T.load_checkpoint(path).positions.pe.shape == (fits, 32)
    path = save(
        tmp_path / "big.pt", {**model.config.to_dict(), "max_len": fits + 1}, model.state_dict()
    )
    with pytest.raises(T.CheckpointError, match=exactly(
            f"{path}: max_len={fits + 1} asks for a positional-encoding table of "
            f"{(fits + 1) * 32 * 8} bytes, more than the {limit} bytes a checkpoint may ask for; "
            "build the model yourself (Transformer(config)) if you mean it")):
        T.load_checkpoint(path)


# -- 7. the learning-rate schedule ----------------------------------------------------------
@pytest.mark.parametrize(
    ("d_model", "warmup", "message"),
    [
        (0, 4000, "d_model must be a finite number > 0, got 0"),
        (-512, 4000, "d_model must be a finite number > 0, got -512"),
        (math.nan, 4000, "d_model must be a finite number > 0, got nan"),
        (math.inf, 4000, "d_model must be a finite number > 0, got inf"),
        (512, 0, "warmup must be a finite number of steps > 0, got 0"),
        (512, -10, "warmup must be a finite number of steps > 0, got -10"),
        (512, math.inf, "warmup must be a finite number of steps > 0, got inf"),
    ],
)
def test_noam_rate_refuses_bad_sizes(d_model: float, warmup: float, message: str) -> None:
    with pytest.raises(ValueError, match=exactly(message)):
        T.noam_rate(1, d_model, warmup)  # type: ignore[arg-type]
    optimizer = T.make_optimizer([nn.Parameter(torch.zeros(1))])
    with pytest.raises(ValueError, match=re.escape(message)):
        T.noam_scheduler(optimizer, d_model, warmup)  # type: ignore[arg-type]


def test_noam_rate_takes_any_positive_sizes() -> None:
    assert T.noam_rate(1, 1, 1) == 1.0  # 1^-0.5 * min(1^-0.5, 1 * 1^-1.5)
    assert T.noam_rate(4, 0.25, 0.5) == 2.0 * 4**-0.5


# -- 8. loss targets ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("bad", "shown"),
    [([-100], "[-100]"), ([7], "[7]"), (list(range(7, 19)), str(list(range(7, 17))))],
)
def test_loss_targets_must_be_token_ids(bad: list[int], shown: str) -> None:
    """The error shows the bad ids, ten at most."""
    loss_fn = T.LabelSmoothingLoss(7, pad_id=0)
    target = torch.tensor([3, 4, *bad, 5, *bad[::-1], 0])
    logits = torch.randn(len(target), 7)
    message = f"target ids must lie in [0, 7) (pad_id=0 marks positions to ignore), got {shown}"
    with pytest.raises(ValueError, match=exactly(message)):
        loss_fn(logits, target)


def test_loss_target_dtypes_and_the_empty_batch() -> None:
    loss_fn = T.LabelSmoothingLoss(7, pad_id=0)
    logits = torch.randn(2, 3, 7)
    target = torch.tensor([[3, 4, 6], [5, 1, 0]])
    assert loss_fn(logits, target.int()).item() == loss_fn(logits, target).item()
    with pytest.raises(
        TypeError, match=re.escape("target must hold integer token ids, got torch.float32")
    ):
        loss_fn(logits, target.float())
    empty = loss_fn(torch.randn(0, 7), torch.zeros(0, dtype=torch.long))
    assert empty.item() == 0.0


@pytest.mark.parametrize("pad_id", [-100, 7, True])
def test_loss_pad_id_must_be_a_token_id(pad_id: int) -> None:
    with pytest.raises(
        ValueError, match=re.escape(f"pad_id must be a token id in [0, 7), got {pad_id!r}")
    ):
        T.LabelSmoothingLoss(7, pad_id=pad_id)


# -- 9. decoding lengths --------------------------------------------------------------------
def test_decoding_length_is_checked_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default length (source + 50) beyond ``max_len`` used to fail after many steps."""
    model = model_of(max_len=20)
    calls: list[str] = []
    monkeypatch.setattr(model, "encode", lambda *a: calls.append("encode"))
    src = tokens(2, 5, seed=1)
    default = "decoding 55 tokens (the default: source length 5 + 50) needs 55 positions"
    for decode in (T.greedy_decode, T.beam_search):
        with pytest.raises(ValueError, match=re.escape(default + ", more than max_len=20")):
            decode(model, src[:1])
        with pytest.raises(ValueError, match=re.escape("decoding 21 tokens needs 21 positions")):
            decode(model, src[:1], max_len=21)
    with pytest.raises(ValueError, match=re.escape("max_len must be >= 0, got -1")):
        T.greedy_decode(model, src, max_len=-1)
    with pytest.raises(
        ValueError, match=re.escape("src must be [batch, S] token ids, got shape [5]")
    ):
        T.greedy_decode(model, src[0])
    assert calls == []


def test_decoding_runs_up_to_max_len() -> None:
    model = model_of(max_len=20)
    never_ends(model)
    src = tokens(2, 5, seed=1)
    assert T.greedy_decode(model, src, max_len=20).shape == (2, 20)
    assert T.greedy_decode(model, src, max_len=20, use_cache=False).shape == (2, 20)
    assert len(T.beam_search(model, src[:1], beam_size=2, max_len=20)) == 20
