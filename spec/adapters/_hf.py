"""What the Hugging Face transformers adapters (``hf-marian``, ``hf-bart``, ``hf-fsmt``) share.

The three models are encoder-decoders of transformers 5.23.0 with the same outer surface: a
``forward`` that takes ``labels`` and computes ``CrossEntropyLoss()``, ``GenerationMixin
.generate`` for greedy and beam search, ``save_pretrained`` / ``from_pretrained``, the same
``q_proj``/``k_proj``/``v_proj``/``out_proj`` attention projections, ``fc1``/``fc2`` and
``*_layer_norm`` names inside the layers, and ``transformers.optimization`` for the schedule.
:class:`TransformersAdapter` holds the methods that call that surface;
:class:`spec.adapters._bart_family.BartFamilyAdapter` holds what BART and Marian share on top,
so that each adapter module says only what differs for its library (and, in its docstring,
what the library is, clause by clause).

Each adapter module imports its own transformers classes first, inside the guard that names
the adapter and the extra when transformers is missing, and this module after them.
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
    from transformers.optimization import get_inverse_sqrt_schedule
except ImportError:
    raise AdapterError(
        "the transformers adapters (hf-marian, hf-bart, hf-fsmt) need the optional extra: "
        "pip install 'attention-spec[matrix]'"
    ) from None

Model = Any
"""A transformers ``PreTrainedModel`` (the type checker reads transformers as untyped)."""

BEAM = {"num_beams": 4, "length_penalty": 0.6, "early_stopping": True}
"""``generate``'s beam-search settings: the paper's beam and alpha; ``early_stopping=True``
stops once ``num_beams`` hypotheses have ended (the paper: "terminate early when possible")."""

NOT_PROVIDED = {
    "optimizer": "transformers ships no Adam (transformers.optimization has Adafactor); the "
    "Trainer's torch.optim.AdamW needs accelerate, which the matrix extra does not install",
    "length_penalty": "generate computes the penalty inline (sum log p / |Y|**length_penalty "
    "in GenerationMixin._update_finished_beams): no function to call",
}
"""The capabilities no transformers model has, with the reason the report shows."""


def no_feed_forward(library: str) -> str:
    """The reason ``feed_forward`` is NOT PROVIDED for ``library`` (Marian, BART, FSMT)."""
    return (f"{library} has no standalone position-wise FFN module (fc1/fc2 live in the layers, "
            "where the suite checks them)")


# -- the model's configuration ---------------------------------------------------------------
def paper_settings(config: Config) -> dict[str, Any]:
    """The config keywords Marian, BART and FSMT take under the same names, set from the suite's
    configuration and to the paper's choices: the sizes, ReLU, scaled embeddings, dropout P_drop
    with attention and activation dropout and layerdrop 0, the special ids (the start symbol as
    ``decoder_start_token_id``), ``forced_eos_token_id=None`` (a default would force eos at the
    length limit) and ``max_position_embeddings`` = max_len. Each adapter adds its vocabulary
    and tying settings."""
    return {
        "d_model": config.d_model,
        "encoder_attention_heads": config.h,
        "decoder_attention_heads": config.h,
        "encoder_ffn_dim": config.d_ff,
        "decoder_ffn_dim": config.d_ff,
        "encoder_layers": config.n_layers,
        "decoder_layers": config.n_layers,
        "encoder_layerdrop": 0.0,
        "decoder_layerdrop": 0.0,
        "dropout": config.dropout,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "activation_function": "relu",
        "scale_embedding": True,
        "max_position_embeddings": config.max_len,
        "pad_token_id": config.pad_id,
        "eos_token_id": config.eos_id,
        "decoder_start_token_id": config.bos_id,
        "forced_eos_token_id": None,
    }


# -- masks -----------------------------------------------------------------------------------
def _four_d(mask: Tensor) -> Tensor:
    """Ours (bool, True = may attend, ``[B, Lq, Lk]`` or broadcasting) with a head axis
    (``[B, 1, Lq, Lk]``), as the library's attention takes it."""
    if mask.dtype != torch.bool:
        raise TypeError(f"attention mask must be bool (True = may attend), got {mask.dtype}")
    return mask.unsqueeze(-3) if mask.dim() == 3 else mask


