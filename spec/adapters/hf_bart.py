"""The adapter for Hugging Face transformers' ``BartForConditionalGeneration`` (``--impl hf-bart``).

Built from a ``BartConfig`` with random weights (nothing is downloaded: no hub, no tokenizer).
Like the Marian adapter it is *truthful*: it translates conventions (mask polarity and layout,
``nn.Linear``'s transposed weights, the ``-100`` label convention, the offset of the position
table) and exposes what the library has, through the library's own modules and functions; it
never changes what the library computes. Checked against transformers 5.23.0 (the ``matrix``
extra pins it); sources below are ``transformers/models/bart/modeling_bart.py`` unless named
otherwise.

How the model is configured
---------------------------
Every ``BartConfig`` setting that can take the paper's value is given it:
``activation_function="relu"`` (the config's default is ``"gelu"``),
``scale_embedding=True`` (default ``False``), ``tie_word_embeddings=True`` (the default: the
encoder and decoder embeddings and ``lm_head`` are all ``model.shared``, three-way tying),
``attention_dropout=0`` and ``activation_dropout=0`` (the config's defaults; ``dropout`` is the
suite's P_drop), ``encoder_layerdrop=0`` and ``decoder_layerdrop=0`` (defaults),
``decoder_start_token_id`` = the start symbol (BART's checkpoints start from the eos id),
``bos_token_id`` = the start symbol, ``forced_eos_token_id=None`` (the default, 2, would force
eos at the length limit) and ``max_position_embeddings`` = max_len. The attention
implementation is the library's default (``sdpa``). What no setting changes: BART has one
vocabulary (``vocab_size``), so the adapter builds only configurations with a shared vocabulary
(``model`` raises otherwise); its positions are learned and its embeddings normalised.

What BART is, clause by clause
------------------------------
3.1 Post-norm layers (``BartEncoderLayer.forward``: ``residual + dropout(sublayer)``, then
    ``self_attn_layer_norm`` / ``final_layer_norm``), ``nn.LayerNorm`` with eps 1e-5, no norm
    after either stack. ``shift_tokens_right`` makes the decoder input.
3.2 ``BartAttention``: separate ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``, each
    ``nn.Linear(..., bias=True)`` (variant ``projection-biases``), ``scaling = head_dim**-0.5``;
    the scores go through ``ALL_ATTENTION_FUNCTIONS`` (``sdpa_attention_forward``, or
    ``eager_attention_forward``, which alone returns the weights).
3.3 ``fc2(act(fc1(x)))`` inside the layers: no standalone FFN module.
3.4 ``BartScaledWordEmbedding.forward``: ``embedding(ids) * embed_scale`` with
    ``embed_scale = sqrt(d_model)``; ``BartForConditionalGeneration.forward``: ``lm_logits =
    lm_head(x) + final_logits_bias``: the pre-softmax map has a bias, a non-trainable buffer
    (``nn.Buffer``, zero at initialisation, loaded from checkpoints).
3.5 ``BartLearnedPositionalEmbedding``: an ``nn.Embedding`` of ``max_position_embeddings + 2``
    rows looked up at ``position + offset`` (offset 2, a fairseq legacy: rows 0 and 1 are never
    read): learned positions, no sinusoidal table (``positional_encoding`` is NOT PROVIDED).
    ``BartEncoder.forward`` / ``BartDecoder.forward``: ``layernorm_embedding(inputs_embeds +
    positions)``, then dropout: a LayerNorm on the embedding sum (variant ``embedding-norm``).
5.3 ``transformers.optimization`` ships schedules, among them ``get_inverse_sqrt_schedule``
    (Eq. 3 once the base rate is the paper's peak), and Adafactor but no Adam: the Trainer's
    AdamW needs ``accelerate``, which the extra does not install. ``optimizer`` is NOT PROVIDED.
5.4 ``dropout`` after the embedding LayerNorm and on every sub-layer output; attention and
    activation dropout are configurable and set to 0 (the config's defaults).
    ``BartForConditionalGeneration.forward(labels=...)`` computes ``CrossEntropyLoss()``: no
    label smoothing.
6.1 ``GenerationMixin.generate``: greedy, and beam search whose length penalty is
    ``sum log p / |Y|**length_penalty`` (``generation/utils.py``,
    ``GenerationMixin._update_finished_beams``), not Wu et al.'s ((5 + |Y|) / 6)^alpha.
Practice: ``past_key_values`` (``EncoderDecoderCache``) for incremental decoding;
    ``save_pretrained`` / ``from_pretrained`` (local directory) for save and load.

Canonical parameter names map onto BART's as follows (``Linear`` weights are transposed):
``W_Q``/``W_K``/``W_V`` <- ``q_proj``/``k_proj``/``v_proj.weight`` split per head, ``b_*`` <-
their biases, ``W_O``/``b_O`` <- ``out_proj``; the decoder's ``cross_attn`` is ``encoder_attn``;
``ffn.W_1``/``b_1`` <- ``fc1``, ``ffn.W_2``/``b_2`` <- ``fc2``; encoder ``norm_1`` <-
``self_attn_layer_norm``, ``norm_2`` <- ``final_layer_norm``; decoder ``norm_1`` <-
``self_attn_layer_norm``, ``norm_2`` <- ``encoder_attn_layer_norm``, ``norm_3`` <-
``final_layer_norm``; ``src_embedding``/``tgt_embedding`` <- ``model.encoder``/``decoder
.embed_tokens.weight``, ``generator.W`` <- ``lm_head.weight`` (all three one tensor),
``generator.b`` <- ``final_logits_bias[0]``; ``src_positions``/``tgt_positions`` <- rows
``[2, max_len + 2)`` of ``model.encoder``/``decoder.embed_positions.weight`` (position p is row
p + 2); ``src_embedding_norm``/``tgt_embedding_norm`` <- ``model.encoder``/``decoder
.layernorm_embedding``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from spec.adapter import AdapterError, Config
from spec.adapters.layout import Layout, Slot

try:
    from transformers import BartConfig, BartForConditionalGeneration
    from transformers.models.bart.modeling_bart import (
        BartAttention,
        BartLearnedPositionalEmbedding,
        eager_attention_forward,
        shift_tokens_right,
    )
except ImportError:
    raise AdapterError(
        "hf-bart needs the optional extra: pip install 'attention-spec[matrix]'"
    ) from None

from spec.adapters._bart_family import BartFamily, BartFamilyAdapter
from spec.adapters._hf import (
    NOT_PROVIDED,
    generator_layout,
    no_feed_forward,
    paper_settings,
)

__all__ = ["HFBartAdapter", "adapter"]


def _stack_layout(which: str, stack: nn.Module) -> Layout:
    """A stack's token embedding, its learned positions (the rows past the offset) and its
    embedding LayerNorm."""
    path = f"model.{'encoder' if which == 'src' else 'decoder'}."
    positions = stack.get_submodule("embed_positions")
    assert isinstance(positions, BartLearnedPositionalEmbedding)
    rows = (positions.offset, positions.num_embeddings)  # position p is row p + offset
    return {
        f"{which}_embedding": Slot(f"{path}embed_tokens.weight"),
        f"{which}_positions": Slot(f"{path}embed_positions.weight", rows=rows),
        f"{which}_embedding_norm.gamma": Slot(f"{path}layernorm_embedding.weight"),
        f"{which}_embedding_norm.beta": Slot(f"{path}layernorm_embedding.bias"),
    }


def _bart_config(config: Config) -> BartConfig:
    """The ``BartConfig`` for the suite's configuration, with the paper's choices where the
    library offers them (see the module docstring). BART has one vocabulary for both sides."""
    if not config.shared_vocab or config.src_vocab != config.tgt_vocab:
        raise ValueError(
            f"BART has one vocabulary (BartConfig.vocab_size) shared by encoder, decoder and "
            f"lm_head: it cannot build src_vocab={config.src_vocab}, "
            f"tgt_vocab={config.tgt_vocab}, shared_vocab={config.shared_vocab}")
    return BartConfig(
        vocab_size=config.src_vocab,
        tie_word_embeddings=True,
        bos_token_id=config.bos_id,
        **paper_settings(config),
    )


class HFBartAdapter(BartFamilyAdapter):
    """Adapter for transformers' ``BartForConditionalGeneration`` and ``BartAttention``: the
    mapping the BART family shares (``spec.adapters._bart_family.BartFamilyAdapter``, called
    with BART's own functions), with BART's learned positions and embedding LayerNorm among the
    canonical parameters; see the module docstring for what each method maps to and why some
    capabilities are missing."""

    name = "hf-bart"
    model_class = BartForConditionalGeneration
    attention_class = BartAttention
    family = BartFamily(config=_bart_config, eager_attention=eager_attention_forward,
                        shift_tokens_right=shift_tokens_right)

    not_provided: ClassVar[dict[str, str]] = {
        "feed_forward": no_feed_forward("BART"),
        "positional_encoding": "BART learns its positions (BartLearnedPositionalEmbedding, an "
        "nn.Embedding): there is no sinusoidal table; the learned ones are src_positions / "
        "tgt_positions",
        **NOT_PROVIDED,
    }
    """Why each capability is missing: the report shows these reasons."""

    def _embedding_layout(self, model: Any) -> Layout:
        """Each stack's token embedding, learned positions and embedding LayerNorm, then
        ``lm_head`` with ``final_logits_bias``."""
        return {
            **_stack_layout("src", model.model.encoder),
            **_stack_layout("tgt", model.model.decoder),
            **generator_layout(),
        }


adapter = HFBartAdapter()
"""The shipped adapter for transformers' BART (``--impl hf-bart``)."""
