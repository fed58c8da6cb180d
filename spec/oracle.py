"""The oracle: the paper's equations, written as literally as possible, in float64.

This is the ground truth the suite compares implementations with. It favours being obviously
right over being fast: per-head and per-layer Python loops, explicit formulas, no ``torch.nn``
modules, no fused kernels. Every function converts its tensor inputs to float64 (keeping their
device) and returns float64.

Several functions take *bug knobs* that reproduce known, common mistakes (no 1/sqrt(d_k) scale,
softmax over the wrong axis, slicing the input per head, a causal mask off by one, pre-norm,
sin/cos swapped, ...). They are never the default: the suite uses them for diagnosis, computing
each buggy output and naming the one an implementation matches (see ``spec.tolerances``).

Parameters are read from a mapping with the canonical names of ``spec.adapter`` (``W_Q``
``[h, d_model, d_k]``, ``W_O`` ``[h*d_v, d_model]``, ``W_1``, ``gamma``, ...; a whole model
prefixes them: ``encoder.0.self_attn.W_Q``). Masks are boolean, ``True`` = may attend.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "MULTI_HEAD_BUGS",
    "attention",
    "attention_weights",
    "beam_search",
    "causal_mask",
    "decoder",
    "decoder_layer",
    "embed",
    "encoder",
    "encoder_layer",
    "feed_forward",
    "label_smoothed_loss",
    "layer_norm",
    "length_penalty",
    "multi_head",
    "noam_lr",
    "padding_mask",
    "param_count",
    "positional_encoding",
    "project",
    "smoothed_targets",
]

Params = Mapping[str, Tensor]
Scale = Literal["sqrt_dk", "none", "dk", "sqrt_dmodel"] | float
SoftmaxAxis = Literal["keys", "queries"]
Norm = Literal["post", "pre", "no-residual", "no-norm"]
Activation = Literal["relu", "none", "gelu"]
Spread = Literal["excluding-true-and-pad", "excluding-true", "all"]

MULTI_HEAD_BUGS: tuple[str, ...] = (
    "no-scale",
    "scale-dk",
    "scale-dmodel",
    "softmax-over-queries",
    "slice-input",
    "no-output-projection",
    "concat-without-transpose",
)
"""The known multi-head attention bugs that :func:`multi_head` can reproduce."""


def _f64(x: Tensor) -> Tensor:
    return x.to(dtype=torch.float64)


# -- 3.2.1 Scaled dot-product attention ------------------------------------------------------


def causal_mask(length: int, offset: int = 0) -> Tensor:
    """Boolean ``[length, length]``: query i may attend to key j iff ``j <= i + offset``.

    ``offset=0`` is the paper's mask (3.2.3/decoder-self, 3.1/decoder-causal). ``offset=1`` is
    the off-by-one bug that lets position i see token i + 1; ``offset=-1`` the one that hides
    position i from itself (and leaves row 0 fully masked).
    """
    i = torch.arange(length).unsqueeze(1)
    j = torch.arange(length).unsqueeze(0)
    return j <= i + offset


def padding_mask(valid: Tensor) -> Tensor:
    """``[B, L]`` bool (True = real token) -> ``[B, 1, L]``: every query may see real keys only.

    Implements practice/padding: keys at padding positions are masked.
    """
    if valid.dtype != torch.bool:
        raise TypeError(f"padding mask must be bool (True = real token), got {valid.dtype}")
    return valid.unsqueeze(-2)


def _shift_mask(mask: Tensor, offset: int) -> Tensor:
    """Key j uses the mask column j - offset; columns shifted in from the left are True (may
    attend), from the right False. For a causal mask this is ``causal_mask(L, offset)``."""
    if offset == 0:
        return mask
    lk = mask.shape[-1]
    shifted = torch.empty_like(mask)
    for j in range(lk):
        src = j - offset
        if 0 <= src < lk:
            shifted[..., j] = mask[..., src]
        else:
            shifted[..., j] = src < 0
    return shifted


def _scale_factor(scale: Scale, d_k: int, d_model: int | None) -> float:
    if not isinstance(scale, str):
        return float(scale)
    if scale == "sqrt_dk":
        return 1.0 / math.sqrt(d_k)
    if scale == "none":
        return 1.0
    if scale == "dk":
        return 1.0 / d_k
    if scale == "sqrt_dmodel":
        if d_model is None:
            raise ValueError("scale='sqrt_dmodel' needs d_model")
        return 1.0 / math.sqrt(d_model)
    raise ValueError(f"unknown scale {scale!r}: use sqrt_dk, none, dk, sqrt_dmodel or a float")


def _masked_softmax(scores: Tensor, allowed: Tensor, dim: int) -> Tensor:
    """softmax along ``dim`` with disallowed scores set to -inf; an all-disallowed slice -> 0."""
    neg_inf = torch.tensor(-math.inf, dtype=scores.dtype, device=scores.device)
    masked = torch.where(allowed, scores, neg_inf)
    top = masked.amax(dim=dim, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))  # fully masked slice
    e = torch.exp(masked - top)  # exp(-inf) = 0: masked weights are exactly zero
    total = e.sum(dim=dim, keepdim=True)
    return torch.where(total > 0, e / torch.where(total > 0, total, 1.0), torch.zeros_like(e))


def attention_weights(
    q: Tensor,
    k: Tensor,
    v: Tensor | None = None,
    mask: Tensor | None = None,
    *,
    scale: Scale = "sqrt_dk",
    d_model: int | None = None,
    softmax_axis: SoftmaxAxis = "keys",
    mask_offset: int = 0,
) -> Tensor:
    """The attention weights softmax(Q K^T / sqrt(d_k)), ``[..., Lq, Lk]`` (3.2.1/eq1).

    ``q`` ``[..., Lq, d_k]``, ``k`` ``[..., Lk, d_k]``; ``v`` is accepted (and ignored) so that
    the signature matches :func:`attention`. ``mask`` is bool, broadcastable to
    ``[..., Lq, Lk]``, ``True`` = may attend; masked scores are -inf before the softmax, so
    their weights are exactly 0 (3.2.1/mask). A fully masked row gets all-zero weights (the
    paper does not say; ``softmax`` of all -inf would be NaN).

    Bug knobs (for diagnosis): ``scale`` = ``"sqrt_dk"`` (paper, 3.2.1/scale), ``"none"``,
    ``"dk"``, ``"sqrt_dmodel"`` (needs ``d_model``) or a float the scores are multiplied by;
    ``softmax_axis="queries"`` normalises over the queries (3.2.1/softmax-over-keys);
    ``mask_offset`` applies the mask shifted along the key axis: key j uses mask column
    ``j - mask_offset`` (columns shifted in from the left may attend, from the right may not),
    so a causal mask with ``mask_offset=1`` is ``causal_mask(L, offset=1)``.
    """
    del v
    q, k = _f64(q), _f64(k)
    d_k = q.shape[-1]
    scores = (q @ k.transpose(-2, -1)) * _scale_factor(scale, d_k, d_model)
    if mask is None:
        allowed = torch.ones_like(scores, dtype=torch.bool)
    else:
        if mask.dtype != torch.bool:
            raise TypeError(f"attention mask must be bool (True = may attend), got {mask.dtype}")
        mask = _shift_mask(mask.to(scores.device), mask_offset)
        scores, allowed = torch.broadcast_tensors(scores, mask)
    if softmax_axis == "keys":
        return _masked_softmax(scores, allowed, dim=-1)
    if softmax_axis == "queries":
        return _masked_softmax(scores, allowed, dim=-2)
    raise ValueError(f"unknown softmax_axis {softmax_axis!r}: use 'keys' or 'queries'")


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    *,
    scale: Scale = "sqrt_dk",
    d_model: int | None = None,
    softmax_axis: SoftmaxAxis = "keys",
    mask_offset: int = 0,
) -> Tensor:
    """Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V, ``[..., Lq, d_v]`` (3.2.1/eq1).

    ``v`` is ``[..., Lk, d_v]`` (d_v may differ from d_k). Masking and the bug knobs are those
    of :func:`attention_weights`; a fully masked query row outputs zeros.
    """
    weights = attention_weights(
        q,
        k,
        mask=mask,
        scale=scale,
        d_model=d_model,
        softmax_axis=softmax_axis,
        mask_offset=mask_offset,
    )
    return weights @ _f64(v)


# -- 3.2.2 Multi-head attention --------------------------------------------------------------


def multi_head(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    params: Params,
    mask: Tensor | None = None,
    *,
    bug: str | None = None,
) -> Tensor:
    """MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O (3.2.2/eq), one head at a time.

    ``head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)``: every head projects the whole d_model
    input (3.2.2/heads-split-by-projection). ``query`` ``[..., Lq, d_model]``, ``key`` and
    ``value`` ``[..., Lk, d_model]``; ``params``: ``W_Q``, ``W_K`` ``[h, d_model, d_k]``,
    ``W_V`` ``[h, d_model, d_v]``, ``W_O`` ``[h*d_v, d_model]`` and, if present, the biases
    ``b_Q``, ``b_K``, ``b_V`` ``[h, d_k]`` and ``b_O`` ``[d_model]`` (variant
    ``projection-biases``). ``mask`` as in :func:`attention`, shared by all heads.

    ``bug`` reproduces one of :data:`MULTI_HEAD_BUGS`:

    * ``"no-scale"``, ``"scale-dk"``, ``"scale-dmodel"``: scores scaled by 1, 1/d_k,
      1/sqrt(d_model) instead of 1/sqrt(d_k) (the last two coincide when d_k^2 = d_model,
      e.g. d_model = 16, h = 4: use another shape to tell them apart);
    * ``"softmax-over-queries"``: the softmax normalises over the query axis;
    * ``"slice-input"``: head i sees only the input features ``[i*w, (i+1)*w)``, w = d_model/h,
      multiplied by the matching rows ``W_i^Q[i*w:(i+1)*w, :]`` (likewise K and V);
    * ``"no-output-projection"``: the concatenated heads are returned, without W^O (nor b_O);
    * ``"concat-without-transpose"``: the heads, stacked ``[..., h, Lq, d_v]``, are reshaped
      directly to ``[..., Lq, h*d_v]`` without moving the head axis next to the features.
    """
    if bug is not None and bug not in MULTI_HEAD_BUGS:
        raise ValueError(f"unknown multi-head bug {bug!r}; known: {', '.join(MULTI_HEAD_BUGS)}")
    query, key, value = _f64(query), _f64(key), _f64(value)
    W_Q, W_K, W_V, W_O = (_f64(params[n]) for n in ("W_Q", "W_K", "W_V", "W_O"))
    h, d_model, _ = W_Q.shape
    scales: dict[str, Scale] = {"no-scale": "none", "scale-dk": "dk", "scale-dmodel": "sqrt_dmodel"}
    scale = scales.get(bug or "", "sqrt_dk")
    axis: SoftmaxAxis = "queries" if bug == "softmax-over-queries" else "keys"

    heads = []
    for i in range(h):
        xq, xk, xv, wq, wk, wv = query, key, value, W_Q[i], W_K[i], W_V[i]
        if bug == "slice-input":
            w = d_model // h
            rows = slice(i * w, (i + 1) * w)
            xq, xk, xv = query[..., rows], key[..., rows], value[..., rows]
            wq, wk, wv = wq[rows], wk[rows], wv[rows]
        q_i, k_i, v_i = xq @ wq, xk @ wk, xv @ wv
        if "b_Q" in params:
            q_i = q_i + _f64(params["b_Q"])[i]
        if "b_K" in params:
            k_i = k_i + _f64(params["b_K"])[i]
        if "b_V" in params:
            v_i = v_i + _f64(params["b_V"])[i]
        heads.append(
            attention(q_i, k_i, v_i, mask, scale=scale, d_model=d_model, softmax_axis=axis)
        )

    if bug == "concat-without-transpose":
        stacked = torch.stack(heads, dim=-3)  # [..., h, Lq, d_v]
        lq, d_v = stacked.shape[-2], stacked.shape[-1]
        concat = stacked.reshape(*stacked.shape[:-3], lq, h * d_v)
    else:
        concat = torch.cat(heads, dim=-1)  # [..., Lq, h*d_v]
    if bug == "no-output-projection":
        return concat
    out = concat @ W_O
    if "b_O" in params:
        out = out + _f64(params["b_O"])
    return out


# -- 3.1 Layer normalization, 3.3 feed-forward -----------------------------------------------


def layer_norm(
    x: Tensor,
    gamma: Tensor,
    beta: Tensor,
    eps: float = 1e-5,
    *,
    unbiased: bool = False,
    eps_inside_sqrt: bool = True,
) -> Tensor:
    """LayerNorm over the last axis: gamma * (x - mean) / sqrt(var + eps) + beta.

    Used by 3.1/residual-norm. ``var`` is the biased variance (divide by n). The knobs give
    the readings the paper leaves open (variants of 3.1/residual-norm): ``unbiased=True``
    divides by n - 1,
    ``eps_inside_sqrt=False`` divides by sqrt(var) + eps.
    """
    x = _f64(x)
    n = x.shape[-1]
    mean = x.sum(dim=-1, keepdim=True) / n
    squares = ((x - mean) ** 2).sum(dim=-1, keepdim=True)
    var = squares / (n - 1 if unbiased else n)
    std = torch.sqrt(var + eps) if eps_inside_sqrt else torch.sqrt(var) + eps
    return _f64(gamma) * (x - mean) / std + _f64(beta)


def feed_forward(x: Tensor, params: Params, *, activation: Activation = "relu") -> Tensor:
    """FFN(x) = max(0, x W_1 + b_1) W_2 + b_2, applied at every position (3.3/eq2).

    ``params``: ``W_1`` ``[d_model, d_ff]``, ``b_1`` ``[d_ff]``, ``W_2`` ``[d_ff, d_model]``,
    ``b_2`` ``[d_model]``. ``activation``: ``"relu"`` (paper), ``"gelu"`` (variant, exact erf
    form) or ``"none"`` (bug: no non-linearity).
    """
    x = _f64(x)
    z = x @ _f64(params["W_1"]) + _f64(params["b_1"])
    if activation == "relu":
        a = torch.maximum(z, torch.zeros_like(z))
    elif activation == "gelu":
        a = 0.5 * z * (1.0 + torch.erf(z / math.sqrt(2.0)))
    elif activation == "none":
        a = z
    else:
        raise ValueError(f"unknown activation {activation!r}: use relu, gelu or none")
    return a @ _f64(params["W_2"]) + _f64(params["b_2"])


# -- 3.5 Positional encoding, 3.4 embeddings -------------------------------------------------


@functools.lru_cache(maxsize=64)
def _pe_table(
    length: int, d_model: int, base: float, layout: str, swap: bool, exponent: str, start: int
) -> Tensor:
    if layout not in ("interleaved", "concatenated"):
        raise ValueError(f"unknown layout {layout!r}: use 'interleaved' or 'concatenated'")
    if layout == "concatenated" and d_model % 2:
        raise ValueError(f"layout='concatenated' needs an even d_model, got {d_model}")
    half = (d_model + 1) // 2
    columns: list[list[float]] = []
    for c in range(d_model):
        # Column c holds the sine or the cosine of the i-th frequency.
        if layout == "interleaved":
            i, is_sin = c // 2, c % 2 == 0
        else:
            i, is_sin = c % half, c < half
        if exponent == "2i":  # the paper: 10000^(2i / d_model)
            e = 2 * i / d_model
        elif exponent == "i":
            e = i / d_model
        elif exponent == "column":
            e = c / d_model
        elif exponent == "t2t" and d_model >= 4:
            e = i / (d_model // 2 - 1)
        else:
            raise ValueError(
                f"unknown exponent {exponent!r} for d_model={d_model}: use 2i, i, column "
                "or t2t (t2t needs d_model >= 4)"
            )
        wave = math.sin if is_sin != swap else math.cos
        columns.append([wave((p + start) / base**e) for p in range(length)])
    return torch.tensor(columns, dtype=torch.float64).reshape(d_model, length).T.contiguous()


def positional_encoding(
    length: int,
    d_model: int,
    *,
    base: float = 10000.0,
    layout: Literal["interleaved", "concatenated"] = "interleaved",
    swap_sin_cos: bool = False,
    exponent: Literal["2i", "i", "column", "t2t"] = "2i",
    start: int = 0,
) -> Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d_model)), PE(pos, 2i+1) = cos(...) (3.5/formula).

    Returns float64 ``[length, d_model]`` (CPU), row ``p`` for position ``start + p``, computed
    entry by entry with Python's ``math``. Knobs (variants and bugs, for diagnosis):
    ``layout="concatenated"`` puts all sines first, then all cosines (variant
    ``concatenated-sin-cos``); ``swap_sin_cos`` uses cos on even and sin on odd columns;
    ``exponent``: ``"2i"`` (paper), ``"i"`` (the 2 dropped), ``"column"`` (the column index c
    in place of 2i, so cosines get (2i+1)/d_model), ``"t2t"`` (tensor2tensor's
    ``i / (d_model/2 - 1)``; variant ``timescale-denominator``); ``start=1`` counts positions
    from 1 (variant ``one-based-positions``).
    """
    table = _pe_table(length, d_model, float(base), layout, swap_sin_cos, exponent, start)
    return table.clone()


