"""The adapter for Hugging Face transformers' ``MarianMTModel`` (``--impl hf-marian``).

Built from a ``MarianConfig`` with random weights (nothing is downloaded: no hub, no tokenizer).
Like the ``torch.nn`` adapter it is *truthful*: it translates conventions (mask polarity and
layout, ``nn.Linear``'s transposed weights, the ``-100`` label convention) and exposes what the
library has, through the library's own modules and functions; it never changes what the library
computes. Checked against transformers 5.23.0 (the ``matrix`` extra pins it); sources below are
``transformers/models/marian/modeling_marian.py`` unless named otherwise.

How the model is configured
---------------------------
Every ``MarianConfig`` setting that can take the paper's value is given it:
``activation_function="relu"`` (the config's default is ``"gelu"``),
``scale_embedding=True`` (default ``False``), ``share_encoder_decoder_embeddings=True`` and
``tie_word_embeddings=True`` for a shared vocabulary (three-way tying; otherwise the decoder
embedding and ``lm_head`` are tied), ``attention_dropout=0`` and ``activation_dropout=0``
(the config's defaults; ``dropout`` is the suite's P_drop), ``encoder_layerdrop=0`` and
``decoder_layerdrop=0`` (defaults), ``decoder_start_token_id`` = the start symbol (Marian's
checkpoints start from the pad id), ``forced_eos_token_id=None`` (the default, 0, would force
eos at the length limit) and ``max_position_embeddings`` = max_len.
The attention implementation is the library's default (``sdpa``).

What Marian is, clause by clause
--------------------------------
3.1 Post-norm layers (``MarianEncoderLayer.forward``: ``residual + dropout(sublayer)``, then
    ``self_attn_layer_norm`` / ``final_layer_norm``), ``nn.LayerNorm`` with eps 1e-5, no norm
    after either stack. ``shift_tokens_right`` makes the decoder input.
3.2 ``MarianAttention``: separate ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``, each
    ``nn.Linear(..., bias=True)`` (variant ``projection-biases``), ``scaling = head_dim**-0.5``;
    the scores go through ``ALL_ATTENTION_FUNCTIONS`` (``sdpa_attention_forward``, or
    ``eager_attention_forward``, which alone returns the weights).
3.3 ``fc2(act(fc1(x)))`` inside the layers: no standalone FFN module.
3.4 ``embed_tokens(ids) * embed_scale`` with ``embed_scale = sqrt(d_model)``;
    ``lm_logits = lm_head(x) + final_logits_bias``: the pre-softmax map has a bias, a
    non-trainable buffer (``nn.Buffer``, zero at initialisation, loaded from checkpoints).
3.5 ``MarianSinusoidalPositionalEmbedding.create_weight``: the paper's frequencies, sines in
    the first half and cosines in the second (variant ``concatenated-sin-cos``), computed in
    numpy float64 and stored as ``torch.FloatTensor`` (float32) in a frozen parameter (not
    canonical: nothing learned).
5.3 ``transformers.optimization`` ships schedules, among them ``get_inverse_sqrt_schedule``
    (Eq. 3 once the base rate is the paper's peak), and Adafactor but no Adam: the Trainer's
    AdamW needs ``accelerate``, which the extra does not install. ``optimizer`` is NOT PROVIDED.
    (The Trainer steps the schedule after each update, so its k-th update uses the rate of step
    k - 1: the first one runs at rate 0.)
5.4 ``dropout`` after the embedding sum and on every sub-layer output; attention and activation
    dropout are configurable and set to 0 (the config's defaults). ``MarianMTModel.forward
    (labels=...)`` computes ``CrossEntropyLoss()``: no label smoothing.
6.1 ``GenerationMixin.generate``: greedy, and beam search whose length penalty is
    ``sum log p / |Y|**length_penalty`` (``generation/utils.py``,
    ``GenerationMixin._update_finished_beams``), not Wu et al.'s ((5 + |Y|) / 6)^alpha.
Practice: ``past_key_values`` (``EncoderDecoderCache``) for incremental decoding;
    ``save_pretrained`` / ``from_pretrained`` (local directory) for save and load; the
    positional tables are not saved (``MarianMTModel._keys_to_ignore_on_save``).

Canonical parameter names map onto Marian's as follows (``Linear`` weights are transposed):
``W_Q``/``W_K``/``W_V`` <- ``q_proj``/``k_proj``/``v_proj.weight`` split per head, ``b_*`` <-
their biases, ``W_O``/``b_O`` <- ``out_proj``; the decoder's ``cross_attn`` is ``encoder_attn``;
``ffn.W_1``/``b_1`` <- ``fc1``, ``ffn.W_2``/``b_2`` <- ``fc2``; encoder ``norm_1`` <-
``self_attn_layer_norm``, ``norm_2`` <- ``final_layer_norm``; decoder ``norm_1`` <-
``self_attn_layer_norm``, ``norm_2`` <- ``encoder_attn_layer_norm``, ``norm_3`` <-
``final_layer_norm``; ``src_embedding``/``tgt_embedding`` <- ``model.encoder``/``decoder
.embed_tokens.weight``, ``generator.W`` <- ``lm_head.weight``, ``generator.b`` <-
``final_logits_bias[0]``.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from spec.adapter import AdapterError, Config

try:
    from transformers import MarianConfig, MarianMTModel
    from transformers.models.marian.modeling_marian import (
        MarianAttention,
        MarianSinusoidalPositionalEmbedding,
        eager_attention_forward,
        shift_tokens_right,
    )
except ImportError:
    raise AdapterError(
        "hf-marian needs the optional extra: pip install 'attention-spec[matrix]'"
    ) from None

from spec.adapters._bart_family import BartFamily, BartFamilyAdapter
from spec.adapters._hf import (
    NOT_PROVIDED,
    no_feed_forward,
    paper_settings,
)

__all__ = ["HFMarianAdapter", "adapter"]


def _marian_config(config: Config) -> MarianConfig:
    """The ``MarianConfig`` for the suite's configuration, with the paper's choices where the
    library offers them (see the module docstring)."""
    return MarianConfig(
        vocab_size=config.src_vocab,
        decoder_vocab_size=config.tgt_vocab,
        share_encoder_decoder_embeddings=config.shared_vocab,
        tie_word_embeddings=True,
        **paper_settings(config),
    )


class HFMarianAdapter(BartFamilyAdapter):
    """Adapter for transformers' ``MarianMTModel`` and ``MarianAttention``: the mapping the BART
    family shares (``spec.adapters._bart_family.BartFamilyAdapter``, called with Marian's own
    functions) and Marian's sinusoidal table; see the module docstring for what each method maps
    to and why some capabilities are missing."""

    name = "hf-marian"
    model_class = MarianMTModel
    attention_class = MarianAttention
    family = BartFamily(config=_marian_config, eager_attention=eager_attention_forward,
                        shift_tokens_right=shift_tokens_right)

    not_provided: ClassVar[dict[str, str]] = {
        "feed_forward": no_feed_forward("Marian"),
        **NOT_PROVIDED,
    }
    """Why each capability is missing: the report shows these reasons."""

    # -- 3.5 -----------------------------------------------------------------------------
    def positional_encoding(self, length: int, d_model: int) -> Tensor:
        """``MarianSinusoidalPositionalEmbedding.create_weight``: float32, as the model holds
        it."""
        table: Tensor = MarianSinusoidalPositionalEmbedding(length, d_model).create_weight()
        return table


adapter = HFMarianAdapter()
"""The shipped adapter for transformers' Marian (``--impl hf-marian``)."""
