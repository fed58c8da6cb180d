"""Pinned verdicts of transformers' ``BartForConditionalGeneration`` (``--impl hf-bart``,
transformers 5.23.0); sources are paths inside the ``transformers`` package at that version."""

from __future__ import annotations

from tests.matrix import Pin

ABOUT = ("Hugging Face transformers 5.23.0, BartForConditionalGeneration built from a BartConfig "
         "set to the paper's choices where it offers them (ReLU, scaled and three-way tied "
         "embeddings); its positions stay learned and its embeddings layer-normalised")

REQUIRES = "transformers"
"""The package the adapter imports (the test of the missing-extra message hides it)."""

BART = "transformers/models/bart/modeling_bart.py"
GENERATION = "transformers/generation/utils.py"
OPTIMIZATION = "transformers/optimization.py"

BIASES = (f"{BART}, BartAttention.__init__: q_proj, k_proj, v_proj and out_proj are "
          "nn.Linear(embed_dim, embed_dim, bias=bias) with bias=True, which BartEncoderLayer "
          "and BartDecoderLayer keep")
LEARNED = (f"{BART}, BartLearnedPositionalEmbedding: an nn.Embedding looked up at position_ids + "
           "offset, created in BartEncoder.__init__ / BartDecoder.__init__ for "
           "max_position_embeddings positions; no sinusoidal table anywhere in the model")
NO_ADAM = (f"{OPTIMIZATION} ships Adafactor and learning-rate schedules, no Adam; the Trainer's "
           "AdamW (trainer.py, Trainer.get_optimizer_cls_and_kwargs) needs accelerate "
           "(training_args.py, TrainingArguments._setup_devices raises ImportError without it), "
           "which the extra does not install")
PINS: dict[str, Pin] = {
    "3.2.2/eq": ("VARIANT", "projection-biases", BIASES),
    "3.2.2/head-dims": ("VARIANT", "projection-biases", BIASES),
    "3.4/output-softmax": (
        "VARIANT", "generator-bias",
        f"{BART}, BartForConditionalGeneration.forward: lm_logits = self.lm_head(outputs[0]) + "
        "self.final_logits_bias (BartForConditionalGeneration.__init__: a [1, V] nn.Buffer)"),
    "3.5/formula": ("VARIANT", "learned-positions", LEARNED),
    "3.5/added": (
        "VARIANT", "embedding-norm, learned-positions",
        f"{BART}, BartEncoder.forward: hidden_states = inputs_embeds + embed_pos; hidden_states "
        "= self.layernorm_embedding(hidden_states) (BartDecoder.forward alike, with "
        "inputs_embeds + positions), then dropout; the positions are learned: " + LEARNED),
    "3.5/wavelengths": ("VARIANT", "learned-positions", LEARNED),
    "3.5/relative-linear": ("VARIANT", "learned-positions", LEARNED),
    "3.5/extrapolation": ("VARIANT", "learned-positions", LEARNED),
    "5.3/adam": ("NOT PROVIDED", None, NO_ADAM),
    "5.3/eq3": (
        "VARIANT", "step-zero",
        f"{OPTIMIZATION}, _get_inverse_sqrt_schedule_lr_lambda: current_step / "
        "num_warmup_steps during warmup (0 at step 0), then 1 / sqrt((current_step + shift) / "
        "timescale); get_inverse_sqrt_schedule: timescale = num_warmup_steps. On the base rate "
        "d_model^-0.5 warmup^-0.5 that is Eq. 3"),
    "5.4/label-smoothing": (
        "DEVIATES", "no-label-smoothing",
        f"{BART}, BartForConditionalGeneration.forward: loss_fct = CrossEntropyLoss(); "
        "masked_lm_loss = loss_fct(lm_logits.view(-1, self.config.vocab_size), labels.view(-1))"),
    "6.1/beam-search": (
        "DEVIATES", None,
        f"{GENERATION}, GenerationMixin._update_finished_beams: topk_log_probs / ((cur_len + 1 - "
        "decoder_prompt_len) ** length_penalty), log P / |Y|^alpha instead of Wu et al.'s "
        "log P / ((5 + |Y|) / 6)^alpha; and _get_running_beams_for_next_iteration keeps "
        "num_beams running beams while ended ones wait in their own pool (no named bug models "
        "both, so no diagnosis)"),
    "table3/param-formula": (
        "DEVIATES", None,
        f"{BART}, BartLearnedPositionalEmbedding.__init__: self.offset = 2; "
        "super().__init__(num_embeddings + self.offset, embedding_dim), and forward looks up "
        "position_ids + self.offset, so rows 0 and 1 of each table are trainable parameters that "
        "no input ever reads: 2 x 2 d_model more than the formula with learned max_len x d_model "
        "tables (13,520 against 13,456 at d_model 16; no named bug models dead rows). The rest "
        f"is counted as variants: {BIASES}; BartEncoder.__init__ / BartDecoder.__init__: "
        "layernorm_embedding = nn.LayerNorm(embed_dim) (embedding norms); "
        "BartForConditionalGeneration.__init__: final_logits_bias is an nn.Buffer, not a "
        "trainable parameter"),
    "practice/trainable": ("NOT PROVIDED", None, f"the toy task trains with the optimizer: {NO_ADAM}"),
}
"""Every clause that does not simply CONFORM for ``BartForConditionalGeneration`` (the others
do)."""
