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

import functools
import os
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from spec.adapter import AdapterError, Config, Params
from spec.adapters.layout import Layout, Slot, heads, read, transpose, write

try:
    from transformers import BartConfig, BartForConditionalGeneration
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache
    from transformers.masking_utils import create_bidirectional_mask, create_causal_mask
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.bart.modeling_bart import (
        BartAttention,
        BartLearnedPositionalEmbedding,
        eager_attention_forward,
        shift_tokens_right,
    )
    from transformers.optimization import get_inverse_sqrt_schedule
except ImportError:
    raise AdapterError(
        "hf-bart needs the optional extra: pip install 'attention-spec[matrix]'"
    ) from None

__all__ = ["HFBartAdapter", "adapter"]

BEAM = {"num_beams": 4, "length_penalty": 0.6, "early_stopping": True}
"""``generate``'s beam-search settings: the paper's beam and alpha; ``early_stopping=True``
stops once ``num_beams`` hypotheses have ended (the paper: "terminate early when possible")."""


def _attention_layout(prefix: str, path: str, module: BartAttention) -> Layout:
    """``BartAttention``: ``q_proj``, ``k_proj``, ``v_proj`` rows ``[i d_k, (i+1) d_k)`` are
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


def _layout(module: nn.Module) -> Layout:
    """The canonical names of ``module``'s parameters (attention block or whole model)."""
    if isinstance(module, BartAttention):
        return _attention_layout("", "", module)
    if not isinstance(module, BartForConditionalGeneration):
        raise TypeError(f"no parameter layout for {type(module).__name__}: this adapter knows "
                        "BartAttention and BartForConditionalGeneration")
    out: Layout = {
        **_stack_layout("src", module.model.encoder),
        **_stack_layout("tgt", module.model.decoder),
        "generator.W": Slot("lm_head.weight", transpose, transpose),
        "generator.b": Slot("final_logits_bias", lambda b: b[0], lambda c: c.unsqueeze(0)),
    }
    for stack in ("encoder", "decoder"):
        for i, layer in enumerate(getattr(module.model, stack).layers):
            out.update(_layer_layout(f"{stack}.{i}.", f"model.{stack}.layers.{i}.", layer,
                                     stack == "decoder"))
    return out


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
        d_model=config.d_model,
        encoder_attention_heads=config.h,
        decoder_attention_heads=config.h,
        encoder_ffn_dim=config.d_ff,
        decoder_ffn_dim=config.d_ff,
        encoder_layers=config.n_layers,
        decoder_layers=config.n_layers,
        encoder_layerdrop=0.0,
        decoder_layerdrop=0.0,
        dropout=config.dropout,
        attention_dropout=0.0,
        activation_dropout=0.0,
        activation_function="relu",
        scale_embedding=True,
        tie_word_embeddings=True,
        max_position_embeddings=config.max_len,
        pad_token_id=config.pad_id,
        bos_token_id=config.bos_id,
        decoder_start_token_id=config.bos_id,
        eos_token_id=config.eos_id,
        forced_eos_token_id=None,
    )


@functools.cache
def _default_attention() -> str:
    """The attention implementation ``BartForConditionalGeneration`` selects by default (read
    off a tiny model), so that a standalone ``BartAttention`` computes as the model's modules
    do."""
    tiny = BartForConditionalGeneration(_bart_config(Config(d_model=4, h=1, d_ff=4, n_layers=1)))
    return str(tiny.config._attn_implementation)


def _library_mask(mask: Tensor, implementation: str, dtype: torch.dtype) -> Tensor:
    """Ours (bool, True = may attend, ``[B, Lq, Lk]`` or broadcasting) -> the 4-D mask the
    library's attention functions take: bool (True = attend) for ``sdpa``, additive (0 or the
    dtype's minimum, as ``masking_utils`` makes it) for ``eager``."""
    if mask.dtype != torch.bool:
        raise TypeError(f"attention mask must be bool (True = may attend), got {mask.dtype}")
    mask = mask.unsqueeze(-3) if mask.dim() == 3 else mask
    if implementation == "sdpa":
        return mask
    zero = torch.zeros((), dtype=dtype, device=mask.device)
    return torch.where(mask, zero, torch.finfo(dtype).min)