def embed(ids: Tensor, E: Tensor, *, scale: bool = True, positions: Tensor | None = None) -> Tensor:
    """E[ids] * sqrt(d_model) + PE (3.4/learned-embeddings, 3.4/scale, 3.5/added).

    ``ids`` ``[..., L]`` long, ``E`` ``[V, d_model]``. ``positions`` ``[>= L, d_model]``
    (learned positions, variant ``learned-positions``) defaults to
    ``positional_encoding(L, d_model)``; its first L rows are added. ``scale=False`` drops the
    sqrt(d_model) factor (a bug). Embedding dropout (5.4/embedding-dropout) is not modelled:
    the oracle is the evaluation-mode function.
    """
    E = _f64(E)
    length, d_model = ids.shape[-1], E.shape[1]
    x = E[ids.to(E.device)]
    if scale:
        x = x * math.sqrt(d_model)
    if positions is None:
        positions = positional_encoding(length, d_model)
    return x + _f64(positions)[:length].to(E.device)


# -- 3.1 The stacks --------------------------------------------------------------------------


def sub(params: Params, prefix: str) -> dict[str, Tensor]:
    """The entries of ``params`` under ``prefix.``, with the prefix removed."""
    head = prefix + "."
    return {name[len(head) :]: t for name, t in params.items() if name.startswith(head)}


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
            norm_params["beta"],
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
    return layer_norm(x, params[f"{name}.norm.gamma"], params[f"{name}.norm.beta"], eps)


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


