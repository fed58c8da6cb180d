"""Oracle stacks with the knobs the oracle lacks (a model's reading, the known bugs of a layer's
structure and masks), and finding a model's reading on one-position probes (3.1, 3.2.2, 3.2.3,
3.3)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from spec import oracle
from spec.adapter import Config
from spec.check import Check, Env
from spec.oracle import sub
from spec.tolerances import Tolerance, error_ratio

from .models import SMALL, build
from .readings import PAPER, READINGS, Reading, Stack, layer_norm, layers

ENCODER_ORDER: tuple[str, ...] = ("self_attn", "ffn")
"""The sub-layers of an encoder layer, in the paper's order (3.1/encoder-layer)."""
DECODER_ORDER: tuple[str, ...] = ("self_attn", "cross_attn", "ffn")
"""The sub-layers of a decoder layer, in the paper's order (3.1/decoder-layer)."""
_NORM_OF = {"self_attn": "norm_1", "cross_attn": "norm_2", "ffn": "norm_3"}


def _attention_mask(
    src_mask: Tensor | None, causal: Tensor | None, device: torch.device
) -> Tensor | None:
    """Padding ``[B, S]`` (True = real) and/or causal ``[L_q, S]`` -> a mask for multi_head."""
    mask = None if src_mask is None else oracle.padding_mask(src_mask.to(device))
    if causal is not None:
        causal = causal.to(device)
        mask = causal if mask is None else mask & causal
    return mask


def _final(
    x: Tensor, params: Mapping[str, Tensor], stack: Stack, reading: Reading, final_norm: bool | None
) -> Tensor:
    if final_norm is None:
        final_norm = f"{stack}.norm.gamma" in params
    if final_norm:
        x = layer_norm(x, sub(params, f"{stack}.norm"), reading)
    return _hidden(x, reading)


def _hidden(x: Tensor, reading: Reading) -> Tensor:
    """The unexposed LayerNorm of ``reading.hidden_norm`` (gain 1, bias 0), if any."""
    if not reading.hidden_norm:
        return x
    ones = torch.ones(x.shape[-1], dtype=x.dtype, device=x.device)
    return layer_norm(x, {"gamma": ones, "beta": 0 * ones}, reading)


def encoder(
    x: Tensor,
    params: Mapping[str, Tensor],
    config: Config,
    src_mask: Tensor | None = None,
    reading: Reading = PAPER,
    *,
    norm: oracle.Norm | None = None,
    bug: str | None = None,
    causal: bool = False,
    order: tuple[str, ...] = ENCODER_ORDER,
    activation: oracle.Activation | None = None,
    final_norm: bool | None = None,
) -> Tensor:
    """:func:`spec.oracle.encoder` in ``reading``, with the knobs the oracle lacks.

    Without knobs, and with a standard LayerNorm, this *is* ``oracle.encoder``; otherwise the
    same equations are composed here from the oracle's parts. ``norm`` overrides
    ``reading.norm`` (also the bugs ``no-residual``, ``no-norm``); ``bug``: one of
    :data:`spec.oracle.MULTI_HEAD_BUGS`; ``causal``: the self-attention is causally masked
    (bug ``encoder-causal``); ``order``: the sub-layers applied, by name (bugs
    ``sublayer-order``, ``missing-sublayer``); ``activation`` overrides the reading's FFN
    activation (``"none"``: bug ``no-relu``); ``final_norm`` as in the oracle (default: when
    ``encoder.norm.*`` is present).
    """
    how: oracle.Norm = norm or reading.norm
    act: oracle.Activation = activation or reading.activation
    if reading.standard_layer_norm and not causal and order == ENCODER_ORDER and act == "relu":
        return _hidden(oracle.encoder(
            x, params, config.n_layers, config.h, src_mask,
            norm=how, eps=reading.eps, bug=bug, final_norm=final_norm,
        ), reading)
    x = x.to(torch.float64)
    length = x.shape[-2]
    mask = _attention_mask(src_mask, oracle.causal_mask(length) if causal else None, x.device)
    sublayers: dict[str, Callable[[Tensor, Mapping[str, Tensor]], Tensor]] = {
        "self_attn": lambda t, a: oracle.multi_head(t, t, t, a, mask, bug=bug),
        "ffn": lambda t, f: oracle.feed_forward(t, f, activation=act),
    }
    for i in range(config.n_layers):
        x = _layer(x, params, f"encoder.{i}", reading, how, order, sublayers)
    return _final(x, params, "encoder", reading, final_norm)


