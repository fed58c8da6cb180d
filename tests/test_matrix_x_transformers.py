"""The ``x-transformers`` adapter maps lucidrains' ``XTransformer`` truthfully where the pinned
verdicts (``tests/matrix/x_transformers.py``) rest on it: the canonical parameters are the
library's own tensors, the loss is the model's own, and each pinned deviation is what the
library's modules do when called directly."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from spec.adapter import Config
from tests.matrix import need

SMALL = Config()
BIASES = ("b_Q", "b_K", "b_V", "b_O")
"""Attention-projection biases, which the library's ``Attention`` does not have."""


def _xt(seed: int = 0) -> tuple[Any, Any]:
    """The adapter and a float64 XTransformer in evaluation mode, its weights from ``seed``."""
    need("x-transformers")
    import spec.adapters.x_transformers as xt
    with torch.random.fork_rng():  # the initial weights; the global generator is left alone
        torch.manual_seed(seed)
        return xt.adapter, xt.adapter.model(SMALL).double().eval()


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Some hundred tiny forward passes run fastest on one thread (as in the suite's 6.1 test),
    and are then immune to busy cores; the thread count is restored."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _batch(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source ids ``[2, 6]`` (row 1 padded after 4 tokens), its mask, and whole target sequences
    ``[2, 6]`` (start symbol first, row 1 padded after 4 tokens)."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, SMALL.src_vocab, (2, 6), generator=g)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    src = src.masked_fill(~mask, SMALL.pad_id)
    tgt = torch.randint(3, SMALL.tgt_vocab, (2, 6), generator=g)
    tgt[:, 0] = SMALL.bos_id
    tgt[1, 4:] = SMALL.pad_id
    return src, mask, tgt


def test_xt_parameters_are_the_library_tensors() -> None:
    """Canonical names read XTransformer's own tensors (per head, transposed as ``x @ W``), the
    source and target embeddings are one tensor but the output map is another, the LayerNorms
    have a gain and no bias, and writing the names writes the library's tensors."""
    adapter, model = _xt()
    params = adapter.parameters(model)
    d_k = SMALL.d_model // SMALL.h
    enc = model.encoder.attn_layers.layers
    dec = model.decoder.net.attn_layers.layers
    attn = enc[2][1]  # encoder layer 1, self-attention
    for i in range(SMALL.h):
        rows = slice(i * d_k, (i + 1) * d_k)
        assert torch.equal(params["encoder.1.self_attn.W_Q"][i], attn.to_q.weight[rows].T)
        assert torch.equal(params["encoder.1.self_attn.W_V"][i], attn.to_v.weight[rows].T)
    assert torch.equal(params["decoder.0.cross_attn.W_O"], dec[1][1].to_out.weight.T)
    ffn = dec[2][1].ff
    assert torch.equal(params["decoder.0.ffn.W_1"], ffn[0][0].weight.T)
    assert torch.equal(params["decoder.0.ffn.b_2"], ffn[2].bias)
    assert torch.equal(params["decoder.0.norm_2.gamma"], dec[1][0][2].gamma)
    assert not [n for n in params if n.endswith(".beta") or n.rsplit(".", 1)[-1] in BIASES]
    assert model.decoder.net.token_emb is model.encoder.token_emb  # tie_token_emb
    assert torch.equal(params["generator.W"], model.decoder.net.to_logits.weight.T)
    assert not torch.equal(params["generator.W"], params["tgt_embedding"].T)
    changed = {name: t + 1 for name, t in params.items()}
    adapter.load_parameters(model, changed)
    back = adapter.parameters(model)
    assert all(torch.equal(back[n], changed[n]) for n in changed)  # tied ones changed alike
    assert torch.equal(model.encoder.token_emb.emb.weight, changed["src_embedding"])


def test_xt_loss_is_the_models_own() -> None:
    """The adapter's loss on ``forward``'s logits is ``XTransformer.forward``'s loss (the
    whole target sequence, start symbol first; padding targets ignored through
    ``ignore_index`` = the pad id), and it is plain cross-entropy: 5.4/label-smoothing's pin."""
    adapter, model = _xt(1)
    src, mask, tgt = _batch(1)
    logits = adapter.forward(model, src, tgt[:, :-1], mask)
    ours = adapter.loss(logits, tgt[:, 1:], SMALL.pad_id)
    theirs = model(src, tgt, mask=mask)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    real = tgt[:, 1:] != SMALL.pad_id
    plain = F.cross_entropy(logits[real], tgt[:, 1:][real])
    torch.testing.assert_close(ours, plain, rtol=1e-12, atol=1e-12)


def test_xt_embeddings_are_unscaled_and_positions_scaled_down() -> None:
    """What 3.4/scale's and 3.5/added's pins say: the stack input is E[t] + s PE(pos), with the
    token rows not multiplied by sqrt(d_model) and s the positional module's learned scalar,
    d_model^-0.5 at initialisation; PE is the adapter's table, sines then cosines of the
    paper's frequencies (3.5/formula's pin)."""
    adapter, model = _xt(2)
    src, _, _ = _batch(2)
    d = SMALL.d_model
    pe = adapter.positional_encoding(src.size(1), d).double()
    pos = torch.arange(src.size(1), dtype=torch.float64)[:, None]
    omega = 10000.0 ** (-torch.arange(d // 2, dtype=torch.float64) * 2 / d)
    paper = torch.cat([torch.sin(pos * omega), torch.cos(pos * omega)], dim=-1)
    torch.testing.assert_close(pe, paper, rtol=0, atol=1e-5)  # inv_freq is float32
    scale = model.encoder.pos_emb.scale
    assert scale.requires_grad and float(scale.detach()) == pytest.approx(d**-0.5)
    E = model.encoder.token_emb.emb.weight
    with torch.no_grad():
        positions = model.encoder.pos_emb(src)
        embedded = adapter.embed_source(model, src)
    torch.testing.assert_close(embedded, E[src] + positions, rtol=0, atol=1e-15)
    torch.testing.assert_close(positions, (scale * pe).expand_as(positions), rtol=0, atol=1e-6)


def test_xt_layer_norm_has_no_bias() -> None:
    """What 3.1/residual-norm's and table3's pins say: the library's LayerNorm is
    ``F.layer_norm`` without affine parameters, times a gain; nothing is added. The model's
    trainable parameters are the canonical ones plus one positional scale per stack."""
    adapter, model = _xt(3)
    norm = model.encoder.attn_layers.layers[0][0][2]
    assert [name for name, _ in norm.named_parameters()] == ["gamma"]
    x = torch.randn(3, SMALL.d_model, dtype=torch.float64)
    with torch.no_grad():
        norm.gamma.copy_(torch.linspace(0.5, 1.5, SMALL.d_model))
    torch.testing.assert_close(norm(x), F.layer_norm(x, (SMALL.d_model,), eps=1e-5) * norm.gamma,
                               rtol=1e-12, atol=1e-12)
    trainable = sum(p.numel() for p in model.parameters())  # a shared tensor counted once
    params = adapter.parameters(model)
    canonical = sum(t.numel() for n, t in params.items() if n != "tgt_embedding")  # tied
    assert trainable == canonical + 2


def test_xt_beam_search_has_no_eos_and_sums_log_probs() -> None:
    """What 6.1/beam-search's pin says of ``AutoregressiveWrapper.beam_search``: it refuses an
    eos token, runs the whole length, and scores a beam by the sum of its log-probabilities
    (full forward pass), with no length penalty; the adapter returns its best beam up to eos."""
    adapter, model = _xt(4)
    with _one_thread():
        _beam_search_checks(adapter, model)


def _beam_search_checks(adapter: Any, model: Any) -> None:
    """The checks of :func:`test_xt_beam_search_has_no_eos_and_sums_log_probs`."""
    src, mask, _ = _batch(4)
    src, mask = src[:1], mask[:1]
    encoded = model.encoder(src, mask=mask, return_embeddings=True)
    start = torch.full((1, 1), SMALL.bos_id)
    with pytest.raises(AssertionError, match="eos token not supported"):
        model.decoder.beam_search(start, 5, beams=4, eos_token=SMALL.eos_id, context=encoded,
                                  context_mask=mask)
    beams, scores = model.decoder.beam_search(start, 7, beams=4, context=encoded,
                                              context_mask=mask, return_beams_and_scores=True)
    best = beams[0, 0]
    assert best.shape == (7,)
    tgt_in = torch.cat([start, best[None, :-1]], dim=1)
    with torch.no_grad():
        log_probs = adapter.forward(model, src, tgt_in, mask).log_softmax(-1)
    log_p = float(log_probs[0, torch.arange(7), best].sum())
    assert float(scores[0, 0]) == pytest.approx(log_p, rel=1e-9)
    assert float(scores[0, 0]) >= float(scores[1:, 0].max())
    full = model.decoder.beam_search(start, src.size(1) + 50, beams=4, context=encoded,
                                     context_mask=mask, restrict_to_max_seq_len=False)
    ids = [int(t) for t in full[0]]
    assert len(ids) == src.size(1) + 50  # the whole length, eos or not
    expected = ids[: ids.index(SMALL.eos_id) + 1] if SMALL.eos_id in ids else ids
    assert adapter.beam_search(model, src, mask, SMALL) == expected


def test_xt_default_attention_computes_the_softmax_in_float32() -> None:
    """Why the adapter sets ``attn_flash=True`` (module docstring): the default einsum path of
    ``Attend`` misses float64 Eq. 1 by float32 rounding, the flash path does not; the model's
    attention modules all take the flash path."""
    need("x-transformers")
    from x_transformers.attend import Attend
    _, model = _xt(5)
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(2, 4, 7, 8, dtype=torch.float64, generator=g) for _ in range(3))
    paper = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), dim=-1) @ v
    einsum_path, _ = Attend(heads=4, scale=8**-0.5)(q, k, v)
    flash_path, _ = Attend(heads=4, scale=8**-0.5, flash=True)(q, k, v)
    assert (einsum_path - paper).abs().max() > 1e-9
    torch.testing.assert_close(flash_path, paper, rtol=1e-12, atol=1e-12)
    attends = [m for m in model.modules() if isinstance(m, Attend)]
    assert len(attends) == 3 * SMALL.n_layers and all(m.flash for m in attends)
