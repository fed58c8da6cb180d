"""The ``hf-fsmt`` adapter maps transformers' ``FSMTForConditionalGeneration`` truthfully where the
pinned verdicts (``tests/matrix/hf_fsmt.py``) rest on it: the canonical parameters are the
library's own tensors, the loss is the model's own, and each pinned deviation (the decoder
input, the trainable positional tables, ``generate``'s beam scores, the float64 failure) is the
library's behaviour, shown here directly."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

from tests.matrix.transformers import (
    SMALL,
    batch,
    build,
    check_beam_scores,
    check_library_tensors,
    check_load_round_trip,
    check_loss_is_the_models_own,
)


def test_hf_fsmt_parameters_are_the_library_tensors() -> None:
    """Canonical names read FSMT's own tensors (per head, transposed as ``x @ W``); with a
    shared vocabulary the three embedding matrices are one tensor, with separate vocabularies
    none is shared and each keeps its size; the positional tables have no canonical name."""
    adapter, model = build("hf-fsmt")
    params = check_library_tensors(adapter, model)
    decoder = model.model.decoder
    assert decoder.output_projection.weight is decoder.embed_tokens.weight  # three-way tying
    assert model.model.encoder.embed_tokens.weight is decoder.embed_tokens.weight
    assert not any("position" in name for name in params)
    back = check_load_round_trip(adapter, model, params)
    assert torch.equal(back["generator.W"], decoder.output_projection.weight.T)

    separate = dataclasses.replace(SMALL, tgt_vocab=17, shared_vocab=False)
    _, untied = build("hf-fsmt", config=separate)
    shapes = {n: tuple(t.shape) for n, t in adapter.parameters(untied).items()
              if n in ("src_embedding", "tgt_embedding", "generator.W")}
    assert shapes == {"src_embedding": (13, 16), "tgt_embedding": (17, 16),
                      "generator.W": (16, 17)}
    weights = [untied.model.encoder.embed_tokens.weight, untied.model.decoder.embed_tokens.weight,
               untied.model.decoder.output_projection.weight]
    assert len({id(w) for w in weights}) == 3
    with pytest.raises(ValueError, match="src_vocab == tgt_vocab"):
        adapter.model(dataclasses.replace(SMALL, tgt_vocab=17))


def test_hf_fsmt_loss_is_the_models_own() -> None:
    """The adapter's loss is ``FSMTForConditionalGeneration.forward(labels=...).loss``
    (padding labelled -100, the library's ignore index): plain cross-entropy, which
    5.4/label-smoothing judges. In float32: the labelled pass fails in float64."""
    adapter, model = build("hf-fsmt", 1, dtype=torch.float32)
    check_loss_is_the_models_own(adapter, model, 1, pad_source=True, tol=1e-6)


def test_hf_fsmt_decoder_input_puts_the_last_token_first() -> None:
    """What 3.1/shifted-right's pin says of ``shift_tokens_right``: the target shifted right
    behind its last non-padding token (eos in fairseq's data), whatever start symbol is
    asked for; and it is what ``prepare_decoder_input_ids_from_labels`` returns."""
    adapter, model = build("hf-fsmt")
    eos, pad = SMALL.eos_id, SMALL.pad_id
    target = torch.tensor([[5, 6, 7, eos], [8, 9, eos, pad]])
    expected = torch.tensor([[eos, 5, 6, 7], [eos, 8, 9, eos]])
    for bos in (SMALL.bos_id, 11):
        assert torch.equal(adapter.decoder_input(target, bos), expected)
    assert torch.equal(model.prepare_decoder_input_ids_from_labels(target.clone()), expected)
    no_eos = torch.tensor([[5, 6, 7, 8]])
    assert torch.equal(adapter.decoder_input(no_eos, SMALL.bos_id), torch.tensor([[8, 5, 6, 7]]))
    labels = target.masked_fill(target == pad, -100)  # as DataCollatorForSeq2Seq pads them
    assert torch.equal(model.prepare_decoder_input_ids_from_labels(labels), expected)
    assert torch.equal(labels, target)  # the -100 became the pad id, in place (see loss)


def test_hf_fsmt_positions_are_one_based_and_trainable() -> None:
    """What 3.5/formula's, 3.5/extrapolation's and table3's pins say: the model adds the rows
    ``positional_encoding`` returns, the row of position p being p + pad + 1 (one-based for pad
    0; padding gets zeros), and the tables are trainable parameters of max_len + pad + 1 rows
    that the loss sends gradients to."""
    adapter, model = build("hf-fsmt", 2)
    src, _, _ = batch(2, pad_source=True)
    added = adapter.embed_source(model, src) - model.model.encoder.embed_tokens(src) * 4.0
    raw = adapter.positional_encoding(6, SMALL.d_model)
    half = SMALL.d_model // 2  # tensor2tensor's frequencies, sines then cosines, from 1
    angles = torch.arange(1, 7, dtype=torch.float64).unsqueeze(1) * 1e4 ** (
        -torch.arange(half, dtype=torch.float64) / (half - 1))
    torch.testing.assert_close(raw.double(), torch.cat([angles.sin(), angles.cos()], 1),
                               rtol=0, atol=1e-6)
    table = raw.double()
    torch.testing.assert_close(added[0], table, rtol=0, atol=1e-12)
    torch.testing.assert_close(added[1, :4], table[:4], rtol=0, atol=1e-12)
    assert torch.equal(added[1, 4:], torch.zeros(2, SMALL.d_model, dtype=torch.float64))

    def tables() -> list[torch.nn.Parameter]:
        return [model.model.encoder.embed_positions.weight,
                model.model.decoder.embed_positions.weight]

    assert all(t.requires_grad and t.shape == (SMALL.max_len + SMALL.pad_id + 1, SMALL.d_model)
               for t in tables())
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert all(id(t) in trainable for t in tables())
    params = adapter.parameters(model)
    canonical = sum(t.numel() for n, t in params.items() if n not in ("tgt_embedding",
                                                                       "generator.W"))
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert total - canonical == 2 * (SMALL.max_len + 1) * SMALL.d_model  # 13,424 - 11,344

    model.float().train()
    target = torch.randint(3, SMALL.tgt_vocab, (2, 5), generator=torch.Generator().manual_seed(3))
    logits = adapter.forward(model, src, adapter.decoder_input(target, SMALL.bos_id),
                             src != SMALL.pad_id)
    adapter.loss(logits, target, SMALL.pad_id).backward()
    assert all(t.grad is not None and bool(t.grad[1:6].ne(0).any()) for t in tables())


def test_hf_fsmt_full_pass_fails_in_float64() -> None:
    """What practice/devices-dtypes' pin says: a float64 FSMT cannot run its full pass (the
    causal mask overflows in ``fill_with_neg_inf``); the same weights in float32 can, and
    cached decoding, which builds no mask, runs in float64."""
    adapter, model = build("hf-fsmt", 4)
    src, mask, target = batch(4, pad_source=True)
    tgt_in = adapter.decoder_input(target, SMALL.bos_id)
    with pytest.raises(RuntimeError, match="without overflow"):
        model(input_ids=src, attention_mask=mask.long(), decoder_input_ids=tgt_in,
              use_cache=False)
    with pytest.raises(RuntimeError, match="without overflow"):
        model(input_ids=src, attention_mask=mask.long(), decoder_input_ids=tgt_in, labels=target)
    stepwise = adapter.incremental_logits(model, src, mask, tgt_in)
    full = adapter.forward(model.float(), src, tgt_in, mask)
    torch.testing.assert_close(stepwise.float(), full, rtol=1e-4, atol=1e-4)


def test_hf_fsmt_full_pass_is_causal_only_without_the_cache() -> None:
    """Why ``forward`` passes ``use_cache=False``: with the config's default (``use_cache``
    on) ``FSMTModel.forward`` builds no causal mask, and a position's logits depend on later
    target tokens."""
    adapter, model = build("hf-fsmt", 5, dtype=torch.float32)
    src, mask, target = batch(5, pad_source=True)
    tgt_in = adapter.decoder_input(target, SMALL.bos_id)
    later = tgt_in.clone()
    later[:, -1] = 3 + (later[:, -1] - 2) % (SMALL.tgt_vocab - 3)  # another real token
    with torch.no_grad():
        def first(ids: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            out = model(input_ids=src, attention_mask=mask.long(), decoder_input_ids=ids,
                        **kwargs)
            logits: torch.Tensor = out.logits[:, 0]
            return logits

        assert not torch.allclose(first(tgt_in), first(later))  # default: sees the future
        torch.testing.assert_close(first(tgt_in, use_cache=False), first(later, use_cache=False))


def test_hf_fsmt_beam_scores_divide_by_length_to_the_alpha() -> None:
    """What 6.1/beam-search's pin says of ``generate``: the returned hypothesis's score is its
    log-probability divided by |Y|^0.6, not ((5 + |Y|) / 6)^0.6. Float64 throughout: the
    log-probability comes from cached decoding (the full pass fails in float64)."""
    adapter, model = build("hf-fsmt", 6)
    check_beam_scores(adapter, model, 6, cached=True)
