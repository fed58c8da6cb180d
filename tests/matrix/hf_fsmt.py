"""Pinned verdicts of transformers' ``FSMTForConditionalGeneration`` (``--impl hf-fsmt``,
transformers 5.23.0); sources are paths inside the ``transformers`` package at that version.

FSMT's full forward pass raises in float64 (``fill_with_neg_inf`` overflows): the suite reports
that in practice/devices-dtypes, and judges the other clauses by their runs in float32 (each says
its float64 run was not checked); 6.1/beam-search runs in float64 only, so it is not checked.
"""

from __future__ import annotations

from tests.matrix import Pin
from tests.matrix.transformers import common_pins, no_label_smoothing

ABOUT = ("Hugging Face transformers 5.23.0, FSMTForConditionalGeneration (fairseq's WMT19 "
         "Transformer) built from an FSMTConfig set to the paper's choices where it offers them "
         "(ReLU, scaled and three-way tied embeddings)")

REQUIRES = "transformers"
"""The package the adapter imports (the test of the missing-extra message hides it)."""

FSMT = "transformers/models/fsmt/modeling_fsmt.py"

BIASES = (f"{FSMT}, Attention.__init__: k_proj, v_proj, q_proj and out_proj are "
          "nn.Linear(embed_dim, embed_dim, bias=bias) with bias=True, which EncoderLayer.__init__ "
          "and DecoderLayer.__init__ keep")
INLINE = (f"{FSMT}, Attention.forward computes the scores (torch.bmm of q_proj(query) * scaling "
          "and k_proj(key)), applies attn_mask and key_padding_mask and the softmax inline: no "
          "function or module takes Q, K and V")
TRAINABLE_TABLE = (f"{FSMT}, SinusoidalPositionalEmbedding.__init__: an nn.Embedding of "
                   "max_position_embeddings + padding_idx + 1 rows (FSMTEncoder.__init__, "
                   "FSMTDecoder.__init__) whose weight stays a trainable parameter "
                   "(requires_grad=True, in model.parameters(); only make_weight, called when a "
                   "longer input comes, freezes a freshly computed table)")
PINS: dict[str, Pin] = {
    **common_pins(BIASES),  # 3.2.2/eq, 3.2.2/head-dims, 5.3/adam, 5.3/eq3, practice/trainable
    "3.1/shifted-right": (
        "DEVIATES", None,
        f"{FSMT}, shift_tokens_right(input_ids, pad_token_id) takes no start symbol: "
        "prev_output_tokens[:, 0] = input_ids.gather(1, index_of_eos), the target's last "
        "non-padding token (eos in fairseq's data), then prev_output_tokens[:, 1:] = "
        "input_ids[:, :-1]; FSMTForConditionalGeneration.prepare_decoder_input_ids_from_labels "
        "returns it, so the configured start symbol is never the first input"),
    **{cid: ("NOT PROVIDED", None, INLINE) for cid in (
        "3.2.1/eq1", "3.2.1/scale", "3.2.1/softmax-over-keys", "3.2.1/mask",
        "3.2.1/permutation")},
    "3.5/formula": (
        "VARIANT", "concatenated-sin-cos, one-based-positions, timescale-denominator",
        f"{FSMT}, SinusoidalPositionalEmbedding.get_embedding: emb = math.log(10000) / "
        "(half_dim - 1), torch.cat([torch.sin(emb), torch.cos(emb)], dim=1) ('matches the "
        "implementation in tensor2tensor'); SinusoidalPositionalEmbedding.make_positions numbers "
        "the tokens from padding_idx + 1, which is 1 with the suite's pad id 0"),
    "3.5/extrapolation": (
        "VARIANT", "learned-positions",
        f"{TRAINABLE_TABLE}: a model built for a longer max_len has more trainable parameters, "
        "and an optimizer updates the table"),
    "5.4/label-smoothing": no_label_smoothing(FSMT, "FSMTForConditionalGeneration",
                                              "tgt_vocab_size"),
    "6.1/beam-search": (
        "NOT PROVIDED", None,
        f"{FSMT}, fill_with_neg_inf: t.float().fill_(torch.finfo(t.dtype).min) overflows for a "
        "float64 mask (RuntimeError: value cannot be converted to type float without overflow), "
        "and the suite decodes in float64 only, so that rounding cannot flip a decision; "
        "generate's length penalty (GenerationMixin._update_finished_beams, log P / |Y|^alpha) "
        "is Marian's"),
    "table3/param-formula": (
        "DEVIATES", None,
        f"{TRAINABLE_TABLE}: two tables of max_len + pad + 1 rows, 2 (max_len + 1) d_model "
        "trainable parameters more than the formula (13,424 instead of 11,344 for d_model 16, "
        f"max_len 64), which no reading of the formula counts; and {BIASES}"),
    "practice/devices-dtypes": (
        "DEVIATES", None,
        f"{FSMT}, fill_with_neg_inf: t.float().fill_(torch.finfo(t.dtype).min) fills a float32 "
        "copy with float64's minimum, which overflows (RuntimeError: value cannot be converted "
        "to type float without overflow) when _prepare_fsmt_decoder_inputs builds the causal "
        "mask of a float64 model (FSMTModel.forward passes causal_mask_dtype = the embedding "
        "dtype): a float64 model cannot run a full pass, with or without labels"),
}
"""Every clause that does not simply CONFORM for ``FSMTForConditionalGeneration`` (the others
do)."""
