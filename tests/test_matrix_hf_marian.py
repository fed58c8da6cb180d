"""The ``hf-marian`` adapter maps transformers' ``MarianMTModel`` truthfully where the pinned
verdicts (``tests/matrix/hf_marian.py``) rest on it: the canonical parameters are the library's
own tensors, the loss is the model's own, and ``generate``'s beam scores are what the pin of
6.1/beam-search says."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

from spec.adapter import Config
from tests.matrix import need

SMALL = Config()
DECODING = dataclasses.replace(SMALL, max_len=160)
"""SMALL with room for len(src) + 50 positions."""


def _marian(seed: int = 0) -> tuple[Any, Any]:
    """The adapter and a float64 MarianMTModel in evaluation mode, its weights from ``seed``."""
    need("hf-marian")
    import spec.adapters.hf_marian as hf_marian
    with torch.random.fork_rng():  # the initial weights; the global generator is left alone
        torch.manual_seed(seed)
        return hf_marian.adapter, hf_marian.adapter.model(SMALL).double().eval()


def test_hf_marian_parameters_are_the_library_tensors() -> None:
    """Canonical names read Marian's own tensors (per head, transposed as ``x @ W``), tied
    embeddings are one tensor, and the logits bias is a buffer, not a trainable parameter."""
    adapter, model = _marian()
    params = adapter.parameters(model)
    attn = model.model.encoder.layers[1].self_attn
    d_k = SMALL.d_model // SMALL.h
    for i in range(SMALL.h):
        rows = slice(i * d_k, (i + 1) * d_k)
        assert torch.equal(params["encoder.1.self_attn.W_Q"][i], attn.q_proj.weight[rows].T)
        assert torch.equal(params["encoder.1.self_attn.b_V"][i], attn.v_proj.bias[rows])
    cross = model.model.decoder.layers[0].encoder_attn
    assert torch.equal(params["decoder.0.cross_attn.W_O"], cross.out_proj.weight.T)
    assert torch.equal(params["decoder.0.norm_2.gamma"],
                       model.model.decoder.layers[0].encoder_attn_layer_norm.weight)
    assert model.lm_head.weight is model.model.shared.weight  # three-way tying
    assert "final_logits_bias" in dict(model.named_buffers())
    assert "final_logits_bias" not in dict(model.named_parameters())
    changed = {name: t + 1 for name, t in params.items()}
    adapter.load_parameters(model, changed)
    back = adapter.parameters(model)
    assert torch.equal(back["generator.b"], model.final_logits_bias[0])
    assert all(torch.equal(back[n], changed[n]) for n in changed)  # tied ones changed alike


def test_hf_marian_loss_is_the_models_own() -> None:
    """The adapter's loss is ``MarianMTModel.forward(labels=...).loss`` (padding labelled -100,
    the library's ignore index): plain cross-entropy, which 5.4/label-smoothing judges."""
    adapter, model = _marian(1)
    g = torch.Generator().manual_seed(1)
    src = torch.randint(3, SMALL.src_vocab, (2, 6), generator=g)
    target = torch.randint(3, SMALL.tgt_vocab, (2, 5), generator=g)
    target[1, 3:] = SMALL.pad_id
    tgt_in = adapter.decoder_input(target, SMALL.bos_id)
    mask = torch.ones(2, 6, dtype=torch.bool)
    logits = adapter.forward(model, src, tgt_in, mask)
    ours = adapter.loss(logits, target, SMALL.pad_id)
    theirs = model(input_ids=src, attention_mask=mask.long(), decoder_input_ids=tgt_in,
                   labels=target.masked_fill(target == SMALL.pad_id, -100)).loss
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    plain = torch.nn.functional.cross_entropy(logits[target != SMALL.pad_id],
                                              target[target != SMALL.pad_id])
    torch.testing.assert_close(ours, plain, rtol=1e-12, atol=1e-12)


def test_hf_marian_beam_scores_divide_by_length_to_the_alpha() -> None:
    """What 6.1/beam-search's pin says of ``generate``: the returned hypothesis's score is its
    log-probability (from a full forward pass) divided by |Y|^0.6, not ((5 + |Y|) / 6)^0.6."""
    adapter, model = _marian(2)
    import spec.adapters.hf_marian as hf_marian
    src = torch.randint(3, SMALL.src_vocab, (1, 5), generator=torch.Generator().manual_seed(2))
    out = model.generate(input_ids=src, do_sample=False, max_new_tokens=5 + 50,
                         return_dict_in_generate=True, output_scores=True, **hf_marian.BEAM)
    ids = out.sequences[0].tolist()
    ids = hf_marian._until_eos(ids[1:], SMALL.eos_id)
    assert ids == adapter.beam_search(model, src, torch.ones_like(src, dtype=torch.bool), DECODING)
    tgt_in = torch.tensor([[SMALL.bos_id, *ids[:-1]]])
    with torch.no_grad():
        log_probs = adapter.forward(model, src, tgt_in, torch.ones_like(src, dtype=torch.bool))
    log_p = float(log_probs.log_softmax(-1)[0, torch.arange(len(ids)), ids].sum())
    score = float(out.sequences_scores[0])
    n = len(ids)
    assert score == pytest.approx(log_p / n**0.6, rel=1e-6)  # generate scores in float32
    assert score != pytest.approx(log_p / ((5 + n) / 6) ** 0.6, rel=1e-3)
