"""The ``hf-bart`` adapter maps transformers' ``BartForConditionalGeneration`` truthfully where
the pinned verdicts (``tests/matrix/hf_bart.py``) rest on it: the canonical parameters are the
library's own tensors (the learned positions past the table's offset, the embedding LayerNorm),
the loss is the model's own, ``generate``'s beam scores are what the pin of 6.1/beam-search says,
and the two dead rows of each position table are what the pin of table3/param-formula says."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from tests.matrix import need
from tests.matrix.transformers import (
    SMALL,
    build,
    check_beam_scores,
    check_library_tensors,
    check_load_round_trip,
    check_loss_is_the_models_own,
)


def test_hf_bart_parameters_are_the_library_tensors() -> None:
    """Canonical names read BART's own tensors (per head, transposed as ``x @ W``; positions
    past the offset of 2; the embedding LayerNorm), tied embeddings are one tensor, the logits
    bias is a buffer, and loading writes them back without touching the offset rows."""
    adapter, model = build("hf-bart")
    params = check_library_tensors(adapter, model)
    for which, stack in (("src", model.model.encoder), ("tgt", model.model.decoder)):
        table = stack.embed_positions.weight
        assert table.shape == (SMALL.max_len + 2, SMALL.d_model)
        assert torch.equal(params[f"{which}_positions"], table[2:])
        assert torch.equal(params[f"{which}_embedding_norm.gamma"],
                           stack.layernorm_embedding.weight)
        assert torch.equal(params[f"{which}_embedding_norm.beta"], stack.layernorm_embedding.bias)
    shared = model.model.shared.weight
    assert model.lm_head.weight is shared  # three-way tying
    assert model.model.encoder.embed_tokens.weight is shared
    assert model.model.decoder.embed_tokens.weight is shared
    assert "final_logits_bias" in dict(model.named_buffers())
    assert "final_logits_bias" not in dict(model.named_parameters())
    offset_rows = model.model.encoder.embed_positions.weight[:2].clone()
    back = check_load_round_trip(adapter, model, params)
    assert torch.equal(back["generator.b"], model.final_logits_bias[0])
    assert torch.equal(model.model.encoder.embed_positions.weight[:2], offset_rows)


def test_hf_bart_embedding_is_layernorm_of_scaled_tokens_plus_positions() -> None:
    """``embed_source`` is what BART's encoder computes: LayerNorm(sqrt(d_model) E[ids] +
    src_positions[pos]) with the canonical tables (position p read from row p + 2 of the
    library's table); changing canonical position row p changes position p alone."""
    adapter, model = build("hf-bart", 3)
    params = adapter.parameters(model)
    ids = torch.randint(3, SMALL.src_vocab, (2, 7), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        actual = adapter.embed_source(model, ids)
    x = math.sqrt(SMALL.d_model) * params["src_embedding"][ids] + params["src_positions"][:7]
    expected = torch.nn.functional.layer_norm(
        x, (SMALL.d_model,), params["src_embedding_norm.gamma"],
        params["src_embedding_norm.beta"], eps=1e-5)
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)
    positions = params["src_positions"].clone()
    positions[4] += 1.0
    adapter.load_parameters(model, {"src_positions": positions})
    with torch.no_grad():
        moved = adapter.embed_source(model, ids)
    differs = (moved != actual).any(dim=-1).any(dim=0)
    assert differs.tolist() == [p == 4 for p in range(7)]


def test_hf_bart_loss_is_the_models_own() -> None:
    """The adapter's loss is ``BartForConditionalGeneration.forward(labels=...).loss`` (padding
    labelled -100, the library's ignore index): plain cross-entropy, which
    5.4/label-smoothing judges."""
    adapter, model = build("hf-bart", 1)
    check_loss_is_the_models_own(adapter, model, 1, pad_source=False, tol=1e-12)


def test_hf_bart_beam_scores_divide_by_length_to_the_alpha() -> None:
    """What 6.1/beam-search's pin says of ``generate``: the returned hypothesis's score is its
    log-probability (from a full forward pass) divided by |Y|^0.6, not ((5 + |Y|) / 6)^0.6."""
    adapter, model = build("hf-bart", 2)
    check_beam_scores(adapter, model, 2, cached=False)


def test_hf_bart_position_tables_hold_two_dead_trainable_rows() -> None:
    """What table3/param-formula's pin says: the model's trainable parameters are its canonical
    ones (tied embeddings once, the logits bias a buffer) plus rows 0 and 1 of each position
    table, 2 x 2 d_model, which are trainable yet get no gradient: no position reads them."""
    adapter, model = build("hf-bart", 4)
    params = adapter.parameters(model)
    counted = {n: t for n, t in params.items()
               if n not in ("tgt_embedding", "generator.W", "generator.b")}  # tied, buffer
    canonical = sum(t.numel() for t in counted.values())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable - canonical == 2 * 2 * SMALL.d_model
    g = torch.Generator().manual_seed(4)
    src = torch.randint(3, SMALL.src_vocab, (2, 9), generator=g)
    tgt_in = torch.randint(3, SMALL.tgt_vocab, (2, 8), generator=g)
    model.train()
    adapter.forward(model, src, tgt_in, torch.ones_like(src, dtype=torch.bool)).sum().backward()
    for stack in (model.model.encoder, model.model.decoder):
        grad = stack.embed_positions.weight.grad
        assert stack.embed_positions.weight.requires_grad
        assert torch.count_nonzero(grad[:2]) == 0
        assert bool((grad[2:10].abs().sum(dim=-1) > 0).all())


def test_hf_bart_refuses_separate_vocabularies() -> None:
    """BART has one ``vocab_size``: a configuration with two vocabularies is refused (the suite
    reports a refused setting, never a deviation)."""
    need("hf-bart")
    import spec.adapters.hf_bart as hf_bart
    with pytest.raises(ValueError, match="one vocabulary"):
        hf_bart.adapter.model(dataclasses.replace(SMALL, tgt_vocab=11, shared_vocab=False))
