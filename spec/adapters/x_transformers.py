"""The adapter for lucidrains' x-transformers ``XTransformer`` (``--impl x-transformers``).

Built from ``XTransformer``'s keyword arguments with random weights (nothing is downloaded).
Like the ``torch.nn`` and ``hf-marian`` adapters it is *truthful*: it translates conventions
(mask polarity and layout, ``nn.Linear``'s transposed weights) and exposes what the library has,
through the library's own modules and functions; it never changes what the library computes.
Checked against x-transformers 2.31.10 (the ``matrix`` extra pins it); sources below are
``x_transformers/x_transformers.py`` unless named otherwise.

How the model is configured
---------------------------
``XTransformer(dim=d_model, enc_*=..., dec_*=...)``; each ``enc_``/``dec_`` setting below is
given to both stacks. Every option that can take the paper's value is given it:

* ``pre_norm=False``: post-norm, ``LayerNorm(x + Sublayer(x))`` (the default is pre-norm);
  without pre-norm ``AttentionLayers`` adds no final norm.
* ``norm_add_unit_offset=False``: the LayerNorm gain is stored as itself (the default stores
  gain - 1, initialised to 0, so that weight decay pulls it towards 1); the same function.
* ``heads=h``, ``attn_dim_head=d_model / h`` (the default head width is 64 whatever d_model),
  ``attn_project_out=True`` (the default drops W^O when h = 1).
* ``ff_mult=d_ff / d_model``, ``ff_custom_activation=nn.ReLU()`` (the default is GELU);
  ``ff_no_bias=False`` is the default: the FFN has b_1 and b_2.
* ``scaled_sinu_pos_emb=True``: the library's sinusoidal encoding (the default is a learned
  table, ``AbsolutePositionalEmbedding``); there is no unscaled sinusoidal option.
* ``emb_dropout``, ``attn_sublayer_dropout`` and ``ff_sublayer_dropout`` = P_drop (dropout on
  the embedding sum and on each sub-layer output before the residual add, the paper's places);
  ``attn_dropout`` (on the attention weights) and ``ff_dropout`` (after the activation) stay at
  their default 0.
* ``tie_token_emb=True`` when source and target share a vocabulary (``decoder.token_emb`` is
  ``encoder.token_emb``); ``XTransformer`` passes no tying option to the decoder's output map.
* ``ignore_index`` = ``pad_value`` = the pad id, so that ``AutoregressiveWrapper.forward``'s loss
  skips padding targets.
* ``attn_flash=True``: attention through ``F.scaled_dot_product_attention`` in the model's dtype
  (``Attend.flash_attn``). The default path (``Attend.forward``, einsum) computes the softmax in
  float32 whatever the model's dtype (``partial(F.softmax, dtype=torch.float32)``), a choice of
  precision, not of formula, that would fail every float64 comparison by about 1e-8.

What x-transformers is, clause by clause
----------------------------------------
3.1 ``AttentionLayers.forward`` with ``pre_norm=False``: ``x = residual_fn(out, x)`` (``Residual
    .forward``: ``x + residual``), then ``post_main_norm``. The norm is the library's
    ``LayerNorm``: ``nn.LayerNorm(dim, elementwise_affine=False)`` times a gain ``gamma``, with
    **no bias** (eps 1e-5), for every norm option it has (``LayerNorm.__init__``: "bias-less
    layernorm"). The encoder is ``Encoder`` (layer types ``a, f``), the decoder ``Decoder``
    (``causal=True``, ``cross_attend=True``: ``a, c, f``). The decoder input is the whole
    sequence, start symbol first: ``AutoregressiveWrapper.forward`` predicts ``x[:, 1:]`` from the
    logits of ``x[:, :-1]``; there is no function that makes the shifted-right input.
3.2 ``Attention``: ``to_q``, ``to_k``, ``to_v``, ``to_out`` are ``LinearNoBias`` (no projection
    biases, as in the paper), heads split by ``Rearrange('b n (h d) -> b h n d')``; ``Attend``
    scales by ``dim_head ** -0.5``. Self-attention zeroes its output at padded query positions
    (``Attention.forward``: ``einx.where('b n, b n d, -> b n d', mask, out, 0.)``).
3.3 ``FeedForward``: ``Linear(dim, inner_dim)``, the activation, ``Linear(inner_dim, dim)``.
3.4 ``TokenEmbedding``: ``nn.Embedding`` (Kaiming-normal init), **not** multiplied by
    sqrt(d_model). ``TransformerWrapper.forward``: ``x = token_emb(x) + pos_emb(x)``. The
    decoder's output map ``to_logits`` is ``LinearNoBias(dim, num_tokens)``, a matrix of its own
    (``TransformerWrapper`` can tie it, ``tie_embedding``, but ``XTransformer.__init__`` does not
    pass that option on).
3.5 ``ScaledSinusoidalEmbedding.forward``: ``cat(sin(pos * inv_freq), cos(pos * inv_freq))``
    (sines in the first half: variant ``concatenated-sin-cos``) with ``inv_freq = 10000 **
    -(arange(d/2) / (d/2))``, the paper's frequencies, computed in float32 (a non-persistent
    buffer), **times a learned scalar** ``scale`` initialised to d_model^-0.5.
    :meth:`XTransformersAdapter.positional_encoding` is that function with the scalar at 1 (the
    table itself); the model adds the table times ``scale``, which 3.5/added judges.
5.3 x-transformers ships no optimizer and no learning-rate schedule.
5.4 ``TransformerWrapper.emb_dropout`` after the embedding sum; ``Attention.sublayer_dropout`` and
    the last module of ``FeedForward.ff`` on the sub-layer outputs. The loss
    (``AutoregressiveWrapper.forward``) is ``cross_entropy(logits, target, ignore_index)`` from
    ``torch_einops_utils`` (imported by ``x_transformers/autoregressive_wrapper.py``): no label
    smoothing.
6.1 ``AutoregressiveWrapper.generate`` (``XTransformer.generate`` runs the encoder first):
    greedy with ``temperature=0.`` (argmax), stopping at ``eos_token`` and padding after it.
    ``AutoregressiveWrapper.beam_search``: ``assert not exists(eos_token), 'eos token not
    supported yet'``, so hypotheses never end: it runs ``seq_len`` steps, keeps the ``beams``
    highest sums of log-probabilities, no length penalty. The adapter calls it with
    ``beams=4``, ``seq_len = len(src) + 50`` and returns the best beam up to its first eos.
    Both run with ``restrict_to_max_seq_len=False``: the positions are sinusoidal, and the
    default would crop the decoder input to its last ``max_seq_len`` tokens.
Practice: the key/value cache is ``LayerIntermediates`` (``cache=`` of
    ``TransformerWrapper.forward`` / ``AttentionLayers.forward``), as ``generate`` uses it.
    x-transformers has no save or load: modules are plain ``nn.Module`` s, saved as
    ``torch.save(model.state_dict())``; the adapter stores the configuration (read off the
    model) next to the state dict and rebuilds ``XTransformer`` from it.

Canonical parameter names map onto x-transformers' as follows (``Linear`` weights are
transposed). ``encoder.attn_layers.layers`` holds, per encoder layer i, blocks ``2i`` (self-
attention) and ``2i + 1`` (FFN); ``decoder.net.attn_layers.layers`` per decoder layer i blocks
``3i`` (self), ``3i + 1`` (cross) and ``3i + 2`` (FFN); each block is ``[norms, module,
residual]`` with the post-norm at ``norms[2]``. ``W_Q``/``W_K``/``W_V`` <- ``1.to_q``/``to_k``/
``to_v.weight`` split per head, ``W_O`` <- ``1.to_out.weight``; ``ffn.W_1``/``b_1`` <- the
FFN's first ``nn.Linear``, ``ffn.W_2``/``b_2`` <- its second; ``norm_k.gamma`` <- block k's
``0.2.gamma`` (no ``beta``: the library's LayerNorm has none); ``src_embedding`` <-
``encoder.token_emb.emb.weight``, ``tgt_embedding`` <- ``decoder.net.token_emb.emb.weight``,
``generator.W`` <- ``decoder.net.to_logits.weight``. The positional scales
(``encoder.pos_emb.scale``, ``decoder.net.pos_emb.scale``) have no canonical name.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from spec.adapter import AdapterError, Config, Params
from spec.adapters.layout import Layout, Slot, heads, read, transpose, write

try:
    from x_transformers import XTransformer
    from x_transformers.attend import Attend
    from x_transformers.autoregressive_wrapper import cross_entropy
    from x_transformers.x_transformers import (
        Attention,
        AttentionLayers,
        FeedForward,
        ScaledSinusoidalEmbedding,
        TransformerWrapper,
    )
except ImportError:
    raise AdapterError(
        "x-transformers needs the optional extra: pip install 'attention-spec[matrix]'"
    ) from None

__all__ = ["XTransformersAdapter", "adapter"]

BEAMS = 4
"""``AutoregressiveWrapper.beam_search``'s beam width: the paper's."""

FORMAT = "attention-spec/x-transformers-state-dict/1"
"""Marks a file written by :meth:`XTransformersAdapter.save`."""

PROJECTIONS = {"Q": "to_q", "K": "to_k", "V": "to_v", "O": "to_out"}
"""``Attention``'s ``LinearNoBias`` projections."""


