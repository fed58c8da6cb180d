"""Tests of the shipped ``torch.nn`` adapter: layouts, mask translation, agreement with the oracle.

The adapter must be truthful about PyTorch: these tests check that it translates exactly (so any
difference the suite reports comes from PyTorch, not from the adapter) and pin the PyTorch
behaviours its docstring describes.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from spec import oracle
from spec.adapter import Config, load_adapter
from spec.adapters.torch_nn import TorchNNAdapter, adapter

F64 = torch.float64
CONFIG = Config(d_model=16, h=4, d_ff=32, n_layers=2, dropout=0.0)
RTOL, ATOL = 1e-10, 1e-12


def random_params(template: dict[str, Tensor], seed: int) -> dict[str, Tensor]:
    """Well-conditioned random values with the shapes of ``template`` (float64)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in template.items():
        x = torch.randn(t.shape, generator=g, dtype=F64)
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "gamma":
            out[name] = 1.0 + 0.2 * x
        elif leaf == "beta" or leaf.startswith("b_"):
            out[name] = 0.2 * x
        elif leaf in ("W_Q", "W_K", "W_V"):
            out[name] = x / math.sqrt(t.shape[-2])
        else:
            out[name] = x / math.sqrt(t.shape[0])
    return out


def mha(d_model: int = 16, h: int = 4, seed: int = 0) -> tuple[nn.Module, dict[str, Tensor]]:
    module = adapter.multi_head(d_model, h).to(F64).eval()
    adapter.load_parameters(module, random_params(adapter.parameters(module), seed))
    return module, adapter.parameters(module)


def transformer(config: Config = CONFIG, seed: int = 0) -> tuple[nn.Transformer, dict[str, Tensor]]:
    model = adapter.model(config).to(F64).eval()
    adapter.load_parameters(model, random_params(adapter.parameters(model), seed))
    return model, adapter.parameters(model)


def randn(*shape: int, seed: int) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def close(actual: Tensor, expected: Tensor) -> None:
    torch.testing.assert_close(actual, expected.to(actual.dtype), rtol=RTOL, atol=ATOL)


# -- loading and capabilities ----------------------------------------------------------------
def test_loaded_by_short_name() -> None:
    loaded = load_adapter("torch.nn")
    assert isinstance(loaded, TorchNNAdapter) and loaded.name == "torch.nn"


@pytest.mark.parametrize(
    "capability",
    [
        "attention_weights", "feed_forward", "feed_forward_forward", "positional_encoding",
        "embed_source", "embed_target", "project", "decode_incremental", "decoder_input",
        "loss", "lr_schedule", "optimizer", "beam_search", "greedy", "length_penalty",
    ],
)
def test_what_torch_nn_lacks_is_not_provided(capability: str) -> None:
    assert getattr(adapter, capability, None) is None


# -- parameter layouts -----------------------------------------------------------------------
def test_multi_head_names_and_shapes() -> None:
    params = adapter.parameters(adapter.multi_head(16, 4))
    shapes = {name: tuple(t.shape) for name, t in params.items()}
    assert shapes == {
        "W_Q": (4, 16, 4), "W_K": (4, 16, 4), "W_V": (4, 16, 4), "W_O": (16, 16),
        "b_Q": (4, 4), "b_K": (4, 4), "b_V": (4, 4), "b_O": (16,),
    }


def test_multi_head_layout_is_pytorchs() -> None:
    """W_i^Q is rows [i d_k, (i+1) d_k) of in_proj_weight's Q block, transposed; and so on."""
    module, params = mha(16, 4, seed=3)
    assert isinstance(module, nn.MultiheadAttention)
    w, b = module.in_proj_weight.detach(), module.in_proj_bias.detach()
    for block, x in enumerate("QKV"):
        for i in range(4):
            rows = slice(block * 16 + i * 4, block * 16 + (i + 1) * 4)
            assert torch.equal(params[f"W_{x}"][i], w[rows].t())
            assert torch.equal(params[f"b_{x}"][i], b[rows])
    assert torch.equal(params["W_O"], module.out_proj.weight.detach().t())
    assert torch.equal(params["b_O"], module.out_proj.bias.detach())