def project(y: Tensor, params: Params) -> Tensor:
    """Logits ``y @ generator.W (+ generator.b)`` ``[..., V]`` (3.4/output-softmax)."""
    logits = _f64(y) @ _f64(params["generator.W"])
    if "generator.b" in params:
        logits = logits + _f64(params["generator.b"])
    return logits


# -- 5.4 Label smoothing, 5.3 learning rate --------------------------------------------------


def smoothed_targets(
    target: Tensor,
    vocab: int,
    eps: float,
    pad_id: int | None,
    *,
    spread: Spread = "excluding-true-and-pad",
) -> Tensor:
    """The label-smoothed target distributions ``[N, vocab]`` for ``target`` ``[N]`` (5.4).

    The true token gets 1 - eps; eps is spread uniformly over the other allowed tokens:
    ``"excluding-true-and-pad"`` over the V - 2 tokens that are neither true nor padding (the
    padding column is 0), ``"excluding-true"`` over the V - 1 others, ``"all"`` over all V
    (the true token then gets 1 - eps + eps/V). Rows whose target is ``pad_id`` are all zero.
    """
    if spread == "excluding-true-and-pad" and pad_id is None:
        raise ValueError("spread='excluding-true-and-pad' needs a pad_id")
    if spread not in ("excluding-true-and-pad", "excluding-true", "all"):
        raise ValueError(f"unknown spread {spread!r}")
    dist = torch.zeros(len(target), vocab, dtype=torch.float64)
    for n, y in enumerate(target.tolist()):
        if y == pad_id:
            continue  # padding positions carry no target
        if spread == "all":
            dist[n, :] = eps / vocab
            dist[n, y] += 1.0 - eps
        elif spread == "excluding-true":
            dist[n, :] = eps / (vocab - 1)
            dist[n, y] = 1.0 - eps
        else:
            dist[n, :] = eps / (vocab - 2)
            dist[n, pad_id] = 0.0
            dist[n, y] = 1.0 - eps
    return dist


