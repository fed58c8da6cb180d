"""Pinned verdicts of transformers' ``MarianMTModel`` (``--impl hf-marian``, transformers
5.23.0); sources are paths inside the ``transformers`` package at that version."""

from __future__ import annotations

from tests.matrix import Pin
from tests.matrix.transformers import (
    BEAM_SEARCH,
    bart_family_biases,
    common_pins,
    generator_bias,
    no_label_smoothing,
)

ABOUT = ("Hugging Face transformers 5.23.0, MarianMTModel built from a MarianConfig set to the "
         "paper's choices where it offers them (ReLU, scaled and three-way tied embeddings)")

REQUIRES = "transformers"
"""The package the adapter imports (the test of the missing-extra message hides it)."""

MARIAN = "transformers/models/marian/modeling_marian.py"

BIASES = bart_family_biases(MARIAN, "Marian")
PINS: dict[str, Pin] = {
    **common_pins(BIASES),  # 3.2.2/eq, 3.2.2/head-dims, 5.3/adam, 5.3/eq3, practice/trainable
    "3.4/output-softmax": generator_bias(MARIAN, "MarianMTModel"),
    "3.5/formula": (
        "VARIANT", "concatenated-sin-cos",
        f"{MARIAN}, MarianSinusoidalPositionalEmbedding.create_weight: out[:, 0:sentinel] = "
        "sin(...), out[:, sentinel:] = cos(...), 'features are not interleaved'"),
    "5.4/label-smoothing": no_label_smoothing(MARIAN, "MarianMTModel", "decoder_vocab_size"),
    "6.1/beam-search": BEAM_SEARCH,
    "table3/param-formula": (
        "VARIANT", "projection-biases",
        f"{BIASES}; {MARIAN}, MarianMTModel.__init__: self.final_logits_bias = "
        "nn.Buffer(torch.zeros((1, target_vocab_size))), a bias of V entries that is not a "
        "trainable parameter, so the trainable count is the formula with projection biases"),
}
"""Every clause that does not simply CONFORM for ``MarianMTModel`` (the others do)."""
