"""Section 3.1, encoder and decoder stacks: LayerNorm, the residual connection around each
sub-layer, the encoder and decoder layers and their stacks (checked by
:mod:`spec.suite.test_3_1_stacks`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from ._common import Params, _f64
from .section_3_2_2_multi_head import multi_head
from .section_3_2_3_applications import causal_mask, padding_mask
from .section_3_3_ffn import feed_forward

__all__ = [
    "Norm",
    "decoder",
    "decoder_layer",
    "encoder",
    "encoder_layer",
    "layer_norm",
    "residual",
    "sub",
]


Norm = Literal["post", "pre", "no-residual", "no-norm"]


def sub(params: Params, prefix: str) -> dict[str, Tensor]:
    """The entries of ``params`` under ``prefix.``, with the prefix removed."""
    head = prefix + "."
    return {name[len(head) :]: t for name, t in params.items() if name.startswith(head)}


def layer_norm(
    x: Tensor,
    gamma: Tensor,
    beta: Tensor | None,
    eps: float = 1e-5,
    *,
    unbiased: bool = False,
    eps_inside_sqrt: bool = True,
) -> Tensor:
    """LayerNorm over the last axis: gamma * (x - mean) / sqrt(var + eps) + beta.

    Used by 3.1/residual-norm. ``var`` is the biased variance (divide by n). The knobs give
    the readings the paper leaves open (variants of 3.1/residual-norm): ``unbiased=True``
    divides by n - 1,
    ``eps_inside_sqrt=False`` divides by sqrt(var) + eps. ``beta=None``: a LayerNorm without a
    bias (what 3.1/residual-norm reports as ``norm-without-bias``) adds nothing.
    """
    x = _f64(x)
    n = x.shape[-1]
    mean = x.sum(dim=-1, keepdim=True) / n
    squares = ((x - mean) ** 2).sum(dim=-1, keepdim=True)
    var = squares / (n - 1 if unbiased else n)
    std = torch.sqrt(var + eps) if eps_inside_sqrt else torch.sqrt(var) + eps
    out = _f64(gamma) * (x - mean) / std
    return out if beta is None else out + _f64(beta)


def residual(
    x: Tensor,
    sublayer: Callable[[Tensor], Tensor],
    norm_params: Params,
    norm: Norm = "post",
    eps: float = 1e-5,
    *,
    unbiased: bool = False,
    eps_inside_sqrt: bool = True,
) -> Tensor:
    """One sub-layer with its residual connection and LayerNorm (3.1/residual-norm).

    ``post`` (paper): LayerNorm(x + Sublayer(x)); ``pre`` (variant): x + Sublayer(LayerNorm(x));
    ``no-residual`` (bug): LayerNorm(Sublayer(x)); ``no-norm`` (bug): x + Sublayer(x). The
    LayerNorm has ``norm_params`` ``gamma``, ``beta`` and the options of :func:`layer_norm`.
    """

    def ln(t: Tensor) -> Tensor:
        return layer_norm(
            t,
            norm_params["gamma"],
            norm_params.get("beta"),
            eps,
            unbiased=unbiased,
            eps_inside_sqrt=eps_inside_sqrt,
        )

    if norm == "post":
        return ln(x + sublayer(x))
    if norm == "pre":
        return x + sublayer(ln(x))
    if norm == "no-residual":
        return ln(sublayer(x))
    if norm == "no-norm":
        return x + sublayer(x)
    raise ValueError(f"unknown norm {norm!r}: use post, pre, no-residual or no-norm")


def _check_heads(attn: Params, h: int, prefix: str) -> None:
    if "W_Q" not in attn:
        raise KeyError(f"missing parameter {prefix}.W_Q")
    if attn["W_Q"].shape[0] != h:
        raise ValueError(f"{prefix}.W_Q has {attn['W_Q'].shape[0]} heads, expected h={h}")


def encoder_layer(
    x: Tensor,
    params: Params,
    prefix: str,
    h: int,
    src_mask: Tensor | None = None,
    *,
    norm: Norm = "post",
    eps: float = 1e-5,
    bug: str | None = None,
) -> Tensor:
    """One encoder layer: self-attention, then FFN, each wrapped (3.1/encoder-layer).

    ``x`` ``[B, S, d_model]``; parameters under ``prefix`` (e.g. ``"encoder.0"``):
    ``self_attn.*``, ``norm_1.*``, ``ffn.*``, ``norm_2.*``. ``src_mask`` ``[B, S]`` bool
    (True = real token): padded keys are masked; there is no causal mask
    (3.2.3/encoder-self). ``norm`` as in 3.1/residual-norm (``post``, ``pre``,
    ``no-residual``, ``no-norm``); ``bug`` is passed to every :func:`multi_head`.
    """
    attn = sub(params, f"{prefix}.self_attn")
    ffn = sub(params, f"{prefix}.ffn")
    _check_heads(attn, h, f"{prefix}.self_attn")
    mask = None if src_mask is None else padding_mask(src_mask)

    def self_attention(t: Tensor) -> Tensor:
        return multi_head(t, t, t, attn, mask, bug=bug)

    def position_wise(t: Tensor) -> Tensor:
        return feed_forward(t, ffn)

    x = residual(x, self_attention, sub(params, f"{prefix}.norm_1"), norm, eps)
    return residual(x, position_wise, sub(params, f"{prefix}.norm_2"), norm, eps)


def _final_norm(
    x: Tensor, params: Params, name: str, final_norm: bool | None, eps: float
) -> Tensor:
    if final_norm is None:
        final_norm = f"{name}.norm.gamma" in params
    if not final_norm:
        return x
    return layer_norm(x, params[f"{name}.norm.gamma"], params.get(f"{name}.norm.beta"), eps)


def encoder(
    x: Tensor,
    params: Params,
    n_layers: int,
    h: int,
    src_mask: Tensor | None = None,
    *,
    norm: Norm = "post",
    final_norm: bool | None = None,
    eps: float = 1e-5,
    bug: str | None = None,
) -> Tensor:
    """The encoder: ``n_layers`` layers ``encoder.{i}``, each with its own parameters
    (3.1/encoder-stack), applied to the embedded source ``x`` ``[B, S, d_model]``.

    The output is the last layer's (3.1/no-final-norm). ``final_norm``: ``None`` applies
    ``encoder.norm.*`` when those parameters are present (variant ``final-norm``), ``True``
    requires it, ``False`` never applies it.
    """
    for i in range(n_layers):
        x = encoder_layer(x, params, f"encoder.{i}", h, src_mask, norm=norm, eps=eps, bug=bug)
    return _final_norm(_f64(x), params, "encoder", final_norm, eps)


def decoder_layer(
    y: Tensor,
    memory: Tensor,
    params: Params,
    prefix: str,
    h: int,
    src_mask: Tensor | None = None,
    *,
    norm: Norm = "post",
    causal_offset: int = 0,
    eps: float = 1e-5,
    bug: str | None = None,
) -> Tensor:
    """One decoder layer: masked self-attention, cross-attention, FFN (3.1/decoder-layer).

    ``y`` ``[B, T, d_model]``, ``memory`` ``[B, S, d_model]`` (the encoder output,
    3.1/shared-memory); parameters under ``prefix`` (e.g. ``"decoder.0"``): ``self_attn.*``,
    ``norm_1.*``, ``cross_attn.*``, ``norm_2.*``, ``ffn.*``, ``norm_3.*``. Self-attention uses
    ``causal_mask(T, causal_offset)`` (3.2.3/decoder-self; ``causal_offset=±1`` are the
    off-by-one bugs). Cross-attention: queries from the decoder, keys and values from
    ``memory``, padded source keys masked by ``src_mask`` ``[B, S]`` (3.2.3/cross-attention).
    """
    self_attn = sub(params, f"{prefix}.self_attn")
    cross_attn = sub(params, f"{prefix}.cross_attn")
    ffn = sub(params, f"{prefix}.ffn")
    _check_heads(self_attn, h, f"{prefix}.self_attn")
    _check_heads(cross_attn, h, f"{prefix}.cross_attn")
    memory = _f64(memory)
    causal = causal_mask(y.shape[-2], causal_offset)
    src = None if src_mask is None else padding_mask(src_mask)

    def masked_self_attention(t: Tensor) -> Tensor:
        return multi_head(t, t, t, self_attn, causal, bug=bug)

    def encoder_decoder_attention(t: Tensor) -> Tensor:
        return multi_head(t, memory, memory, cross_attn, src, bug=bug)

    def position_wise(t: Tensor) -> Tensor:
        return feed_forward(t, ffn)

    y = residual(y, masked_self_attention, sub(params, f"{prefix}.norm_1"), norm, eps)
    y = residual(y, encoder_decoder_attention, sub(params, f"{prefix}.norm_2"), norm, eps)
    return residual(y, position_wise, sub(params, f"{prefix}.norm_3"), norm, eps)


def decoder(
    y: Tensor,
    memory: Tensor,
    params: Params,
    n_layers: int,
    h: int,
    src_mask: Tensor | None = None,
    *,
    norm: Norm = "post",
    causal_offset: int = 0,
    final_norm: bool | None = None,
    eps: float = 1e-5,
    bug: str | None = None,
) -> Tensor:
    """The decoder: ``n_layers`` layers ``decoder.{i}`` over the embedded, shifted-right target
    ``y`` ``[B, T, d_model]``, every layer attending to the same ``memory`` (3.1/shared-memory).

    ``final_norm`` as in :func:`encoder` (``decoder.norm.*``).
    """
    for i in range(n_layers):
        y = decoder_layer(
            y,
            memory,
            params,
            f"decoder.{i}",
            h,
            src_mask,
            norm=norm,
            causal_offset=causal_offset,
            eps=eps,
            bug=bug,
        )
    return _final_norm(_f64(y), params, "decoder", final_norm, eps)