@pytest.mark.parametrize("h", [1, 2, 4])
def test_multi_head_round_trip_is_exact(h: int) -> None:
    module = adapter.multi_head(16, h).to(F64)
    fresh = random_params(adapter.parameters(module), seed=h)
    adapter.load_parameters(module, fresh)
    back = adapter.parameters(module)
    assert back.keys() == fresh.keys()
    for name in fresh:
        assert torch.equal(back[name], fresh[name]), name


def test_model_names() -> None:
    params = adapter.parameters(adapter.model(CONFIG))
    attn = ["W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O"]
    ffn = ["W_1", "b_1", "W_2", "b_2"]
    expected = set()
    for i in range(CONFIG.n_layers):
        expected |= {f"encoder.{i}.self_attn.{n}" for n in attn}
        expected |= {f"encoder.{i}.ffn.{n}" for n in ffn}
        expected |= {f"encoder.{i}.norm_{k}.{n}" for k in (1, 2) for n in ("gamma", "beta")}
        expected |= {f"decoder.{i}.{a}.{n}" for a in ("self_attn", "cross_attn") for n in attn}
        expected |= {f"decoder.{i}.ffn.{n}" for n in ffn}
        expected |= {f"decoder.{i}.norm_{k}.{n}" for k in (1, 2, 3) for n in ("gamma", "beta")}
    expected |= {f"{s}.norm.{n}" for s in ("encoder", "decoder") for n in ("gamma", "beta")}
    assert set(params) == expected
    assert params["encoder.0.ffn.W_1"].shape == (16, 32)
    assert params["encoder.0.ffn.W_2"].shape == (32, 16)


def test_model_layout_is_pytorchs() -> None:
    model, params = transformer(seed=4)
    assert isinstance(model, nn.Transformer)
    enc, dec = model.encoder.layers[1], model.decoder.layers[0]
    assert torch.equal(params["encoder.1.ffn.W_1"], enc.linear1.weight.detach().t())
    assert torch.equal(params["encoder.1.ffn.b_2"], enc.linear2.bias.detach())
    assert torch.equal(params["encoder.1.norm_2.gamma"], enc.norm2.weight.detach())
    assert torch.equal(params["decoder.0.norm_3.beta"], dec.norm3.bias.detach())
    cross = dec.multihead_attn.out_proj.weight.detach().t()
    assert torch.equal(params["decoder.0.cross_attn.W_O"], cross)
    assert torch.equal(params["decoder.norm.gamma"], model.decoder.norm.weight.detach())
    assert torch.equal(params["encoder.norm.beta"], model.encoder.norm.bias.detach())


def test_model_round_trip_is_exact() -> None:
    model = adapter.model(CONFIG).to(F64)
    fresh = random_params(adapter.parameters(model), seed=5)
    adapter.load_parameters(model, fresh)
    back = adapter.parameters(model)
    assert back.keys() == fresh.keys()
    for name in fresh:
        assert torch.equal(back[name], fresh[name]), name
    # every PyTorch parameter is reachable under some canonical name
    n_torch = sum(p.numel() for p in model.parameters())
    assert n_torch == sum(t.numel() for t in back.values())


def test_parameters_is_a_snapshot() -> None:
    module, params = mha(seed=6)
    before = params["W_Q"].clone()
    assert isinstance(module, nn.MultiheadAttention)
    with torch.no_grad():
        module.in_proj_weight.add_(1.0)
    assert torch.equal(params["W_Q"], before)


def test_partial_load_leaves_the_rest() -> None:
    module, params = mha(seed=7)
    new_o = torch.zeros_like(params["W_O"])
    adapter.load_parameters(module, {"W_O": new_o})
    after = adapter.parameters(module)
    assert torch.equal(after["W_O"], new_o)
    for name in ("W_Q", "W_K", "W_V", "b_Q", "b_O"):
        assert torch.equal(after[name], params[name])


