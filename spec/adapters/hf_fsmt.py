"""The adapter for Hugging Face transformers' ``FSMTForConditionalGeneration`` (``--impl hf-fsmt``).

FSMT is fairseq's WMT19 translation Transformer ported to transformers. Built from an
``FSMTConfig`` with random weights (nothing is downloaded: no hub, no tokenizer). Like the
Marian adapter it is *truthful*: it translates conventions (mask polarity and layout, the
time-first layout of FSMT's layers, ``nn.Linear``'s transposed weights, the ``-100`` label
convention) and exposes what the library has, through the library's own modules and functions;
it never changes what the library computes. Checked against transformers 5.23.0 (the ``matrix``
extra pins it); sources below are ``transformers/models/fsmt/modeling_fsmt.py`` unless named
otherwise.

How the model is configured
---------------------------
Every ``FSMTConfig`` setting that can take the paper's value is given it:
``activation_function="relu"`` and ``scale_embedding=True`` (both the config's defaults),
``tie_word_embeddings=True`` for a shared vocabulary (FSMT then ties all three matrices: the
source embedding, the target embedding and ``output_projection``, ``FSMTModel
._tied_weights_keys``; it has no setting for two-way tying, and with separate vocabularies it
must stay ``False``, for tying would silently give the encoder the decoder's vocabulary),
``attention_dropout=0``, ``activation_dropout=0`` and no layerdrop (the config's defaults;
``dropout`` is the suite's P_drop), ``decoder_start_token_id`` = the start symbol (the
default, 2, is fairseq's eos), ``forced_eos_token_id=None`` (the default, 2, would force eos
at the length limit) and ``max_position_embeddings`` = max_len.

What FSMT is, clause by clause
------------------------------
3.1 Post-norm layers (``EncoderLayer.forward`` / ``DecoderLayer.forward``: ``residual +
    dropout(sublayer)``, then ``self_attn_layer_norm`` / ``encoder_attn_layer_norm`` /
    ``final_layer_norm``), ``torch.nn.LayerNorm`` with eps 1e-5, no norm after either stack. The
    layers work time-first (``[T, B, C]``); the adapter transposes at its boundary.
    ``shift_tokens_right(tgt, pad)`` makes the training decoder input fairseq's way: it takes
    no start symbol, but moves the target's last non-padding token (eos in fairseq's data) to
    the front (``FSMTForConditionalGeneration.prepare_decoder_input_ids_from_labels``, which
    ``DataCollatorForSeq2Seq`` calls).
3.2 ``Attention``: separate ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``, each
    ``nn.Linear(..., bias=True)`` (variant ``projection-biases``), ``scaling = head_dim**-0.5``
    applied to the queries; the scores, the masks (an additive ``attn_mask`` and a boolean
    ``key_padding_mask`` filled with the dtype's minimum) and the softmax are inline in
    ``Attention.forward`` (``torch.bmm``): no function takes Q, K and V, so ``attention`` and
    ``attention_weights`` are NOT PROVIDED. With ``encoder_decoder_attention=False`` (the
    layers' self-attention) ``forward`` reads keys and values from ``query`` and ignores
    ``key``; with ``True`` (the decoder's ``encoder_attn``) from ``key``.
3.3 ``fc2(act(fc1(x)))`` inside the layers: no standalone FFN module.
3.4 ``embed_tokens(ids) * embed_scale`` with ``embed_scale = sqrt(d_model)``;
    ``FSMTDecoder.forward`` ends with ``output_projection`` (``nn.Linear(..., bias=False)``):
    the model's output is the logits.
3.5 ``SinusoidalPositionalEmbedding.get_embedding``: tensor2tensor's frequencies
    ``10000^(-i/(d_model/2 - 1))`` (variant ``timescale-denominator``), sines in the first half
    and cosines in the second (``concatenated-sin-cos``), computed in float32.
    ``make_positions`` numbers the non-padding tokens from ``padding_idx + 1`` and gives
    padding the all-zero row ``padding_idx``: the row of position p (from 0) is p + pad + 1,
    so with the suite's pad id 0 positions count from 1 (``one-based-positions``; FSMT's own
    pad id 1 would start them at 2). ``positional_encoding`` returns those rows. The table is
    an ``nn.Embedding`` weight, a *trainable* parameter (``requires_grad=True``; only
    ``make_weight``, which rebuilds a fresh sinusoidal table when a longer input comes, freezes
    it), of ``max_position_embeddings + pad + 1`` rows, and it is saved. It is not exposed
    under canonical names: its values are the sinusoids, and what an optimizer would make of
    them is what 3.5/extrapolation and Table 3's count report.
5.3 As for Marian: ``transformers.optimization`` ships ``get_inverse_sqrt_schedule`` (Eq. 3
    once the base rate is the paper's peak) and Adafactor but no Adam. ``optimizer`` is NOT
    PROVIDED.
5.4 ``dropout`` after the embedding sum and on every sub-layer output; attention and activation
    dropout are configurable and set to 0 (the config's defaults).
    ``FSMTForConditionalGeneration.forward(labels=...)`` computes ``CrossEntropyLoss()``: no
    label smoothing. ``loss`` gives padding targets the ignore label -100, as
    ``DataCollatorForSeq2Seq`` pads labels; that collator then passes its labels to
    ``prepare_decoder_input_ids_from_labels``, whose ``shift_tokens_right`` turns the -100 into
    the pad id in place, so that a loss on the collated labels counts the padding targets: a
    pipeline effect, not the loss's, and not taken here.
6.1 ``GenerationMixin.generate``: greedy, and beam search whose length penalty is
    ``sum log p / |Y|**length_penalty`` (``generation/utils.py``), not Wu et al.'s.
Dtypes: ``fill_with_neg_inf`` fills a float32 copy with the model dtype's minimum, which
    overflows for float64: ``_prepare_fsmt_decoder_inputs`` raises when it builds the causal mask
    of a float64 model, so ``FSMTModel.forward`` (with ``labels`` or ``use_cache=False``) fails
    in float64, and so do ``forward`` and ``decode`` here, which take the mask from it. Cached
    decoding (``generate``, ``incremental_logits``, ``decode_incremental``) needs no mask and
    runs in float64.
Practice: ``past_key_values`` (an ``EncoderDecoderCache``) for incremental decoding;
    ``save_pretrained`` / ``from_pretrained`` (local directory) for save and load (the
    positional tables are parameters, and saved). ``FSMTModel.forward`` builds the causal mask only when ``use_cache`` is off (it is on in the
    config by default): a full pass over a target must say ``use_cache=False``, or pass
    ``labels``, as this adapter does.

Canonical parameter names map onto FSMT's as follows (``Linear`` weights are transposed):
``W_Q``/``W_K``/``W_V`` <- ``q_proj``/``k_proj``/``v_proj.weight`` split per head, ``b_*`` <-
their biases, ``W_O``/``b_O`` <- ``out_proj``; the decoder's ``cross_attn`` is ``encoder_attn``;
``ffn.W_1``/``b_1`` <- ``fc1``, ``ffn.W_2``/``b_2`` <- ``fc2``; encoder ``norm_1`` <-
``self_attn_layer_norm``, ``norm_2`` <- ``final_layer_norm``; decoder ``norm_1`` <-
``self_attn_layer_norm``, ``norm_2`` <- ``encoder_attn_layer_norm``, ``norm_3`` <-
``final_layer_norm``; ``src_embedding``/``tgt_embedding`` <- ``model.encoder``/``decoder
.embed_tokens.weight``, ``generator.W`` <- ``model.decoder.output_projection.weight``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from spec.adapter import AdapterError, Config
from spec.adapters.layout import Layout, Slot, transpose

try:
    from transformers import FSMTConfig, FSMTForConditionalGeneration
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache
    from transformers.models.fsmt.modeling_fsmt import (
        Attention,
        SinusoidalPositionalEmbedding,
        _prepare_fsmt_decoder_inputs,
        invert_mask,
        shift_tokens_right,
    )
except ImportError:
    raise AdapterError(
        "hf-fsmt needs the optional extra: pip install 'attention-spec[matrix]'"
    ) from None

from spec.adapters._hf import (
    NOT_PROVIDED,
    TransformersAdapter,
    additive_mask,
    no_feed_forward,
    paper_settings,
    stack_input,
)

__all__ = ["HFFSMTAdapter", "adapter"]


def _fsmt_config(config: Config) -> FSMTConfig:
    """The ``FSMTConfig`` for the suite's configuration, with the paper's choices where the
    library offers them (see the module docstring)."""
    if config.shared_vocab and config.src_vocab != config.tgt_vocab:
        raise ValueError(
            f"a shared vocabulary needs src_vocab == tgt_vocab, got {config.src_vocab} and "
            f"{config.tgt_vocab}: FSMT's tie_word_embeddings would give the encoder the "
            "decoder's vocabulary")
    return FSMTConfig(
        src_vocab_size=config.src_vocab,
        tgt_vocab_size=config.tgt_vocab,
        tie_word_embeddings=config.shared_vocab,
        bos_token_id=config.bos_id,
        **paper_settings(config),
    )


class HFFSMTAdapter(TransformersAdapter):
    """Adapter for transformers' ``FSMTForConditionalGeneration`` and FSMT's ``Attention``: what
    the transformers adapters share (``spec.adapters._hf.TransformersAdapter``: ``forward``,
    ``generate``, the loss, the schedule, save and load) and FSMT's own attention call, time-first
    layers and fairseq's decoder input; see the module docstring for what each method maps to
    and why some capabilities are missing."""

    name = "hf-fsmt"
    model_class = FSMTForConditionalGeneration
    attention_class = Attention

    not_provided: ClassVar[dict[str, str]] = {
        "attention": "FSMT computes scaled dot-product attention inline in Attention.forward "
        "(torch.bmm of the projected queries and keys, softmax, torch.bmm with the values): no "
        "function takes Q, K and V",
        "attention_weights": "Attention.forward returns the weights of its own projections "
        "(output_attentions=True), never of given Q and K: no function computes them alone",
        "feed_forward": no_feed_forward("FSMT"),
        **NOT_PROVIDED,
    }
    """Why each capability is missing: the report shows these reasons."""

    # -- 3.2.2 ---------------------------------------------------------------------------
    def multi_head(self, d_model: int, h: int) -> nn.Module:
        """``Attention(d_model, h, encoder_decoder_attention=True)``, the flavour of the
        decoder's ``encoder_attn``: queries from ``query``, keys and values from ``key``, so
        that it serves cross- and self-attention alike (the layers' self-attention flavour
        reads keys and values from ``query``: the same numbers when ``key`` is ``query``).
        The library's defaults otherwise (``bias=True``, no dropout)."""
        return Attention(d_model, h, encoder_decoder_attention=True)

    def multi_head_forward(
        self, module: nn.Module, x: Tensor, memory: Tensor | None, mask: Tensor | None
    ) -> Tensor:
        """``module(query=x, key=memory or x, attn_mask=...)`` time-first, as the layers call
        their attention (``EncoderLayer`` passes ``key=x``), the mask additive."""
        assert isinstance(module, Attention)
        kv = x if memory is None else memory
        attn_mask = None if mask is None else additive_mask(mask.to(x.device), x.dtype)
        out: Tensor = module(query=x.transpose(0, 1), key=kv.transpose(0, 1),
                             attn_mask=attn_mask)[0]
        return out.transpose(0, 1)

    # -- 3.5 -----------------------------------------------------------------------------
    def positional_encoding(self, length: int, d_model: int) -> Tensor:
        """The rows the model adds at positions 0 .. length - 1 of an unpadded sequence:
        ``SinusoidalPositionalEmbedding.get_embedding(length + pad + 1, d_model, pad)`` from
        row pad + 1 on (``make_positions`` numbers tokens from ``padding_idx + 1``), with the
        suite's pad id; float32, as the library computes it."""
        pad = Config.pad_id
        table: Tensor = SinusoidalPositionalEmbedding.get_embedding(length + pad + 1, d_model,
                                                                    pad)
        return table[pad + 1 :]

    # -- the model -----------------------------------------------------------------------
    def model(self, config: Config) -> FSMTForConditionalGeneration:
        """``FSMTForConditionalGeneration(FSMTConfig(...))`` with random weights (see the module
        docstring for the settings)."""
        return FSMTForConditionalGeneration(_fsmt_config(config))

    def _embedding_layout(self, model: Any) -> Layout:
        """The token embeddings and ``output_projection`` (no bias) as the generator; the
        positional tables have no canonical name (see the module docstring)."""
        return {
            "src_embedding": Slot("model.encoder.embed_tokens.weight"),
            "tgt_embedding": Slot("model.decoder.embed_tokens.weight"),
            "generator.W": Slot("model.decoder.output_projection.weight", transpose, transpose),
        }

    def embed_source(self, model: FSMTForConditionalGeneration, src: Tensor) -> Tensor:
        """What ``FSMTEncoder.forward`` feeds its first layer: ``embed_tokens(src) *
        embed_scale + embed_positions(src)``, then dropout; batch-first (the layers work
        time-first)."""
        return stack_input(model.model.encoder, input_ids=src).transpose(0, 1)

    def embed_target(self, model: FSMTForConditionalGeneration, tgt: Tensor) -> Tensor:
        """What ``FSMTDecoder.forward`` feeds its first layer (same recipe, no cache). The
        decoder transposes the encoder output before its layers, so it is given an empty one:
        it is stopped before any layer could read it."""
        decoder = model.model.decoder
        empty = decoder.embed_tokens.weight.new_zeros(tgt.size(0), 0, decoder.embed_tokens
                                                      .embedding_dim)
        hidden = stack_input(decoder, input_ids=tgt, encoder_hidden_states=empty,
                             encoder_padding_mask=None, decoder_padding_mask=None,
                             decoder_causal_mask=None, use_cache=False)
        return hidden.transpose(0, 1)  # the layers work time-first

    def encode(self, model: FSMTForConditionalGeneration, x: Tensor, src_mask: Tensor) -> Tensor:
        """The rest of ``FSMTEncoder.forward``: ``invert_mask`` of the padding mask (True =
        padding), then each ``EncoderLayer`` time-first (layerdrop is 0)."""
        padding = invert_mask(src_mask)
        h = x.transpose(0, 1)
        for layer in model.model.encoder.layers:
            h = layer(h, padding)[0]
        return h.transpose(0, 1)

    def decode(self, model: FSMTForConditionalGeneration, y: Tensor, memory: Tensor,
               src_mask: Tensor) -> Tensor:
        """The rest of ``FSMTDecoder.forward`` without a cache: the causal mask of
        ``_prepare_fsmt_decoder_inputs`` (as ``FSMTModel.forward`` makes it; the ids it is given
        only set the shape, and no decoder padding is masked: the input is embeddings), the
        source padding mask inverted, then each ``DecoderLayer`` time-first."""
        ids = torch.zeros(y.shape[:2], dtype=torch.long, device=y.device)
        _, _, causal = _prepare_fsmt_decoder_inputs(
            model.config, None, decoder_input_ids=ids,
            decoder_padding_mask=torch.ones_like(ids), causal_mask_dtype=y.dtype)
        return self._layers(model, y, memory, src_mask, causal, None)

    def decode_incremental(
        self, model: FSMTForConditionalGeneration, y: Tensor, memory: Tensor, src_mask: Tensor
    ) -> Tensor:
        """``decode`` one position at a time with the library's ``EncoderDecoderCache`` (each
        layer's self-attention appends its keys and values; the cross-attention keys are
        computed once), without a causal mask, as ``FSMTModel.forward`` runs with
        ``use_cache``."""
        config = model.config
        cache = EncoderDecoderCache(DynamicCache(config=config), DynamicCache(config=config))
        steps = [self._layers(model, y[:, t : t + 1], memory, src_mask, None, cache)
                 for t in range(y.size(1))]
        return torch.cat(steps, dim=1)

    def _layers(self, model: FSMTForConditionalGeneration, y: Tensor, memory: Tensor,
                src_mask: Tensor, causal: Tensor | None, cache: EncoderDecoderCache | None
                ) -> Tensor:
        padding = invert_mask(src_mask)
        h, m = y.transpose(0, 1), memory.transpose(0, 1)
        for layer in model.model.decoder.layers:
            h = layer(h, m, encoder_attn_mask=padding, decoder_padding_mask=None,
                      layer_state=cache, causal_mask=causal)[0]
        return h.transpose(0, 1)

    def project(self, model: FSMTForConditionalGeneration, y: Tensor) -> Tensor:
        """``output_projection(y)``, the last step of ``FSMTDecoder.forward``."""
        logits: Tensor = model.model.decoder.output_projection(y)
        return logits

    def decoder_input(self, tgt: Tensor, bos_id: int) -> Tensor:
        """``shift_tokens_right(tgt, pad)``, what ``prepare_decoder_input_ids_from_labels``
        returns: the target shifted right behind its last non-padding token (fairseq's eos
        as start symbol); it takes no start symbol, so ``bos_id`` is not used. The padding id is
        the suite's default (the protocol passes none). (The function also turns -100 labels
        into padding in place; the suite's targets hold none.)"""
        shifted: Tensor = shift_tokens_right(tgt, Config.pad_id)
        return shifted


adapter = HFFSMTAdapter()
"""The shipped adapter for transformers' FSMT (``--impl hf-fsmt``)."""
