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
    label smoothing.
6.1 ``GenerationMixin.generate``: greedy, and beam search whose length penalty is
    ``sum log p / |Y|**length_penalty`` (``generation/utils.py``), not Wu et al.'s.
Dtypes: ``fill_with_neg_inf`` fills a float32 copy with the model dtype's minimum, which
    overflows for float64: ``_prepare_fsmt_decoder_inputs`` raises when it builds the causal mask
    of a float64 model, so ``FSMTModel.forward`` (with ``labels`` or ``use_cache=False``) fails
    in float64, and so do ``forward`` and ``decode`` here, which take the mask from it. Cached
    decoding (``generate``, ``incremental_logits``, ``decode_incremental``) needs no mask and
    runs in float64.
Practice: ``past_key_values`` (an ``EncoderDecoderCache``) for incremental decoding;
    ``save_pretrained`` / ``from_pretrained`` (local directory) for save and load.
    ``FSMTModel.forward`` builds the causal mask only when ``use_cache`` is off (it is on in the
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

import os
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from spec.adapter import AdapterError, Config, Params
from spec.adapters.layout import Layout, Slot, heads, read, transpose, write

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
    from transformers.optimization import get_inverse_sqrt_schedule
except ImportError:
    raise AdapterError(
        "hf-fsmt needs the optional extra: pip install 'attention-spec[matrix]'"
    ) from None

__all__ = ["HFFSMTAdapter", "adapter"]

BEAM = {"num_beams": 4, "length_penalty": 0.6, "early_stopping": True}
"""``generate``'s beam-search settings: the paper's beam and alpha; ``early_stopping=True``
stops once ``num_beams`` hypotheses have ended (the paper: "terminate early when possible")."""


def _attention_layout(prefix: str, path: str, module: Attention) -> Layout:
    """FSMT's ``Attention``: ``q_proj``, ``k_proj``, ``v_proj`` rows ``[i d_k, (i+1) d_k)`` are
    head i; ``out_proj`` maps the concatenated heads."""
    return heads(prefix, path, module.num_heads, module.head_dim, module.embed_dim,
                 bias=module.q_proj.bias is not None)


def _layer_layout(prefix: str, path: str, layer: nn.Module, decoder: bool) -> Layout:
    out = _attention_layout(f"{prefix}self_attn.", f"{path}self_attn.", layer.self_attn)
    norms = ["self_attn_layer_norm", "final_layer_norm"]
    if decoder:
        out.update(_attention_layout(f"{prefix}cross_attn.", f"{path}encoder_attn.",
                                     layer.encoder_attn))
        norms.insert(1, "encoder_attn_layer_norm")
    for k, fc in ((1, "fc1"), (2, "fc2")):
        out[f"{prefix}ffn.W_{k}"] = Slot(f"{path}{fc}.weight", transpose, transpose)
        out[f"{prefix}ffn.b_{k}"] = Slot(f"{path}{fc}.bias")
    for k, norm in enumerate(norms, 1):
        out[f"{prefix}norm_{k}.gamma"] = Slot(f"{path}{norm}.weight")
        out[f"{prefix}norm_{k}.beta"] = Slot(f"{path}{norm}.bias")
    return out


def _layout(module: nn.Module) -> Layout:
    """The canonical names of ``module``'s parameters (attention block or whole model)."""
    if isinstance(module, Attention):
        return _attention_layout("", "", module)
    if not isinstance(module, FSMTForConditionalGeneration):
        raise TypeError(f"no parameter layout for {type(module).__name__}: this adapter knows "
                        "FSMT's Attention and FSMTForConditionalGeneration")
    out: Layout = {
        "src_embedding": Slot("model.encoder.embed_tokens.weight"),
        "tgt_embedding": Slot("model.decoder.embed_tokens.weight"),
        "generator.W": Slot("model.decoder.output_projection.weight", transpose, transpose),
    }
    for stack in ("encoder", "decoder"):
        for i, layer in enumerate(getattr(module.model, stack).layers):
            out.update(_layer_layout(f"{stack}.{i}.", f"model.{stack}.layers.{i}.", layer,
                                     stack == "decoder"))
    return out


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
        d_model=config.d_model,
        encoder_attention_heads=config.h,
        decoder_attention_heads=config.h,
        encoder_ffn_dim=config.d_ff,
        decoder_ffn_dim=config.d_ff,
        encoder_layers=config.n_layers,
        decoder_layers=config.n_layers,
        dropout=config.dropout,
        attention_dropout=0.0,
        activation_dropout=0.0,
        encoder_layerdrop=0.0,
        decoder_layerdrop=0.0,
        activation_function="relu",
        scale_embedding=True,
        tie_word_embeddings=config.shared_vocab,
        max_position_embeddings=config.max_len,
        pad_token_id=config.pad_id,
        bos_token_id=config.bos_id,
        eos_token_id=config.eos_id,
        decoder_start_token_id=config.bos_id,
        forced_eos_token_id=None,
    )