def test_load_rejects_unknown_names_and_wrong_shapes() -> None:
    module = adapter.multi_head(16, 4)
    with pytest.raises(KeyError, match="W_X"):
        adapter.load_parameters(module, {"W_X": torch.zeros(16, 16)})
    with pytest.raises(ValueError, match="W_Q"):
        adapter.load_parameters(module, {"W_Q": torch.zeros(16, 16)})  # broadcastable, wrong
    with pytest.raises(TypeError, match="no parameter layout"):
        adapter.parameters(nn.Linear(2, 2))


# -- 3.2.1, 3.2.2 ----------------------------------------------------------------------------
def test_attention_is_eq1_with_our_mask_convention() -> None:
    q, k, v = randn(2, 5, 8, seed=1), randn(2, 6, 8, seed=2), randn(2, 6, 3, seed=3)
    mask = torch.rand(2, 5, 6, generator=torch.Generator().manual_seed(4)) > 0.5
    mask[..., 2] = True
    close(adapter.attention(q, k, v, None), oracle.attention(q, k, v))
    close(adapter.attention(q, k, v, mask), oracle.attention(q, k, v, mask))


@pytest.mark.parametrize("grad", [True, False], ids=["autograd", "no-grad-fast-path"])
@pytest.mark.parametrize("h", [1, 2, 4])
def test_multi_head_forward_equals_oracle(h: int, grad: bool) -> None:
    module, params = mha(16, h, seed=10 + h)
    x, memory = randn(3, 5, 16, seed=1), randn(3, 7, 16, seed=2)
    g = torch.Generator().manual_seed(3)
    self_mask = torch.rand(3, 5, 5, generator=g) > 0.5
    self_mask[..., 0] = True
    cross_mask = torch.rand(3, 1, 7, generator=g) > 0.3  # broadcasts over queries
    cross_mask[..., -1] = True
    causal = oracle.causal_mask(5)  # 2-D, broadcasts over the batch
    with torch.set_grad_enabled(grad):
        cases = [
            (adapter.multi_head_forward(module, x, None, None), oracle.multi_head(x, x, x, params)),
            (adapter.multi_head_forward(module, x, None, self_mask),
             oracle.multi_head(x, x, x, params, self_mask)),
            (adapter.multi_head_forward(module, x, None, causal),
             oracle.multi_head(x, x, x, params, causal)),
            (adapter.multi_head_forward(module, x, memory, None),
             oracle.multi_head(x, memory, memory, params)),
            (adapter.multi_head_forward(module, x, memory, cross_mask),
             oracle.multi_head(x, memory, memory, params, cross_mask)),
        ]
    for actual, expected in cases:
        assert actual.shape == expected.shape
        close(actual, expected)


def test_multi_head_mask_is_per_batch_element() -> None:
    """The [B*h, Lq, Lk] expansion pairs batch b with mask b for every head."""
    module, params = mha(16, 4, seed=20)
    x = randn(2, 4, 16, seed=21)
    mask = torch.ones(2, 4, 4, dtype=torch.bool)
    mask[1, :, 1:] = False  # batch 1: every query sees key 0 only
    out = adapter.multi_head_forward(module, x, None, mask)
    close(out, oracle.multi_head(x, x, x, params, mask))
    close(out[0], oracle.multi_head(x[:1], x[:1], x[:1], params)[0])


def test_multi_head_rejects_non_bool_masks() -> None:
    module, _ = mha()
    x = randn(1, 3, 16, seed=0)
    with pytest.raises(TypeError, match="bool"):
        adapter.multi_head_forward(module, x, None, torch.ones(3, 3))