@functools.cache
def _flags() -> BartAttention:
    """A non-causal ``BartAttention`` in evaluation mode: what the library's attention
    functions read off their ``module`` argument (``is_causal``, ``training``)."""
    return BartAttention(1, 1, config=_bart_config(Config(d_model=1, h=1))).eval()


class _Captured(Exception):
    """Carries the input of a stack's first layer out of the stack's ``forward``."""

    def __init__(self, hidden: Tensor) -> None:
        super().__init__("captured")
        self.hidden = hidden


def _stack_input(stack: nn.Module, **inputs: Any) -> Tensor:
    """What the library's own ``BartEncoder.forward`` / ``BartDecoder.forward`` feeds to its
    first layer: the embedding LayerNorm of the scaled embeddings plus positions, after dropout.
    The stack runs as its users call it and is stopped at its first layer."""

    def capture(_module: nn.Module, args: tuple[Any, ...]) -> None:
        raise _Captured(args[0])

    first: nn.Module = stack.get_submodule("layers.0")
    handle = first.register_forward_pre_hook(capture)
    try:
        stack(**inputs)
    except _Captured as captured:
        return captured.hidden
    finally:
        handle.remove()
    raise RuntimeError("the stack's first layer was not called")  # pragma: no cover


def _until_eos(ids: list[int], eos: int) -> list[int]:
    """The ids up to and including the first ``eos`` (``generate`` pads after it)."""
    return ids[: ids.index(eos) + 1] if eos in ids else ids


