"""What the transformers adapters' pins (``tests/matrix/hf_*.py``) and tests
(``tests/test_matrix_hf_*.py``) share: transformers' own sources (generation, optimization), the
pins every transformers model earns alike, and the checks that are the same for each model.

Marian, BART and FSMT get ``generate``, the schedules and the missing Adam from the same files
of transformers 5.23.0; BART and Marian also share nearly all their modelling code.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

import pytest
import torch
from torch import Tensor

from spec.adapter import Config
from tests.matrix import Pin, need

GENERATION = "transformers/generation/utils.py"
OPTIMIZATION = "transformers/optimization.py"

NO_ADAM = (f"{OPTIMIZATION} ships Adafactor and learning-rate schedules, no Adam; the Trainer's "
           "AdamW (trainer.py, Trainer.get_optimizer_cls_and_kwargs) needs accelerate "
           "(training_args.py, TrainingArguments._setup_devices raises ImportError without it), "
           "which the extra does not install")

BEAM_SEARCH: Pin = (
    "DEVIATES", None,
    f"{GENERATION}, GenerationMixin._update_finished_beams: topk_log_probs / ((cur_len + 1 - "
    "decoder_prompt_len) ** length_penalty), log P / |Y|^alpha instead of Wu et al.'s "
    "log P / ((5 + |Y|) / 6)^alpha (no named bug models it together with the pool of ended "
    "beams that _get_running_beams_for_next_iteration keeps apart from num_beams running "
    "ones, itself the variant finished-pool, so no diagnosis)")
"""6.1/beam-search where the suite can run it (Marian, BART: FSMT cannot decode in float64)."""


def common_pins(biases: str) -> dict[str, Pin]:
    """The pins of every transformers model: 3.2.2/eq and 3.2.2/head-dims (projection biases,
    justified by ``biases``), 5.3/adam and practice/trainable (no Adam), 5.3/eq3 (the inverse
    square-root schedule is 0 at step 0)."""
    return {
        "3.2.2/eq": ("VARIANT", "projection-biases", biases),
        "3.2.2/head-dims": ("VARIANT", "projection-biases", biases),
        "5.3/adam": ("NOT PROVIDED", None, NO_ADAM),
        "5.3/eq3": (
            "VARIANT", "step-zero",
            f"{OPTIMIZATION}, _get_inverse_sqrt_schedule_lr_lambda: current_step / "
            "num_warmup_steps during warmup (0 at step 0), then 1 / sqrt((current_step + shift) / "
            "timescale); get_inverse_sqrt_schedule: timescale = num_warmup_steps. On the base "
            "rate d_model^-0.5 warmup^-0.5 that is Eq. 3"),
        "practice/trainable": (
            "NOT PROVIDED", None, f"the toy task trains with the optimizer: {NO_ADAM}"),
    }


def bart_family_biases(source: str, prefix: str) -> str:
    """Why a BART-family model (``prefix`` ``Marian`` or ``Bart``, its modelling file
    ``source``) has projection biases."""
    return (f"{source}, {prefix}Attention.__init__: q_proj, k_proj, v_proj and out_proj are "
            f"nn.Linear(embed_dim, embed_dim, bias=bias) with bias=True, which "
            f"{prefix}EncoderLayer and {prefix}DecoderLayer keep")


def generator_bias(source: str, model: str) -> Pin:
    """3.4/output-softmax of a BART-family ``model`` (its modelling file ``source``): the
    logits have a bias."""
    return ("VARIANT", "generator-bias",
            f"{source}, {model}.forward: lm_logits = self.lm_head(outputs[0]) + "
            f"self.final_logits_bias ({model}.__init__: a [1, V] nn.Buffer)")


def no_label_smoothing(source: str, model: str, vocab_size: str) -> Pin:
    """5.4/label-smoothing of ``model`` (its modelling file ``source``; ``vocab_size``: the
    config field its loss reshapes by): plain cross-entropy."""
    return ("DEVIATES", "no-label-smoothing",
            f"{source}, {model}.forward: loss_fct = CrossEntropyLoss(); masked_lm_loss = "
            f"loss_fct(lm_logits.view(-1, self.config.{vocab_size}), labels.view(-1))")


# -- the checks of tests/test_matrix_hf_*.py ---------------------------------------------------
SMALL = Config()
DECODING = dataclasses.replace(SMALL, max_len=160)
"""SMALL with room for len(src) + 50 positions."""


def build(impl: str, seed: int = 0, config: Config = SMALL, dtype: torch.dtype = torch.float64
          ) -> tuple[Any, Any]:
    """The adapter ``impl`` and its model in evaluation mode, in ``dtype``, its weights from
    ``seed`` (skipped, or failed under ``$CI``, without the library)."""
    need(impl)
    adapter = importlib.import_module(f"spec.adapters.{impl.replace('-', '_')}").adapter
    with torch.random.fork_rng():  # the initial weights; the global generator is left alone
        torch.manual_seed(seed)
        return adapter, adapter.model(config).to(dtype).eval()


def batch(seed: int, pad_source: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Source ids ``[2, 6]``, its mask and target ids ``[2, 5]``; with ``pad_source`` the
    second source row is padded after 4 tokens."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, SMALL.src_vocab, (2, 6), generator=g)
    mask = torch.ones(2, 6, dtype=torch.bool)
    if pad_source:
        mask[1, 4:] = False
    target = torch.randint(3, SMALL.tgt_vocab, (2, 5), generator=g)
    return src.masked_fill(~mask, SMALL.pad_id), mask, target


def check_library_tensors(adapter: Any, model: Any) -> dict[str, Tensor]:
    """What every model's canonical names read: its own tensors, per head and transposed as
    ``x @ W`` (encoder layer 1's self-attention, decoder layer 0's cross-attention and second
    norm). Returns the canonical parameters."""
    params: dict[str, Tensor] = adapter.parameters(model)
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
    return params


def check_load_round_trip(adapter: Any, model: Any, params: dict[str, Tensor]
                          ) -> dict[str, Tensor]:
    """Loading every canonical parameter plus one reads them back (tied ones changed alike).
    Returns what was read back."""
    changed = {name: t + 1 for name, t in params.items()}
    adapter.load_parameters(model, changed)
    back: dict[str, Tensor] = adapter.parameters(model)
    assert all(torch.equal(back[n], changed[n]) for n in changed)
    return back


def check_loss_is_the_models_own(adapter: Any, model: Any, seed: int, *, pad_source: bool,
                                 tol: float) -> None:
    """The adapter's loss is the model's ``forward(labels=...).loss`` (padding labelled -100,
    the library's ignore index) and plain cross-entropy over the non-padding targets, within
    ``tol``, on :func:`batch` with the second target padded after 3 tokens."""
    src, mask, target = batch(seed, pad_source)
    target[1, 3:] = SMALL.pad_id
    tgt_in = adapter.decoder_input(target, SMALL.bos_id)
    logits = adapter.forward(model, src, tgt_in, mask)
    ours = adapter.loss(logits, target, SMALL.pad_id)
    theirs = model(input_ids=src, attention_mask=mask.long(), decoder_input_ids=tgt_in,
                   labels=target.masked_fill(target == SMALL.pad_id, -100)).loss
    torch.testing.assert_close(ours, theirs, rtol=tol, atol=tol)
    plain = torch.nn.functional.cross_entropy(logits[target != SMALL.pad_id],
                                              target[target != SMALL.pad_id])
    torch.testing.assert_close(ours, plain, rtol=tol, atol=tol)


def check_beam_scores(adapter: Any, model: Any, seed: int, *, cached: bool) -> None:
    """What 6.1/beam-search's pin says of ``generate``: the returned hypothesis (the adapter's
    ``beam_search``) scores its log-probability divided by |Y|^0.6, not ((5 + |Y|) / 6)^0.6.
    The log-probability comes from ``forward``, or with ``cached`` from ``incremental_logits``;
    ``generate`` scores in float32."""
    from spec.adapters._hf import BEAM, until_eos  # the library is there: the model was built

    src = torch.randint(3, SMALL.src_vocab, (1, 5), generator=torch.Generator().manual_seed(seed))
    ones = torch.ones_like(src, dtype=torch.bool)
    out = model.generate(input_ids=src, do_sample=False, max_new_tokens=5 + 50,
                         return_dict_in_generate=True, output_scores=True, **BEAM)
    ids = until_eos(out.sequences[0].tolist()[1:], SMALL.eos_id)
    assert ids == adapter.beam_search(model, src, ones, DECODING)
    tgt_in = torch.tensor([[SMALL.bos_id, *ids[:-1]]])
    with torch.no_grad():
        if cached:
            logits = adapter.incremental_logits(model, src, ones, tgt_in)
        else:
            logits = adapter.forward(model, src, tgt_in, ones)
    log_p = float(logits.log_softmax(-1)[0, torch.arange(len(ids)), ids].sum())
    score = float(out.sequences_scores[0])
    n = len(ids)
    assert score == pytest.approx(log_p / n**0.6, rel=1e-6)
    assert score != pytest.approx(log_p / ((5 + n) / 6) ** 0.6, rel=1e-3)
