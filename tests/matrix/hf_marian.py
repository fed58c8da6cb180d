"""Pinned verdicts of transformers' ``MarianMTModel`` (``--impl hf-marian``, transformers
5.23.0); sources are paths inside the ``transformers`` package at that version."""

from __future__ import annotations

from tests.matrix import Pin

ABOUT = ("Hugging Face transformers 5.23.0, MarianMTModel built from a MarianConfig set to the "
         "paper's choices where it offers them (ReLU, scaled and three-way tied embeddings)")

REQUIRES = "transformers"
"""The package the adapter imports (the test of the missing-extra message hides it)."""

MARIAN = "transformers/models/marian/modeling_marian.py"
GENERATION = "transformers/generation/utils.py"
OPTIMIZATION = "transformers/optimization.py"

BIASES = (f"{MARIAN}, MarianAttention.__init__: q_proj, k_proj, v_proj and out_proj are "
          "nn.Linear(embed_dim, embed_dim, bias=bias) with bias=True, which MarianEncoderLayer "
          "and MarianDecoderLayer keep")
NO_ADAM = (f"{OPTIMIZATION} ships Adafactor and learning-rate schedules, no Adam; the Trainer's "
           "AdamW (trainer.py, Trainer.get_optimizer_cls_and_kwargs) needs accelerate "
           "(training_args.py, TrainingArguments._setup_devices raises ImportError without it), "
           "which the extra does not install")
PINS: dict[str, Pin] = {
    "3.2.2/eq": ("VARIANT", "projection-biases", BIASES),
    "3.2.2/head-dims": ("VARIANT", "projection-biases", BIASES),
    "3.4/output-softmax": (
        "VARIANT", "generator-bias",
        f"{MARIAN}, MarianMTModel.forward: lm_logits = self.lm_head(outputs[0]) + "
        "self.final_logits_bias (MarianMTModel.__init__: a [1, V] nn.Buffer)"),
    "3.5/formula": (
        "VARIANT", "concatenated-sin-cos",
        f"{MARIAN}, MarianSinusoidalPositionalEmbedding.create_weight: out[:, 0:sentinel] = "
        "sin(...), out[:, sentinel:] = cos(...), 'features are not interleaved'"),
    "5.3/adam": ("NOT PROVIDED", None, NO_ADAM),
    "5.3/eq3": (
        "VARIANT", "step-zero",
        f"{OPTIMIZATION}, _get_inverse_sqrt_schedule_lr_lambda: current_step / "
        "num_warmup_steps during warmup (0 at step 0), then 1 / sqrt((current_step + shift) / "
        "timescale); get_inverse_sqrt_schedule: timescale = num_warmup_steps. On the base rate "
        "d_model^-0.5 warmup^-0.5 that is Eq. 3"),
    "5.4/label-smoothing": (
        "DEVIATES", "no-label-smoothing",
        f"{MARIAN}, MarianMTModel.forward: loss_fct = CrossEntropyLoss(); masked_lm_loss = "
        "loss_fct(lm_logits.view(-1, self.config.decoder_vocab_size), labels.view(-1))"),
    "6.1/beam-search": (
        "DEVIATES", None,
        f"{GENERATION}, GenerationMixin._update_finished_beams: topk_log_probs / ((cur_len + 1 - "
        "decoder_prompt_len) ** length_penalty), log P / |Y|^alpha instead of Wu et al.'s "
        "log P / ((5 + |Y|) / 6)^alpha; and _get_running_beams_for_next_iteration keeps "
        "num_beams running beams while ended ones wait in their own pool (no named bug models "
        "both, so no diagnosis)"),
    "table3/param-formula": (
        "VARIANT", "projection-biases",
        f"{BIASES}; {MARIAN}, MarianMTModel.__init__: self.final_logits_bias = "
        "nn.Buffer(torch.zeros((1, target_vocab_size))), a bias of V entries that is not a "
        "trainable parameter, so the trainable count is the formula with projection biases"),
    "practice/trainable": ("NOT PROVIDED", None, f"the toy task trains with the optimizer: {NO_ADAM}"),
}
"""Every clause that does not simply CONFORM for ``MarianMTModel`` (the others do)."""