class HFBartAdapter:
    """Adapter for transformers' ``BartForConditionalGeneration`` and ``BartAttention``; see the
    module docstring for what each method maps to and why some capabilities are missing."""

    name = "hf-bart"

    not_provided: ClassVar[dict[str, str]] = {
        "feed_forward": "BART has no standalone position-wise FFN module (fc1/fc2 live in the "
        "layers, where the suite checks them)",
        "positional_encoding": "BART learns its positions (BartLearnedPositionalEmbedding, an "
        "nn.Embedding): there is no sinusoidal table; the learned ones are src_positions / "
        "tgt_positions",
        "optimizer": "transformers ships no Adam (transformers.optimization has Adafactor); the "
        "Trainer's torch.optim.AdamW needs accelerate, which the matrix extra does not install",
        "length_penalty": "generate computes the penalty inline (sum log p / |Y|**length_penalty "
        "in GenerationMixin._update_finished_beams): no function to call",
    }
    """Why each capability is missing: the report shows these reasons."""

    # -- 3.2.1 ---------------------------------------------------------------------------
    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """The library's attention function of BART's default implementation, called as
        ``BartAttention.forward`` calls it (a non-causal ``BartAttention`` as ``module``,
        ``scaling = head_dim**-0.5``), on one head ``[B, 1, L, d]``."""
        implementation = _default_attention()
        function = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        return self._attend(function, implementation, q, k, v, mask)[0]

    def attention_weights(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """The weights ``eager_attention_forward`` returns (the only implementation that returns
        them: what ``output_attentions=True`` gives with ``attn_implementation="eager"``)."""
        weights = self._attend(eager_attention_forward, "eager", q, k, v, mask)[1]
        if weights is None:
            raise RuntimeError("eager_attention_forward returned no attention weights")
        return weights[:, 0]

    def _attend(self, function: Callable[..., tuple[Tensor, Tensor | None]], implementation: str,
                q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None
                ) -> tuple[Tensor, Tensor | None]:
        module = _flags()
        library_mask = None if mask is None else _library_mask(mask, implementation, q.dtype)
        out, weights = function(module, q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1),
                                library_mask, dropout=0.0, scaling=q.size(-1) ** -0.5)
        return out[:, :, 0], weights  # out: [B, L, 1 head, d_v]

    # -- 3.2.2 ---------------------------------------------------------------------------
    def multi_head(self, d_model: int, h: int) -> nn.Module:
        """``BartAttention(d_model, h)`` with the library's defaults (``bias=True``, no
        dropout) and the attention implementation the model uses."""
        config = _bart_config(Config(d_model=d_model, h=h))
        config._attn_implementation = _default_attention()
        return BartAttention(d_model, h, config=config)

    def multi_head_forward(
        self, module: nn.Module, x: Tensor, memory: Tensor | None, mask: Tensor | None
    ) -> Tensor:
        """``module(x, key_value_states=memory, attention_mask=...)`` (cross-attention when
        ``memory`` is given), the mask in the library's 4-D form."""
        assert isinstance(module, BartAttention)
        library_mask = None
        if mask is not None:
            library_mask = _library_mask(mask.to(x.device), module.config._attn_implementation,
                                         x.dtype)
        return module(x, key_value_states=memory, attention_mask=library_mask)[0]

    # -- the model -----------------------------------------------------------------------
    def model(self, config: Config) -> BartForConditionalGeneration:
        """``BartForConditionalGeneration(BartConfig(...))`` with random weights (see the module
        docstring for the settings); a ``ValueError`` for separate vocabularies."""
        return BartForConditionalGeneration(_bart_config(config))

    def parameters(self, module: nn.Module) -> dict[str, Tensor]:
        """A snapshot of ``module``'s parameters under their canonical names."""
        return read(module, _layout(module))

    def load_parameters(self, module: nn.Module, params: Params) -> None:
        """Write canonical parameters into ``module`` (any subset; shapes must match)."""
        write(module, _layout(module), params)

    def embed_source(self, model: BartForConditionalGeneration, src: Tensor) -> Tensor:
        """What ``BartEncoder.forward`` feeds its first layer: ``layernorm_embedding(
        embed_tokens(src) * embed_scale + embed_positions)``, then dropout."""
        return _stack_input(model.model.encoder, input_ids=src)

    def embed_target(self, model: BartForConditionalGeneration, tgt: Tensor) -> Tensor:
        """What ``BartDecoder.forward`` feeds its first layer (same recipe, no cache)."""
        return _stack_input(model.model.decoder, input_ids=tgt, use_cache=False)

    def encode(self, model: BartForConditionalGeneration, x: Tensor, src_mask: Tensor) -> Tensor:
        """The rest of ``BartEncoder.forward``: ``create_bidirectional_mask`` from the padding
        mask, then each ``BartEncoderLayer`` (layerdrop is 0)."""
        encoder = model.model.encoder
        mask = create_bidirectional_mask(config=encoder.config, inputs_embeds=x,
                                         attention_mask=src_mask)
        for layer in encoder.layers:
            x = layer(x, mask)
        return x

    def decode(self, model: BartForConditionalGeneration, y: Tensor, memory: Tensor,
               src_mask: Tensor) -> Tensor:
        """The rest of ``BartDecoder.forward`` without a cache: the library's causal mask and
        cross-attention padding mask, then each ``BartDecoderLayer``."""
        return self._decode(model, y, memory, src_mask, None)

    def decode_incremental(
        self, model: BartForConditionalGeneration, y: Tensor, memory: Tensor, src_mask: Tensor
    ) -> Tensor:
        """``decode`` one position at a time with the library's ``EncoderDecoderCache`` (each
        layer appends its keys and values; cross-attention keys are computed once)."""
        config = model.model.decoder.config
        cache = EncoderDecoderCache(DynamicCache(config=config), DynamicCache(config=config))
        steps = [self._decode(model, y[:, t : t + 1], memory, src_mask, cache)
                 for t in range(y.size(1))]
        return torch.cat(steps, dim=1)

    def _decode(self, model: BartForConditionalGeneration, y: Tensor, memory: Tensor,
                src_mask: Tensor, cache: EncoderDecoderCache | None) -> Tensor:
        decoder = model.model.decoder
        past = 0 if cache is None else cache.get_seq_length()
        causal = create_causal_mask(
            config=decoder.config, inputs_embeds=y,
            attention_mask=torch.ones(y.size(0), past + y.size(1), device=y.device),
            past_key_values=None if cache is None else cache.self_attention_cache)
        cross = create_bidirectional_mask(config=decoder.config, inputs_embeds=y,
                                          attention_mask=src_mask, encoder_hidden_states=memory)
        for layer in decoder.layers:
            y = layer(y, causal, memory, encoder_attention_mask=cross, past_key_values=cache,
                      use_cache=cache is not None)
        return y

    def project(self, model: BartForConditionalGeneration, y: Tensor) -> Tensor:
        """``lm_head(y) + final_logits_bias``, as ``BartForConditionalGeneration.forward``
        computes the logits."""
        logits: Tensor = model.lm_head(y) + model.final_logits_bias
        return logits

    def forward(self, model: BartForConditionalGeneration, src: Tensor, tgt_in: Tensor,
                src_mask: Tensor) -> Tensor:
        """``model(input_ids, attention_mask, decoder_input_ids).logits``."""
        out = model(input_ids=src, attention_mask=src_mask.long(), decoder_input_ids=tgt_in,
                    use_cache=False)
        logits: Tensor = out.logits
        return logits

    def incremental_logits(self, model: BartForConditionalGeneration, src: Tensor,
                           src_mask: Tensor, tgt_in: Tensor) -> Tensor:
        """The logits of ``forward``, one target position per call with ``past_key_values``,
        as ``generate`` drives the model (the encoder runs once; the decoder reads each step's
        position off the cache length)."""
        encoded = model.get_encoder()(input_ids=src, attention_mask=src_mask.long())
        cache, steps = None, []
        for t in range(tgt_in.size(1)):
            out = model(encoder_outputs=encoded, attention_mask=src_mask.long(),
                        decoder_input_ids=tgt_in[:, t : t + 1], past_key_values=cache,
                        use_cache=True)
            cache = out.past_key_values
            steps.append(out.logits)
        return torch.cat(steps, dim=1)

    def decoder_input(self, tgt: Tensor, bos_id: int) -> Tensor:
        """``shift_tokens_right(tgt, pad, bos_id)`` (the pad id only replaces -100 labels)."""
        shifted: Tensor = shift_tokens_right(tgt, Config.pad_id, bos_id)
        return shifted

    # -- training and decoding -----------------------------------------------------------
    def loss(self, logits: Tensor, target: Tensor, pad_id: int) -> Tensor:
        """``BartForConditionalGeneration.forward(labels=...)``'s loss, ``CrossEntropyLoss()``
        over the flattened logits, with padding targets given the library's ignore label -100
        (as transformers' ``DataCollatorForSeq2Seq`` pads labels)."""
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

    def greedy(self, model: BartForConditionalGeneration, src: Tensor, src_mask: Tensor,
               config: Config, max_len: int) -> Tensor:
        """``model.generate(num_beams=1, do_sample=False, max_new_tokens=max_len)`` without its
        first column (the decoder start id); rows that ended are padded after eos."""
        out: Tensor = model.generate(input_ids=src, attention_mask=src_mask.long(), num_beams=1,
                                     do_sample=False, max_new_tokens=max_len)
        return out[:, 1:]

    def beam_search(self, model: BartForConditionalGeneration, src: Tensor, src_mask: Tensor,
                    config: Config) -> list[int]:
        """``model.generate`` with :data:`BEAM` and ``max_new_tokens = len(src) + 50``; the best
        hypothesis without the decoder start id."""
        out = model.generate(input_ids=src, attention_mask=src_mask.long(), do_sample=False,
                             max_new_tokens=src.size(1) + 50, **BEAM)
        return _until_eos([int(t) for t in out[0, 1:]], config.eos_id)

    # -- practice ------------------------------------------------------------------------
    def save(self, model: BartForConditionalGeneration, path: str | os.PathLike[str]) -> None:
        """``model.save_pretrained(path)``: a directory with the config and safetensors."""
        model.save_pretrained(path)

    def load(self, path: str | os.PathLike[str]) -> nn.Module:
        """``BartForConditionalGeneration.from_pretrained(path, local_files_only=True)`` (dtype
        "auto": the saved one)."""
        loaded: nn.Module = BartForConditionalGeneration.from_pretrained(path,
                                                                         local_files_only=True)
        return loaded


adapter = HFBartAdapter()
"""The shipped adapter for transformers' BART (``--impl hf-bart``)."""