def _log_softmax(logits: Tensor) -> Tensor:
    top = logits.amax(dim=-1, keepdim=True)
    return logits - top - torch.log(torch.exp(logits - top).sum(dim=-1, keepdim=True))


def label_smoothed_loss(
    logits: Tensor,
    target: Tensor,
    eps: float,
    pad_id: int | None,
    *,
    spread: Spread = "excluding-true-and-pad",
    kl: bool = False,
    reduction: Literal["mean", "sum"] = "mean",
) -> Tensor:
    """Cross-entropy between :func:`smoothed_targets` and log_softmax(logits) (5.4/label-smoothing).

    ``logits`` ``[..., V]``, ``target`` ``[...]``; averaged (``reduction="sum"``: summed) over
    the non-padding positions (0 when there are none). ``kl=True`` gives the KL divergence
    instead, i.e. subtracts the entropy of the smoothed target (variant ``kl-loss``; same
    gradient).
    """
    logits = _f64(logits)
    vocab = logits.shape[-1]
    flat, tgt = logits.reshape(-1, vocab), target.reshape(-1)
    q = smoothed_targets(tgt, vocab, eps, pad_id, spread=spread).to(logits.device)
    per_position = -(q * _log_softmax(flat)).sum(dim=-1)
    if kl:
        q_log_q = torch.where(q > 0, q * torch.log(torch.where(q > 0, q, 1.0)), 0.0)
        per_position = per_position + q_log_q.sum(dim=-1)
    tgt = tgt.to(logits.device)
    real = tgt != pad_id if pad_id is not None else torch.ones_like(tgt, dtype=torch.bool)
    total = per_position[real].sum()
    if reduction == "sum":
        return total
    count = int(real.sum())
    return total / count if count else total