def _layer(
    x: Tensor,
    params: Mapping[str, Tensor],
    prefix: str,
    reading: Reading,
    norm: oracle.Norm,
    order: tuple[str, ...],
    sublayers: Mapping[str, Callable[[Tensor, Mapping[str, Tensor]], Tensor]],
) -> Tensor:
    """One layer: the named sub-layers in ``order``, each wrapped with its own norm."""
    norms = dict(_NORM_OF)
    if "cross_attn" not in sublayers:  # encoder: norm_1 after self-attention, norm_2 after FFN
        norms["ffn"] = "norm_2"
    for name in order:
        weights = sub(params, f"{prefix}.{name}")

        def sublayer(t: Tensor, name: str = name, weights: dict[str, Tensor] = weights) -> Tensor:
            return sublayers[name](t, weights)

        x = oracle.residual(
            x, sublayer, sub(params, f"{prefix}.{norms[name]}"), norm, reading.eps,
            unbiased=reading.unbiased, eps_inside_sqrt=reading.eps_inside_sqrt,
        )
    return x


def decoder(
    y: Tensor,
    memory: Tensor,
    params: Mapping[str, Tensor],
    config: Config,
    src_mask: Tensor | None = None,
    reading: Reading = PAPER,
    *,
    norm: oracle.Norm | None = None,
    bug: str | None = None,
    self_offset: int | None = 0,
    cross_causal: bool = False,
    cross_to_self: bool = False,
    order: tuple[str, ...] = DECODER_ORDER,
    activation: oracle.Activation | None = None,
    final_norm: bool | None = None,
) -> Tensor:
    """:func:`spec.oracle.decoder` in ``reading``, with the knobs the oracle lacks.

    Knobs as in :func:`encoder`, and: ``self_offset``: the causal mask's offset (``None``: no
    causal mask, bug ``decoder-not-causal``; ``±1``: the off-by-one bugs); ``cross_causal``:
    the encoder-decoder attention is causally masked too (bug ``cross-attention-causal``);
    ``cross_to_self``: the encoder-decoder attention attends over its own input instead of
    ``memory`` (bug ``cross-attention-self``, unmasked).
    """
    how: oracle.Norm = norm or reading.norm
    act: oracle.Activation = activation or reading.activation
    plain = not cross_causal and not cross_to_self and order == DECODER_ORDER and act == "relu"
    if reading.standard_layer_norm and self_offset is not None and plain:
        return _hidden(oracle.decoder(
            y, memory, params, config.n_layers, config.h, src_mask,
            norm=how, causal_offset=self_offset, eps=reading.eps, bug=bug, final_norm=final_norm,
        ), reading)
    y, memory = y.to(torch.float64), memory.to(torch.float64)
    t, s = y.shape[-2], memory.shape[-2]
    causal = None if self_offset is None else oracle.causal_mask(t, self_offset).to(y.device)
    cross = _attention_mask(
        src_mask, torch.ones(t, s, dtype=torch.bool).tril() if cross_causal else None, y.device
    )

    def cross_attention(q: Tensor, a: Mapping[str, Tensor]) -> Tensor:
        if cross_to_self:
            return oracle.multi_head(q, q, q, a, None, bug=bug)
        return oracle.multi_head(q, memory, memory, a, cross, bug=bug)

    sublayers: dict[str, Callable[[Tensor, Mapping[str, Tensor]], Tensor]] = {
        "self_attn": lambda q, a: oracle.multi_head(q, q, q, a, causal, bug=bug),
        "cross_attn": cross_attention,
        "ffn": lambda q, f: oracle.feed_forward(q, f, activation=act),
    }
    for i in range(config.n_layers):
        y = _layer(y, params, f"decoder.{i}", reading, how, order, sublayers)
    return _final(y, params, "decoder", reading, final_norm)


def wrap_bugs(run: Callable[..., Tensor], reading: Reading = PAPER) -> dict[str, Tensor]:
    """The oracle's outputs under the known bugs of the wrapping, and the FFN without its
    activation, for diagnosis: ``run(norm=..., activation=...)`` computes the oracle with
    those knobs."""
    bugs = {} if reading.norm == "pre" else {"pre-norm": run(norm="pre")}
    bugs["no-residual"] = run(norm="no-residual")
    bugs["no-norm"] = run(norm="no-norm")
    bugs["no-relu"] = run(activation="none")
    return bugs


def multi_head_bugs(run: Callable[..., Tensor]) -> dict[str, Tensor]:
    """The oracle's outputs under every :data:`spec.oracle.MULTI_HEAD_BUGS` (``run(bug=...)``)."""
    return {name: run(bug=name) for name in oracle.MULTI_HEAD_BUGS}