def _d_k(d_model: int, h: int) -> int:
    """d_model / h; the library takes any head width, the paper's needs h to divide d_model."""
    if d_model % h:
        raise ValueError(f"h = {h} does not divide d_model = {d_model}: attn_dim_head would "
                         "not be d_model / h")
    return d_model // h


def _ff_mult(d_model: int, d_ff: int) -> float:
    """The ``ff_mult`` that makes ``FeedForward``'s ``int(dim * mult)`` equal to d_ff."""
    mult = d_ff / d_model
    if int(d_model * mult) != d_ff:
        raise ValueError(f"FeedForward's inner width int({d_model} * {mult}) is not d_ff = {d_ff}")
    return mult


def _stack_kwargs(config: Config) -> dict[str, Any]:
    """The settings both stacks get (without their ``enc_`` / ``dec_`` prefix); see the module
    docstring."""
    return {
        "depth": config.n_layers,
        "heads": config.h,
        "max_seq_len": config.max_len,
        "pre_norm": False,
        "norm_add_unit_offset": False,
        "scaled_sinu_pos_emb": True,
        "emb_dropout": config.dropout,
        "attn_dim_head": _d_k(config.d_model, config.h),
        "attn_project_out": True,
        "attn_flash": True,
        "attn_sublayer_dropout": config.dropout,
        "ff_mult": _ff_mult(config.d_model, config.d_ff),
        "ff_custom_activation": nn.ReLU(),
        "ff_sublayer_dropout": config.dropout,
    }