def noam_lr(step: int, d_model: int, warmup: int = 4000) -> float:
    """lrate = d_model^-0.5 * min(step^-0.5, step * warmup^-1.5), for step >= 1 (5.3/eq3).

    Eq. 3 is undefined at step 0 (variant ``step-zero``): ``ValueError``.
    """
    if step < 1:
        raise ValueError(f"Eq. 3 is defined for step >= 1, got {step}")
    return float(d_model**-0.5 * min(step**-0.5, step * warmup**-1.5))


# -- 6.1 Beam search -------------------------------------------------------------------------


def length_penalty(length: int, alpha: float = 0.6) -> float:
    """lp(Y) = ((5 + |Y|) / 6)^alpha, Wu et al. (2016), as used in 6.1/beam-search."""
    return float(((5 + length) / 6) ** alpha)


def beam_search(
    step_log_probs: Callable[[list[list[int]]], Tensor],
    bos: int,
    eos: int,
    max_len: int,
    beam_size: int = 4,
    alpha: float = 0.6,
    *,
    fixed_width: bool = False,
) -> list[int]:
    """Beam search with length penalty (6.1/beam-search), written for reading, not speed.

    Exact semantics (those of the reference implementation, ``transformer.decoding``; the paper
    gives only beam size, alpha and the length limit):

    1. The beam starts as the single live prefix ``[bos]`` with log-probability 0; no
       hypothesis has ended.
    2. At each step, ``step_log_probs(prefixes)`` gives next-token log-probabilities
       ``[n_live, V]`` for the live prefixes (each starting with ``bos``). Every live prefix is
       extended by every token; the candidates are ranked by their summed log-probability
       (all have the same length, so this is also the ranking by normalised score), ties
       broken by live-prefix order and then by token id, and the best ``k`` are kept, where
       ``k = beam_size - (number of hypotheses ended so far)``: every ended hypothesis takes
       one place of the beam for good.
    3. A kept candidate that ends in ``eos`` has ended: it is set aside with the score
       ``log P(Y) / lp(|Y|)``, where ``|Y|`` counts the generated tokens including ``eos``
       (not ``bos``); the others are the live prefixes of the next step.
    4. The search stops early when a step leaves no live prefix (then ``beam_size``
       hypotheses have ended, or fewer if there were fewer than ``k`` candidates), or after
       ``max_len`` steps; then the live prefixes join the ended ones, unended, with their
       normalised scores.
    5. The result is the hypothesis with the best normalised score (the earliest set aside
       on ties), without ``bos``, with ``eos`` if it generated one.

    With ``beam_size=1`` this is greedy decoding that stops at ``eos``. The paper uses
    ``beam_size=4``, ``alpha=0.6`` and ``max_len`` = input length + 50.

    Bug knob (for diagnosis): ``fixed_width=True`` keeps ``beam_size`` candidates at every
    step however many hypotheses have ended, so the search goes on until one step's kept
    candidates all end (in practice, nearly always to ``max_len``).
    """
    live: list[tuple[list[int], float]] = [([bos], 0.0)]
    ended: list[tuple[list[int], float]] = []  # (tokens without bos, normalised score)
    for _ in range(max_len):
        k = beam_size if fixed_width else beam_size - len(ended)
        log_probs = _f64(step_log_probs([prefix for prefix, _ in live]))
        if log_probs.dim() != 2 or log_probs.shape[0] != len(live):
            raise ValueError(
                f"step_log_probs must return [n_prefixes={len(live)}, V], got "
                f"{tuple(log_probs.shape)}"
            )
        candidates: list[tuple[float, list[int]]] = []
        for (prefix, score), row in zip(live, log_probs.tolist(), strict=True):
            for token, lp in enumerate(row):
                candidates.append((score + lp, [*prefix, token]))
        candidates.sort(key=lambda c: -c[0])  # stable: ties keep prefix, then token order
        live = []
        for score, seq in candidates[:k]:
            if seq[-1] == eos:
                ended.append((seq[1:], score / length_penalty(len(seq) - 1, alpha)))
            else:
                live.append((seq, score))
        if not live:
            break
    for seq, score in live:
        ended.append((seq[1:], score / length_penalty(len(seq) - 1, alpha)))
    best_tokens, best_score = ended[0]
    for tokens, score in ended[1:]:
        if score > best_score:
            best_tokens, best_score = tokens, score
    return best_tokens