def additive_mask(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """Ours -> the additive 4-D mask added to the scores: 0 where allowed, the dtype's minimum
    elsewhere (what ``masking_utils`` makes for ``eager`` attention, and what FSMT's
    ``fill_with_neg_inf`` puts in its causal mask)."""
    mask = _four_d(mask)
    zero = torch.zeros((), dtype=dtype, device=mask.device)
    return torch.where(mask, zero, torch.finfo(dtype).min)


def library_mask(mask: Tensor, implementation: str, dtype: torch.dtype) -> Tensor:
    """Ours -> the 4-D mask the library's attention functions take: bool (True = attend) for
    ``sdpa``, additive for ``eager``."""
    return _four_d(mask) if implementation == "sdpa" else additive_mask(mask, dtype)


# -- parameter layouts -----------------------------------------------------------------------
def attention_layout(prefix: str, path: str, module: Any) -> Layout:
    """An attention module (``MarianAttention``, ``BartAttention``, FSMT's ``Attention``):
    ``q_proj``, ``k_proj``, ``v_proj`` rows ``[i d_k, (i+1) d_k)`` are head i; ``out_proj`` maps
    the concatenated heads."""
    return heads(prefix, path, module.num_heads, module.head_dim, module.embed_dim,
                 bias=module.q_proj.bias is not None)


def _layer_layout(prefix: str, path: str, layer: nn.Module, decoder: bool) -> Layout:
    out = attention_layout(f"{prefix}self_attn.", f"{path}self_attn.", layer.self_attn)
    norms = ["self_attn_layer_norm", "final_layer_norm"]
    if decoder:
        out.update(attention_layout(f"{prefix}cross_attn.", f"{path}encoder_attn.",
                                    layer.encoder_attn))
        norms.insert(1, "encoder_attn_layer_norm")
    for k, fc in ((1, "fc1"), (2, "fc2")):
        out[f"{prefix}ffn.W_{k}"] = Slot(f"{path}{fc}.weight", transpose, transpose)
        out[f"{prefix}ffn.b_{k}"] = Slot(f"{path}{fc}.bias")
    for k, norm in enumerate(norms, 1):
        out[f"{prefix}norm_{k}.gamma"] = Slot(f"{path}{norm}.weight")
        out[f"{prefix}norm_{k}.beta"] = Slot(f"{path}{norm}.bias")
    return out


def layers_layout(model: Model) -> Layout:
    """Every layer of ``model.model.encoder`` and ``.decoder``: attention blocks (the decoder's
    ``encoder_attn`` is ``cross_attn``), ``fc1``/``fc2`` as ``ffn`` and the layer norms in order
    (encoder ``self_attn_layer_norm``, ``final_layer_norm``; the decoder's
    ``encoder_attn_layer_norm`` between them)."""
    out: Layout = {}
    for stack in ("encoder", "decoder"):
        for i, layer in enumerate(getattr(model.model, stack).layers):
            out.update(_layer_layout(f"{stack}.{i}.", f"model.{stack}.layers.{i}.", layer,
                                     stack == "decoder"))
    return out


def generator_layout() -> Layout:
    """The BART family's pre-softmax map: ``generator.W`` <- ``lm_head.weight`` (transposed),
    ``generator.b`` <- ``final_logits_bias[0]`` (a ``[1, V]`` buffer)."""
    return {
        "generator.W": Slot("lm_head.weight", transpose, transpose),
        "generator.b": Slot("final_logits_bias", lambda b: b[0], lambda c: c.unsqueeze(0)),
    }


# -- embeddings ------------------------------------------------------------------------------
class _Captured(Exception):
    """Carries the input of a stack's first layer out of the stack's ``forward``."""

    def __init__(self, hidden: Tensor) -> None:
        super().__init__("captured")
        self.hidden = hidden


def stack_input(stack: nn.Module, **inputs: Any) -> Tensor:
    """What the library's own encoder or decoder ``forward`` feeds to its first layer, as that
    layer receives it (the embeddings with positions, after dropout). The stack runs as its users
    call it and is stopped at its first layer."""

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


def until_eos(ids: list[int], eos: int) -> list[int]:
    """The ids up to and including the first ``eos`` (``generate`` pads after it)."""
    return ids[: ids.index(eos) + 1] if eos in ids else ids


# -- the adapters ----------------------------------------------------------------------------
class TransformersAdapter:
    """What every transformers encoder-decoder adapter maps alike: canonical parameters (through
    :meth:`_embedding_layout` and :func:`layers_layout`), the full and cached passes of the
    model's ``forward``, its loss, the inverse-square-root schedule, ``generate``, and
    ``save_pretrained`` / ``from_pretrained``. A subclass names its model and attention classes
    and adds what its library does its own way."""

    name: ClassVar[str]
    model_class: ClassVar[type[Any]]
    """The ``...ForConditionalGeneration`` class (``MarianMTModel`` for Marian)."""
    attention_class: ClassVar[type[Any]]
    """The attention module class that ``multi_head`` builds."""

    def _embedding_layout(self, model: Model) -> Layout:
        """The canonical embedding and output-projection names of ``model`` (the part of the
        layout that differs between libraries)."""
        raise NotImplementedError(f"{type(self).__name__} must say where its embeddings live")

    def _layout(self, module: nn.Module) -> Layout:
        """The canonical names of ``module``'s parameters (attention block or whole model)."""
        if isinstance(module, self.attention_class):
            return attention_layout("", "", module)
        if not isinstance(module, self.model_class):
            raise TypeError(
                f"no parameter layout for {type(module).__name__}: this adapter knows "
                f"{self.model_class.__name__} and its {self.attention_class.__name__}")
        return {**self._embedding_layout(module), **layers_layout(module)}

    def parameters(self, module: nn.Module) -> dict[str, Tensor]:
        """A snapshot of ``module``'s parameters under their canonical names."""
        return read(module, self._layout(module))

    def load_parameters(self, module: nn.Module, params: Params) -> None:
        """Write canonical parameters into ``module`` (any subset; shapes must match)."""
        write(module, self._layout(module), params)

    def forward(self, model: Model, src: Tensor, tgt_in: Tensor, src_mask: Tensor) -> Tensor:
        """``model(input_ids, attention_mask, decoder_input_ids, use_cache=False).logits`` (a
        full pass: nothing is cached)."""
        out = model(input_ids=src, attention_mask=src_mask.long(), decoder_input_ids=tgt_in,
                    use_cache=False)
        logits: Tensor = out.logits
        return logits

    def incremental_logits(self, model: Model, src: Tensor, src_mask: Tensor, tgt_in: Tensor
                           ) -> Tensor:
        """The logits of ``forward``, one target position per call with ``past_key_values``,
        as ``generate`` drives the model: the encoder (``model.get_encoder()``) runs once, and
        the decoder places each new token after the cached ones."""
        encoded = model.get_encoder()(input_ids=src, attention_mask=src_mask.long())
        cache, steps = None, []
        for t in range(tgt_in.size(1)):
            out = model(encoder_outputs=encoded, attention_mask=src_mask.long(),
                        decoder_input_ids=tgt_in[:, t : t + 1], past_key_values=cache,
                        use_cache=True)
            cache = out.past_key_values
            steps.append(out.logits)
        return torch.cat(steps, dim=1)

    # -- training and decoding -------------------------------------------------------------
    def loss(self, logits: Tensor, target: Tensor, pad_id: int) -> Tensor:
        """The loss of the model's ``forward(labels=...)``, ``CrossEntropyLoss()`` over the
        flattened logits, with padding targets given the library's ignore label -100 (as
        transformers' ``DataCollatorForSeq2Seq`` pads labels)."""
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

    def greedy(self, model: Model, src: Tensor, src_mask: Tensor, config: Config,
               max_len: int) -> Tensor:
        """``model.generate(num_beams=1, do_sample=False, max_new_tokens=max_len)`` without its
        first column (the decoder start id); rows that ended are padded after eos."""
        out: Tensor = model.generate(input_ids=src, attention_mask=src_mask.long(), num_beams=1,
                                     do_sample=False, max_new_tokens=max_len)
        return out[:, 1:]

    def beam_search(self, model: Model, src: Tensor, src_mask: Tensor, config: Config
                    ) -> list[int]:
        """``model.generate`` with :data:`BEAM` and ``max_new_tokens = len(src) + 50``; the best
        hypothesis without the decoder start id."""
        out = model.generate(input_ids=src, attention_mask=src_mask.long(), do_sample=False,
                             max_new_tokens=src.size(1) + 50, **BEAM)
        return until_eos([int(t) for t in out[0, 1:]], config.eos_id)

    # -- practice --------------------------------------------------------------------------
    def save(self, model: Model, path: str | os.PathLike[str]) -> None:
        """``model.save_pretrained(path)``: a directory with the config and safetensors."""
        model.save_pretrained(path)

    def load(self, path: str | os.PathLike[str]) -> nn.Module:
        """``from_pretrained(path, local_files_only=True)`` of the model class (dtype "auto":
        the saved one)."""
        loaded: nn.Module = self.model_class.from_pretrained(path, local_files_only=True)
        return loaded