LAYER_BUGS: dict[Stack, dict[str, dict[str, Any]]] = {
    "encoder": {
        "sublayer-order": {"order": ("ffn", "self_attn")},
        "missing-sublayer": {"order": ("self_attn",)},
        "encoder-causal": {"causal": True},
    },
    "decoder": {
        "sublayer-order": {"order": ("cross_attn", "self_attn", "ffn")},
        "missing-sublayer": {"order": ("self_attn", "ffn")},
        "decoder-not-causal": {"self_offset": None},
        "causal-off-by-one-future": {"self_offset": 1},
        "causal-off-by-one-self": {"self_offset": -1},
        "cross-attention-causal": {"cross_causal": True},
        "cross-attention-self": {"cross_to_self": True},
    },
}
"""Known bugs of a layer's structure and masks -> the knobs of :func:`encoder` /
:func:`decoder` that reproduce them."""


def stack_bugs(
    run: Callable[..., Tensor], reading: Reading, stack: Stack, *, heads: bool = True
) -> dict[str, Tensor]:
    """The oracle's outputs under the known bugs of a stack, for diagnosis: the wrapping bugs,
    :data:`LAYER_BUGS` and, with ``heads``, the multi-head bugs. ``run(**knobs)`` is
    :func:`encoder` or :func:`decoder` on fixed inputs, in ``reading``."""
    bugs = {
        **wrap_bugs(run, reading),
        **{bug: run(**knobs) for bug, knobs in LAYER_BUGS[stack].items()},
    }
    return {**bugs, **multi_head_bugs(run)} if heads else bugs


def probe(
    clause: Check,
    env: Env,
    rng: torch.Generator,
    model: nn.Module,
    params: Mapping[str, Tensor],
    config: Config,
    stack: Stack,
) -> tuple[Tensor, Callable[..., Tensor]]:
    """One-position sequences through ``stack``: the model's output, and the oracle's as a
    function ``run(reading, **knobs)`` of the reading and of :func:`encoder` /
    :func:`decoder`'s knobs.

    With a single position (source and target) every attention weight is 1, whatever the scale,
    the softmax axis or a causal mask (unless it hides the position from itself): the output
    depends only on the projections, the FFN, the norms and how the sub-layers are wrapped. So a
    probe judges the wrapping (3.1/residual-norm) without being disturbed by most bugs of
    attention.
    """
    b, d = 3, config.d_model
    x = env.randn(b, 1, d, generator=rng)
    mask = torch.ones(b, 1, dtype=torch.bool, device=env.device)
    if stack == "encoder":
        actual = clause.require("encode")(model, x, mask)

        def run_encoder(reading: Reading = PAPER, **knobs: Any) -> Tensor:
            return encoder(x, params, config, mask, reading, **knobs)

        return actual, run_encoder
    memory = env.randn(b, 1, d, generator=rng)
    actual = clause.require("decode")(model, x, memory, mask)

    def run_decoder(reading: Reading = PAPER, **knobs: Any) -> Tensor:
        return decoder(x, memory, params, config, mask, reading, **knobs)

    return actual, run_decoder


def match_reading(
    actual: Tensor, run: Callable[..., Tensor], tol: Tolerance, **knobs: Any
) -> Reading | None:
    """The reading of :data:`READINGS` whose oracle output ``run(reading, **knobs)`` matches
    ``actual``, if one matches within ``tol``; ``None`` otherwise.

    The first reading, in the order of :data:`READINGS` (the paper's first), that matches to a
    tenth of the tolerance: then no later reading is computed. When none matches that closely,
    the first that matches about as well as the best one (within a factor 2): in low precision
    several epsilons can match, and rounding noise must not pick a later one over the first.
    """
    ratios = []
    for reading in READINGS:
        ratios.append(error_ratio(actual, run(reading, **knobs), tol))
        if ratios[-1] <= 0.1:
            return reading
    best = min(ratios)
    if best > 1.0:
        return None
    return next(r for r, ratio in zip(READINGS, ratios, strict=True) if ratio <= 2 * best)


def reading_of(
    clause: Check,
    env: Env,
    rng: torch.Generator,
    model: nn.Module,
    params: Mapping[str, Tensor],
    config: Config,
    stack: Stack,
) -> Reading:
    """The reading that ``model``'s ``stack`` follows, found with a :func:`probe`; the paper's
    when none fits (the clause that uses it then deviates, and 3.1/residual-norm says why)."""
    actual, run = probe(clause, env, rng, model, params, config, stack)
    return match_reading(actual, run, env.tol) or PAPER


def build_stacks(
    clause: Check, env: Env, rng: torch.Generator, config: Config = SMALL
) -> tuple[nn.Module, dict[str, Tensor]]:
    """:func:`build`, and deviate unless each stack whose parameters the adapter exposes has
    exactly ``config.n_layers`` layers (3.1/encoder-stack: N is configurable), so that a model
    that ignores N deviates instead of failing the oracle with a missing parameter."""
    model, params = build(clause, env, rng, config)
    for stack in ("encoder", "decoder"):
        found = list(layers(params, stack))
        clause.expect(
            not found or found == list(range(config.n_layers)),
            f"built with N={config.n_layers}, the model has {stack} layers {found}",
        )
    return model, params