def _xtransformer(config: Config) -> XTransformer:
    """``XTransformer`` for the suite's configuration, with the paper's choices where the
    library offers them (see the module docstring)."""
    stack = _stack_kwargs(config)
    return XTransformer(
        dim=config.d_model,
        tie_token_emb=config.shared_vocab,
        ignore_index=config.pad_id,
        pad_value=config.pad_id,
        enc_num_tokens=config.src_vocab,
        dec_num_tokens=config.tgt_vocab,
        **{f"enc_{k}": v for k, v in stack.items()},
        **{f"dec_{k}": v for k, v in stack.items()},
    )


def _linears(module: nn.Module) -> list[str]:
    """The names (within ``module``) of its ``nn.Linear`` layers, in order."""
    return [name for name, m in module.named_modules() if isinstance(m, nn.Linear)]


def _attention_layout(prefix: str, path: str, module: Attention) -> Layout:
    """``Attention``: rows ``[i d_k, (i+1) d_k)`` of ``to_q``/``to_k``/``to_v`` are head i;
    ``to_out`` maps the concatenated heads. No biases."""
    if not isinstance(module.to_out, nn.Linear):
        raise TypeError("this Attention has no output projection (to_out); the adapter builds "
                        "it with project_out=True")
    h = module.heads
    d_k = module.to_q.out_features // h
    return heads(prefix, path, h, d_k, module.to_q.in_features, bias=False, names=PROJECTIONS)