# -- the model -------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors:UserWarning")
def test_encode_without_padding_equals_oracle_with_final_norm() -> None:
    model, params = transformer(seed=30)
    x = randn(2, 6, 16, seed=31)
    valid = torch.ones(2, 6, dtype=torch.bool)
    expected = oracle.encoder(x, params, CONFIG.n_layers, CONFIG.h, valid, final_norm=True)
    close(adapter.encode(model, x, valid), expected)
    with torch.no_grad():  # PyTorch's fast path: same numbers without padding
        close(adapter.encode(model, x, valid), expected)


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors:UserWarning")
def test_encode_with_padding_and_pytorchs_fast_path() -> None:
    """With autograd on, every position equals the oracle. With autograd off in eval mode,
    PyTorch's nested-tensor fast path gives the same real positions but zeros at padded ones
    before the final LayerNorm, i.e. ``beta`` after it: PyTorch's behaviour, documented."""
    model, params = transformer(seed=32)
    x = randn(2, 6, 16, seed=33)
    valid = torch.ones(2, 6, dtype=torch.bool)
    valid[1, 4:] = False
    expected = oracle.encoder(x, params, CONFIG.n_layers, CONFIG.h, valid, final_norm=True)
    close(adapter.encode(model, x, valid), expected)
    with torch.no_grad():
        fast = adapter.encode(model, x, valid)
    close(fast[valid], expected[valid])
    beta = params["encoder.norm.beta"].expand(2, 16)
    close(fast[~valid], beta)
    assert not torch.allclose(expected[~valid], beta)


def test_decode_equals_oracle_with_final_norm() -> None:
    model, params = transformer(seed=40)
    x, y = randn(2, 6, 16, seed=41), randn(2, 5, 16, seed=42)
    valid = torch.ones(2, 6, dtype=torch.bool)
    valid[0, 3:] = False
    memory = oracle.encoder(x, params, CONFIG.n_layers, CONFIG.h, valid, final_norm=True)
    expected = oracle.decoder(y, memory, params, CONFIG.n_layers, CONFIG.h, valid, final_norm=True)
    close(adapter.decode(model, y, memory, valid), expected)
    with torch.no_grad():
        close(adapter.decode(model, y, memory, valid), expected)


def test_decode_is_causal_through_the_mask_it_passes() -> None:
    model, _ = transformer(seed=50)
    memory, y = randn(1, 4, 16, seed=51), randn(1, 6, 16, seed=52)
    valid = torch.ones(1, 4, dtype=torch.bool)
    changed = y.clone()
    changed[:, 3:] += 5.0
    before = adapter.decode(model, y, memory, valid)
    after = adapter.decode(model, changed, memory, valid)
    close(after[:, :3], before[:, :3])
    assert not torch.allclose(after[:, 3:], before[:, 3:])


def test_model_uses_pytorch_defaults() -> None:
    model = adapter.model(Config(d_model=16, h=4, d_ff=32, n_layers=3, dropout=0.25))
    assert isinstance(model, nn.Transformer)
    assert len(model.encoder.layers) == len(model.decoder.layers) == 3
    layer = model.encoder.layers[0]
    assert layer.norm_first is False and layer.linear1.out_features == 32
    assert layer.dropout.p == layer.dropout1.p == layer.self_attn.dropout == 0.25
    assert model.encoder.norm is not None and model.decoder.norm is not None
    assert model.encoder.enable_nested_tensor is True


def test_odd_heads_warning_is_pytorchs() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        adapter.model(Config(d_model=15, h=3, d_ff=30))
    assert any("enable_nested_tensor" in str(w.message) for w in caught)


# -- practice/save-load ----------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_save_load_round_trip(tmp_path: Path, dtype: torch.dtype) -> None:
    config = Config(d_model=16, h=4, d_ff=32, n_layers=2, dropout=0.1)
    model = adapter.model(config).to(dtype).eval()
    path = tmp_path / "model.pt"
    adapter.save(model, path)
    loaded = adapter.load(path).eval()
    assert isinstance(loaded, nn.Transformer)
    assert next(loaded.parameters()).dtype == dtype
    assert loaded.encoder.layers[0].dropout.p == 0.1
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    x = randn(2, 5, 16, seed=60).to(dtype)
    valid = torch.ones(2, 5, dtype=torch.bool)
    memory = adapter.encode(model, x, valid)
    assert torch.equal(adapter.encode(loaded, x, valid), memory)
    decoded = adapter.decode(model, x, memory, valid)
    assert torch.equal(adapter.decode(loaded, x, memory, valid), decoded)


def test_load_refuses_other_files(tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    torch.save(adapter.model(CONFIG).state_dict(), path)
    with pytest.raises(ValueError, match="not a file written"):
        adapter.load(path)