# -- Table 3 parameter counts ----------------------------------------------------------------


def param_count(
    d_model: int, d_ff: int, n_layers: int, vocab: int, *, tied: bool = True
) -> dict[str, int]:
    """Parameter counts per component (table3/param-formula), biases and LayerNorms counted.

    attention = 4 d^2 + 4 d (four projections with biases), ffn = 2 d d_ff + d_ff + d,
    layer_norm = 2 d, encoder_layer = attention + ffn + 2 layer_norm, decoder_layer =
    2 attention + ffn + 3 layer_norm, encoder / decoder = N layers, stacks = both,
    embeddings = V d tied (one matrix) or 3 V d untied, total = stacks + embeddings.
    Base (d=512, d_ff=2048, N=6, V=37000): total 63,082,496; big: 214,245,376.
    """
    d = d_model
    attention_block = 4 * d * d + 4 * d
    ffn = 2 * d * d_ff + d_ff + d
    norm = 2 * d
    enc_layer = attention_block + ffn + 2 * norm
    dec_layer = 2 * attention_block + ffn + 3 * norm
    embeddings = vocab * d * (1 if tied else 3)
    stacks = n_layers * (enc_layer + dec_layer)
    return {
        "attention": attention_block,
        "ffn": ffn,
        "layer_norm": norm,
        "encoder_layer": enc_layer,
        "decoder_layer": dec_layer,
        "encoder": n_layers * enc_layer,
        "decoder": n_layers * dec_layer,
        "stacks": stacks,
        "embeddings": embeddings,
        "total": stacks + embeddings,
    }