def _ffn_layout(prefix: str, path: str, module: FeedForward) -> Layout:
    """``FeedForward``: its first ``nn.Linear`` is W_1, b_1, its second W_2, b_2."""
    linears = _linears(module)
    if len(linears) != 2:
        raise TypeError(f"expected a FeedForward with two nn.Linear layers, found {linears}")
    out: Layout = {}
    for k, name in enumerate(linears, 1):
        out[f"{prefix}W_{k}"] = Slot(f"{path}{name}.weight", transpose, transpose)
        out[f"{prefix}b_{k}"] = Slot(f"{path}{name}.bias")
    return out


SUBLAYERS = {"encoder": (("a", "self_attn"), ("f", "ffn")),
             "decoder": (("a", "self_attn"), ("c", "cross_attn"), ("f", "ffn"))}
"""Per stack, the block types of one layer and their canonical names, in order."""


def _stack_layout(stack: str, path: str, layers: AttentionLayers) -> Layout:
    """The canonical names of a stack's blocks: sub-layer k of layer i is block ``i * n + k``
    (n blocks per layer), ``[norms, module, residual]`` with the post-norm at ``norms[2]``."""
    kinds = SUBLAYERS[stack]
    expected = tuple(kind for kind, _ in kinds) * (len(layers.layers) // len(kinds))
    if tuple(layers.layer_types) != expected or not expected:
        raise TypeError(f"{stack}: unexpected layer types {layers.layer_types}")
    out: Layout = {}
    for index, block in enumerate(layers.layers):
        i, k = divmod(index, len(kinds))
        name = kinds[k][1]
        prefix, here = f"{stack}.{i}.", f"{path}layers.{index}."
        module = block[1]
        if isinstance(module, Attention):
            out.update(_attention_layout(f"{prefix}{name}.", f"{here}1.", module))
        else:
            out.update(_ffn_layout(f"{prefix}ffn.", f"{here}1.", module))
        out[f"{prefix}norm_{k + 1}.gamma"] = Slot(f"{here}0.2.gamma")
    return out


def _layout(module: nn.Module) -> Layout:
    """The canonical names of ``module``'s parameters (attention, FFN or whole model)."""
    if isinstance(module, Attention):
        return _attention_layout("", "", module)
    if isinstance(module, FeedForward):
        return _ffn_layout("", "", module)
    if not isinstance(module, XTransformer):
        raise TypeError(f"no parameter layout for {type(module).__name__}: this adapter knows "
                        "Attention, FeedForward and XTransformer")
    out: Layout = {
        "src_embedding": Slot("encoder.token_emb.emb.weight"),
        "tgt_embedding": Slot("decoder.net.token_emb.emb.weight"),
        "generator.W": Slot("decoder.net.to_logits.weight", transpose, transpose),
    }
    out.update(_stack_layout("encoder", "encoder.attn_layers.", module.encoder.attn_layers))
    out.update(_stack_layout("decoder", "decoder.net.attn_layers.",
                             module.decoder.net.attn_layers))
    return out


def _library_mask(mask: Tensor) -> Tensor:
    """Ours (bool, True = may attend, broadcasting to ``[B, Lq, Lk]``) -> the 4-D
    ``[B, heads, Lq, Lk]`` (broadcasting) bool mask ``Attend`` takes, True = may attend (its 2-D
    and 3-D forms mean other things: ``b j`` and ``h i j``)."""
    if mask.dtype != torch.bool:
        raise TypeError(f"attention mask must be bool (True = may attend), got {mask.dtype}")
    while mask.dim() < 3:
        mask = mask.unsqueeze(0)
    return mask.unsqueeze(1)


@functools.cache
def _attend(d_k: int) -> Attend:
    """The ``Attend`` an ``Attention`` with one head of width d_k holds (see
    ``Attention.__init__``: ``scale = dim_head ** -0.5``, ``flash`` as the model has it)."""
    return Attend(heads=1, causal=False, scale=d_k**-0.5, flash=True).eval()


def _padding(src_mask: Tensor) -> Tensor:
    if src_mask.dtype != torch.bool:
        raise TypeError(f"padding mask must be bool (True = real token), got {src_mask.dtype}")
    return src_mask


class _Captured(Exception):
    """Carries the input of a stack's ``attn_layers`` out of ``TransformerWrapper.forward``."""

    def __init__(self, hidden: Tensor) -> None:
        super().__init__("captured")
        self.hidden = hidden


def _stack_input(wrapper: TransformerWrapper, ids: Tensor) -> Tensor:
    """What ``TransformerWrapper.forward`` feeds its ``attn_layers``: ``token_emb(ids) +
    pos_emb(ids)`` after ``emb_dropout``. The wrapper runs as its users call it and is stopped
    at its attention layers."""

    def capture(_module: nn.Module, args: tuple[Any, ...]) -> None:
        raise _Captured(args[0])

    handle = wrapper.attn_layers.register_forward_pre_hook(capture)
    try:
        wrapper(ids)
    except _Captured as captured:
        return captured.hidden
    finally:
        handle.remove()
    raise RuntimeError("the wrapper's attention layers were not called")  # pragma: no cover


def _config_of(model: XTransformer) -> Config:
    """The suite configuration that rebuilds ``model`` (read off its modules)."""
    enc = model.encoder
    dec = model.decoder.net
    attention = enc.attn_layers.layers[0][1]
    ffn = enc.attn_layers.layers[1][1]
    return Config(
        src_vocab=enc.num_tokens,
        tgt_vocab=dec.num_tokens,
        d_model=enc.attn_layers.dim,
        h=attention.heads,
        d_ff=ffn.get_submodule(_linears(ffn)[0]).out_features,
        n_layers=enc.attn_layers.depth,
        dropout=float(enc.emb_dropout.p),
        max_len=enc.max_seq_len,
        pad_id=model.decoder.pad_value,
        shared_vocab=dec.token_emb is enc.token_emb,
    )


class XTransformersAdapter:
    """Adapter for x-transformers' ``XTransformer``, ``Attention``, ``FeedForward`` and
    ``ScaledSinusoidalEmbedding``; see the module docstring for what each method maps to and why
    some capabilities are missing."""

    name = "x-transformers"

    not_provided: ClassVar[dict[str, str]] = {
        "attention_weights": "with attn_flash=True (the model's setting) Attend.flash_attn "
        "returns no weights (an empty Intermediates); the einsum path that returns them is not "
        "the one the model runs",
        "decoder_input": "x-transformers has no shifted-right input function: "
        "AutoregressiveWrapper.forward takes the whole sequence (start symbol first) and "
        "predicts x[:, 1:] from the logits of x[:, :-1]",
        "optimizer": "x-transformers ships no optimizer",
        "lr_schedule": "x-transformers ships no learning-rate schedule",
        "length_penalty": "AutoregressiveWrapper.beam_search ranks by the sum of "
        "log-probabilities: no length penalty",
    }
    """Why each capability is missing: the report shows these reasons."""

    # -- 3.2.1 ---------------------------------------------------------------------------
    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """``Attend.forward`` as an ``Attention`` of one head calls it, on ``[B, 1, L, d]``."""
        library_mask = None if mask is None else _library_mask(mask)
        out, _ = _attend(q.size(-1))(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1),
                                     mask=library_mask)
        result: Tensor = out[:, 0]
        return result

    # -- 3.2.2 ---------------------------------------------------------------------------
    def multi_head(self, d_model: int, h: int) -> nn.Module:
        """``Attention(d_model, heads=h, dim_head=d_model / h, flash=True, project_out=True)``,
        as the model's layers are built."""
        return Attention(d_model, heads=h, dim_head=_d_k(d_model, h), flash=True,
                         project_out=True)

    def multi_head_forward(
        self, module: nn.Module, x: Tensor, memory: Tensor | None, mask: Tensor | None
    ) -> Tensor:
        """``module(x, context=memory, attn_mask=...)`` (cross-attention when ``memory`` is
        given), the mask in the library's 4-D form."""
        assert isinstance(module, Attention)
        attn_mask = None if mask is None else _library_mask(mask.to(x.device))
        out: Tensor = module(x, context=memory, attn_mask=attn_mask)
        return out

    # -- 3.3 -----------------------------------------------------------------------------
    def feed_forward(self, d_model: int, d_ff: int) -> nn.Module:
        """``FeedForward(d_model, mult=d_ff / d_model, custom_activation=nn.ReLU())``."""
        return FeedForward(d_model, mult=_ff_mult(d_model, d_ff), custom_activation=nn.ReLU())

    def feed_forward_forward(self, module: nn.Module, x: Tensor) -> Tensor:
        """``module(x)``."""
        out: Tensor = module(x)
        return out

    # -- 3.5 -----------------------------------------------------------------------------
    def positional_encoding(self, length: int, d_model: int) -> Tensor:
        """``ScaledSinusoidalEmbedding(d_model)`` over ``length`` positions with its learned
        ``scale`` at 1: the sinusoid table (float32, as its ``inv_freq`` is computed). The model
        multiplies it by ``scale`` (initialised to d_model^-0.5)."""
        module = ScaledSinusoidalEmbedding(d_model)
        with torch.no_grad():
            module.scale.fill_(1.0)
            table: Tensor = module(torch.zeros(1, length, dtype=torch.long))
        return table

    # -- the model -----------------------------------------------------------------------
    def model(self, config: Config) -> XTransformer:
        """``XTransformer(...)`` with random weights (see the module docstring for the
        settings)."""
        return _xtransformer(config)

    def parameters(self, module: nn.Module) -> dict[str, Tensor]:
        """A snapshot of ``module``'s parameters under their canonical names."""
        return read(module, _layout(module))

    def load_parameters(self, module: nn.Module, params: Params) -> None:
        """Write canonical parameters into ``module`` (any subset; shapes must match)."""
        write(module, _layout(module), params)

    def embed_source(self, model: XTransformer, src: Tensor) -> Tensor:
        """What the encoder's ``TransformerWrapper.forward`` feeds its attention layers."""
        return _stack_input(model.encoder, src)

    def embed_target(self, model: XTransformer, tgt: Tensor) -> Tensor:
        """What the decoder's ``TransformerWrapper.forward`` feeds its attention layers."""
        return _stack_input(model.decoder.net, tgt)

    def encode(self, model: XTransformer, x: Tensor, src_mask: Tensor) -> Tensor:
        """``encoder.attn_layers(x, mask=src_mask)``, as the encoder's wrapper calls it."""
        out: Tensor = model.encoder.attn_layers(x, mask=_padding(src_mask))
        return out

    def decode(self, model: XTransformer, y: Tensor, memory: Tensor, src_mask: Tensor) -> Tensor:
        """``decoder.net.attn_layers(y, context=memory, context_mask=src_mask)`` (causal inside:
        ``Decoder`` sets ``causal=True``)."""
        out: Tensor = model.decoder.net.attn_layers(y, context=memory,
                                                    context_mask=_padding(src_mask))
        return out

    def decode_incremental(
        self, model: XTransformer, y: Tensor, memory: Tensor, src_mask: Tensor
    ) -> Tensor:
        """``decode`` one position at a time: each call gets the newest position and the
        ``LayerIntermediates`` cache the previous call returned (cross-attention keys and
        values are computed at the first step and kept)."""
        layers = model.decoder.net.attn_layers
        cache = None
        steps = []
        for t in range(y.size(1)):
            out, cache = layers(y[:, t : t + 1], context=memory, context_mask=_padding(src_mask),
                                cache=cache, return_hiddens=True)
            steps.append(out)
        return torch.cat(steps, dim=1)

    def project(self, model: XTransformer, y: Tensor) -> Tensor:
        """``decoder.net.to_logits(y)``."""
        logits: Tensor = model.decoder.net.to_logits(y)
        return logits

    def forward(self, model: XTransformer, src: Tensor, tgt_in: Tensor, src_mask: Tensor
                ) -> Tensor:
        """The logits ``XTransformer.forward`` computes before its loss: the encoder's
        embeddings, then the decoder's ``TransformerWrapper`` on ``tgt_in`` with
        ``context_mask`` = the source padding mask."""
        mask = _padding(src_mask)
        encoded = model.encoder(src, mask=mask, return_embeddings=True)
        logits: Tensor = model.decoder.net(tgt_in, context=encoded, context_mask=mask)
        return logits

    def incremental_logits(self, model: XTransformer, src: Tensor, src_mask: Tensor,
                           tgt_in: Tensor) -> Tensor:
        """The logits of ``forward``, one target position per call with the cache, as
        ``AutoregressiveWrapper.generate`` drives the decoder (the encoder runs once)."""
        mask = _padding(src_mask)
        encoded = model.encoder(src, mask=mask, return_embeddings=True)
        cache, steps = None, []
        for t in range(tgt_in.size(1)):
            logits, cache = model.decoder.net(tgt_in[:, : t + 1], context=encoded,
                                              context_mask=mask, cache=cache,
                                              return_intermediates=True)
            steps.append(logits[:, -1:])
        return torch.cat(steps, dim=1)

    # -- training and decoding -----------------------------------------------------------
    def loss(self, logits: Tensor, target: Tensor, pad_id: int) -> Tensor:
        """``AutoregressiveWrapper.forward``'s loss: ``cross_entropy(rearrange(logits, 'b n c
        -> b c n'), target, ignore_index=pad_id)`` (the model is built with ``ignore_index`` =
        the pad id)."""
        loss: Tensor = cross_entropy(logits.transpose(1, 2), target, ignore_index=pad_id)
        return loss

    def greedy(self, model: XTransformer, src: Tensor, src_mask: Tensor, config: Config,
               max_len: int) -> Tensor:
        """``model.generate(src, bos, max_len, mask=src_mask, eos_token=eos, temperature=0.)``:
        argmax decoding, rows padded after their eos, the start symbol left out."""
        start = torch.full((src.size(0), 1), config.bos_id, dtype=torch.long, device=src.device)
        out: Tensor = model.generate(src, start, max_len, mask=_padding(src_mask),
                                     eos_token=config.eos_id, temperature=0.0,
                                     restrict_to_max_seq_len=False)
        return out

    def beam_search(self, model: XTransformer, src: Tensor, src_mask: Tensor, config: Config
                    ) -> list[int]:
        """``model.decoder.beam_search(bos, len(src) + 50, beams=4, context=..., context_mask=
        ...)`` after the encoder, as ``XTransformer.generate`` runs it; the best beam up to its
        first eos (the library's beam search does not support an eos token)."""
        mask = _padding(src_mask)
        encoded = model.encoder(src, mask=mask, return_embeddings=True)
        start = torch.full((src.size(0), 1), config.bos_id, dtype=torch.long, device=src.device)
        out = model.decoder.beam_search(start, src.size(1) + 50, beams=BEAMS, context=encoded,
                                        context_mask=mask, restrict_to_max_seq_len=False)
        ids = [int(t) for t in out[0]]
        return ids[: ids.index(config.eos_id) + 1] if config.eos_id in ids else ids

    # -- practice ------------------------------------------------------------------------
    def save(self, model: XTransformer, path: str | os.PathLike[str]) -> None:
        """``torch.save`` of the state dict, with the configuration that rebuilds the model."""
        torch.save({"format": FORMAT, "config": dataclasses.asdict(_config_of(model)),
                    "state_dict": model.state_dict()}, path)

    def load(self, path: str | os.PathLike[str]) -> nn.Module:
        """Rebuild the ``XTransformer`` (dtype and device of the saved tensors) and load its
        state dict strictly; ``torch.load(..., weights_only=True)`` unpickles no code."""
        payload = torch.load(path, weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ValueError(f"{path}: not a file written by the x-transformers adapter's save()")
        state: dict[str, Tensor] = payload["state_dict"]
        first = next(iter(state.values()))
        model = _xtransformer(Config(**payload["config"])).to(first.device, first.dtype)
        model.load_state_dict(state, strict=True)
        return model


adapter = XTransformersAdapter()
"""The shipped adapter for x-transformers (``--impl x-transformers``)."""
