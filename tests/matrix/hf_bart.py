"""Pinned verdicts of transformers' ``BartForConditionalGeneration`` (``--impl hf-bart``,
transformers 5.23.0); sources are paths inside the ``transformers`` package at that version."""

from __future__ import annotations

from tests.matrix import Pin
from tests.matrix.transformers import (
    BEAM_SEARCH,
    bart_family_biases,
    common_pins,
    generator_bias,
    no_label_smoothing,
)

ABOUT = ("Hugging Face transformers 5.23.0, BartForConditionalGeneration built from a BartConfig "
         "set to the paper's choices where it offers them (ReLU, scaled and three-way tied "
         "embeddings); its positions stay learned and its embeddings layer-normalised")

REQUIRES = "transformers"
"""The package the adapter imports (the test of the missing-extra message hides it)."""

BART = "transformers/models/bart/modeling_bart.py"

BIASES = bart_family_biases(BART, "Bart")
LEARNED = (f"{BART}, BartLearnedPositionalEmbedding: an nn.Embedding looked up at position_ids + "
           "offset, created in BartEncoder.__init__ / BartDecoder.__init__ for "
           "max_position_embeddings positions; no sinusoidal table anywhere in the model")
PINS: dict[str, Pin] = {
    **common_pins(BIASES),  # 3.2.2/eq, 3.2.2/head-dims, 5.3/adam, 5.3/eq3, practice/trainable
    "3.4/output-softmax": generator_bias(BART, "BartForConditionalGeneration"),
    "3.5/formula": ("VARIANT", "learned-positions", LEARNED),
    "3.5/added": (
        "VARIANT", "embedding-norm, learned-positions",
        f"{BART}, BartEncoder.forward: hidden_states = inputs_embeds + embed_pos; hidden_states "
        "= self.layernorm_embedding(hidden_states) (BartDecoder.forward alike, with "
        "inputs_embeds + positions), then dropout; the positions are learned: " + LEARNED),
    "3.5/wavelengths": ("VARIANT", "learned-positions", LEARNED),
    "3.5/relative-linear": ("VARIANT", "learned-positions", LEARNED),
    "3.5/extrapolation": ("VARIANT", "learned-positions", LEARNED),
    "5.4/label-smoothing": no_label_smoothing(BART, "BartForConditionalGeneration", "vocab_size"),
    "6.1/beam-search": BEAM_SEARCH,
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
}
"""Every clause that does not simply CONFORM for ``BartForConditionalGeneration`` (the others
do)."""