def _additive_mask(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """Ours (bool, True = may attend, ``[B, Lq, Lk]`` or broadcasting) -> the additive
    ``attn_mask`` that ``Attention.forward`` adds to its ``[B, h, Lq, Lk]`` scores: 0 where
    allowed, the dtype's minimum elsewhere (what ``fill_with_neg_inf`` puts in FSMT's causal
    mask)."""
    if mask.dtype != torch.bool:
        raise TypeError(f"attention mask must be bool (True = may attend), got {mask.dtype}")
    mask = mask.unsqueeze(-3) if mask.dim() == 3 else mask
    zero = torch.zeros((), dtype=dtype, device=mask.device)
    return torch.where(mask, zero, torch.finfo(dtype).min)


class _Captured(Exception):
    """Carries the input of a stack's first layer out of the stack's ``forward``."""

    def __init__(self, hidden: Tensor) -> None:
        super().__init__("captured")
        self.hidden = hidden


def _stack_input(stack: nn.Module, **inputs: Any) -> Tensor:
    """What the library's own ``FSMTEncoder.forward`` / ``FSMTDecoder.forward`` feeds to its
    first layer (scaled embeddings plus positions, after dropout), batch-first. The stack runs
    as its users call it and is stopped at its first layer."""

    def capture(_module: nn.Module, args: tuple[Any, ...]) -> None:
        raise _Captured(args[0])

    first: nn.Module = stack.get_submodule("layers.0")
    handle = first.register_forward_pre_hook(capture)
    try:
        stack(**inputs)
    except _Captured as captured:
        return captured.hidden.transpose(0, 1)  # the layers work time-first
    finally:
        handle.remove()
    raise RuntimeError("the stack's first layer was not called")  # pragma: no cover


def _until_eos(ids: list[int], eos: int) -> list[int]:
    """The ids up to and including the first ``eos`` (``generate`` pads after it)."""
    return ids[: ids.index(eos) + 1] if eos in ids else ids


class HFFSMTAdapter:
    """Adapter for transformers' ``FSMTForConditionalGeneration`` and FSMT's ``Attention``; see
    the module docstring for what each method maps to and why some capabilities are
    missing."""

    name = "hf-fsmt"

    not_provided: ClassVar[dict[str, str]] = {
        "attention": "FSMT computes scaled dot-product attention inline in Attention.forward "
        "(torch.bmm of the projected queries and keys, softmax, torch.bmm with the values): no "
        "function takes Q, K and V",
        "attention_weights": "Attention.forward returns the weights of its own projections "
        "(output_attentions=True), never of given Q and K: no function computes them alone",
        "feed_forward": "FSMT has no standalone position-wise FFN module (fc1/fc2 live in the "
        "layers, where the suite checks them)",
        "optimizer": "transformers ships no Adam (transformers.optimization has Adafactor); the "
        "Trainer's torch.optim.AdamW needs accelerate, which the matrix extra does not install",
        "length_penalty": "generate computes the penalty inline (sum log p / |Y|**length_penalty "
        "in GenerationMixin._update_finished_beams): no function to call",
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
        attn_mask = None if mask is None else _additive_mask(mask.to(x.device), x.dtype)
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

    def parameters(self, module: nn.Module) -> dict[str, Tensor]:
        """A snapshot of ``module``'s parameters under their canonical names."""
        return read(module, _layout(module))

    def load_parameters(self, module: nn.Module, params: Params) -> None:
        """Write canonical parameters into ``module`` (any subset; shapes must match)."""
        write(module, _layout(module), params)

    def embed_source(self, model: FSMTForConditionalGeneration, src: Tensor) -> Tensor:
        """What ``FSMTEncoder.forward`` feeds its first layer: ``embed_tokens(src) *
        embed_scale + embed_positions(src)``, then dropout."""
        return _stack_input(model.model.encoder, input_ids=src)

    def embed_target(self, model: FSMTForConditionalGeneration, tgt: Tensor) -> Tensor:
        """What ``FSMTDecoder.forward`` feeds its first layer (same recipe, no cache). The
        decoder transposes the encoder output before its layers, so it is given an empty one:
        it is stopped before any layer could read it."""
        decoder = model.model.decoder
        empty = decoder.embed_tokens.weight.new_zeros(tgt.size(0), 0, decoder.embed_tokens
                                                      .embedding_dim)
        return _stack_input(decoder, input_ids=tgt, encoder_hidden_states=empty,
                            encoder_padding_mask=None, decoder_padding_mask=None,
                            decoder_causal_mask=None, use_cache=False)

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

    def forward(self, model: FSMTForConditionalGeneration, src: Tensor, tgt_in: Tensor,
                src_mask: Tensor) -> Tensor:
        """``model(input_ids, attention_mask, decoder_input_ids, use_cache=False).logits``
        (with the cache on, ``FSMTModel.forward`` builds no causal mask)."""
        out = model(input_ids=src, attention_mask=src_mask.long(), decoder_input_ids=tgt_in,
                    use_cache=False)
        logits: Tensor = out.logits
        return logits

    def incremental_logits(self, model: FSMTForConditionalGeneration, src: Tensor,
                           src_mask: Tensor, tgt_in: Tensor) -> Tensor:
        """The logits of ``forward``, one target position per call with ``past_key_values``,
        as ``generate`` drives the model (the encoder runs once; the decoder numbers the new
        token's position after the cached ones)."""
        encoded = model.model.encoder(input_ids=src, attention_mask=src_mask.long())
        cache, steps = None, []
        for t in range(tgt_in.size(1)):
            out = model(encoder_outputs=encoded, attention_mask=src_mask.long(),
                        decoder_input_ids=tgt_in[:, t : t + 1], past_key_values=cache,
                        use_cache=True)
            cache = out.past_key_values
            steps.append(out.logits)
        return torch.cat(steps, dim=1)

    def decoder_input(self, tgt: Tensor, bos_id: int) -> Tensor:
        """``shift_tokens_right(tgt, pad)``, what ``prepare_decoder_input_ids_from_labels``
        returns: the target shifted right behind its last non-padding token (fairseq's eos
        as start symbol); it takes no start symbol, so ``bos_id`` is not used. The padding id is
        the suite's default (the protocol passes none). (The function also turns -100 labels
        into padding in place; the suite's targets hold none.)"""
        shifted: Tensor = shift_tokens_right(tgt, Config.pad_id)
        return shifted

    # -- training and decoding -----------------------------------------------------------
    def loss(self, logits: Tensor, target: Tensor, pad_id: int) -> Tensor:
        """``FSMTForConditionalGeneration.forward(labels=...)``'s loss, ``CrossEntropyLoss()``
        over the flattened logits, with padding targets given the library's ignore label -100
        (as transformers' ``DataCollatorForSeq2Seq`` pads labels). That collator then passes
        its labels to ``prepare_decoder_input_ids_from_labels``, whose ``shift_tokens_right``
        turns the -100 into the pad id in place, so that a loss on the collated labels counts
        the padding targets: a pipeline effect, not the loss's, and not taken here."""
        labels = target.masked_fill(target == pad_id, -100)
        loss: Tensor = nn.CrossEntropyLoss()(logits.reshape(-1, logits.size(-1)),
                                             labels.reshape(-1))
        return loss

    def lr_schedule(self, d_model: int, warmup: int) -> Callable[[int], float]:
        """``get_inverse_sqrt_schedule(optimizer, num_warmup_steps=warmup)`` (timescale =
        warmup) on a base rate of d_model^-0.5 warmup^-0.5, the paper's peak: the rate at
        ``step`` is the base times the schedule's factor ``lr_lambdas[0](step)``."""
        base = d_model**-0.5 * warmup**-0.5
        holder = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=base)
        factor = get_inverse_sqrt_schedule(holder, num_warmup_steps=warmup).lr_lambdas[0]
        return lambda step: base * float(factor(step))

    def greedy(self, model: FSMTForConditionalGeneration, src: Tensor, src_mask: Tensor,
               config: Config, max_len: int) -> Tensor:
        """``model.generate(num_beams=1, do_sample=False, max_new_tokens=max_len)`` without its
        first column (the decoder start id); rows that ended are padded after eos."""
        out: Tensor = model.generate(input_ids=src, attention_mask=src_mask.long(), num_beams=1,
                                     do_sample=False, max_new_tokens=max_len)
        return out[:, 1:]

    def beam_search(self, model: FSMTForConditionalGeneration, src: Tensor, src_mask: Tensor,
                    config: Config) -> list[int]:
        """``model.generate`` with :data:`BEAM` and ``max_new_tokens = len(src) + 50``; the best
        hypothesis without the decoder start id."""
        out = model.generate(input_ids=src, attention_mask=src_mask.long(), do_sample=False,
                             max_new_tokens=src.size(1) + 50, **BEAM)
        return _until_eos([int(t) for t in out[0, 1:]], config.eos_id)

    # -- practice ------------------------------------------------------------------------
    def save(self, model: FSMTForConditionalGeneration, path: str | os.PathLike[str]) -> None:
        """``model.save_pretrained(path)``: a directory with the config and safetensors (the
        positional tables are parameters, and saved)."""
        model.save_pretrained(path)

    def load(self, path: str | os.PathLike[str]) -> nn.Module:
        """``FSMTForConditionalGeneration.from_pretrained(path, local_files_only=True)`` (dtype
        "auto": the saved one)."""
        loaded: nn.Module = FSMTForConditionalGeneration.from_pretrained(path,
                                                                        local_files_only=True)
        return loaded


adapter = HFFSMTAdapter()
"""The shipped adapter for transformers' FSMT (``--impl hf-fsmt``)."""
