"""What the embedding layers add, what ``project`` returns, and positional tables kept apart
from ``.to()`` (3.4, 3.5)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from spec import oracle
from spec.adapter import declared
from spec.check import Check, Deviation, Env
from spec.diagnosis import explain
from spec.oracle import sub
from spec.tolerances import Tolerance, close, error_ratio, tolerance

from .models import SMALL
from .readings import READINGS


def as_outputs(clause: Check, logits: Tensor) -> Tensor:
    """The oracle's ``logits`` as the adapter's ``project`` (and ``forward``) return them: the
    logits, or their log-softmax where the adapter declares ``outputs = "log-probs"``."""
    return logits.log_softmax(-1) if declared(clause.adapter, "outputs") == "log-probs" else logits


def embedding_norm(params: Mapping[str, Tensor], which: str) -> dict[str, Tensor] | None:
    """The exposed LayerNorm on the ``which`` (``src`` / ``tgt``) stack's sum of embeddings and
    positional encoding, ``gamma`` and ``beta`` (variant ``embedding-norm`` of 3.5/added), or
    None."""
    norm = sub(params, f"{which}_embedding_norm")
    return norm if {"gamma", "beta"} <= norm.keys() else None


def normed(
    norm: Mapping[str, Tensor] | None, actual: Tensor, sums: Tensor, tol: Tolerance
) -> tuple[Callable[[Tensor], Tensor], float | None]:
    """What the embedding layers make of sums the oracle computes (sqrt(d_model) E + PE, or a
    bug's), and the LayerNorm epsilon the correct ``sums`` show: the sums themselves (and None)
    without a ``norm``; with one, LN(x) with its gain and bias and the epsilon of
    :data:`READINGS` (1e-5, 1e-6, 1e-12) that brings LN(x) closest to ``actual`` (so a bug's
    sums are normalised with the epsilon that fits them too)."""
    if norm is None:
        return (lambda x: x), None
    epsilons = dict.fromkeys(r.eps for r in READINGS)

    def fits(x: Tensor) -> tuple[Tensor, float]:
        outs = {e: oracle.layer_norm(x, norm["gamma"], norm["beta"], e) for e in epsilons}
        eps = min(outs, key=lambda e: error_ratio(actual, outs[e], tol))
        return outs[eps], eps

    return (lambda x: fits(x)[0]), fits(sums)[1]


def unmoved(model: nn.Module, env: Env) -> dict[str, Tensor]:
    """The floating-point tensors that ``model``'s modules keep as plain attributes (neither
    parameter nor buffer) in another dtype or on another device than ``env``'s: those that
    ``model.to(env.device, env.dtype)`` did not convert."""
    return {
        f"{prefix}.{name}".lstrip("."): t
        for prefix, module in model.named_modules()
        for name, t in vars(module).items()
        if isinstance(t, Tensor) and t.is_floating_point()
        and (t.dtype != env.dtype or t.device.type != env.device.type)
    }


def not_buffer(
    clause: Check, model: nn.Module, env: Env, d_model: int, added: Tensor | None = None
) -> None:
    """Deviate (``positions-not-buffer``) if ``model`` keeps a table ``[n, d_model]`` as a plain
    attribute that ``.to()`` left in another dtype or on another device (:func:`unmoved`);
    given ``added`` ``[B, L, d_model]`` (what the model adds to the embeddings), only if the
    table's first L rows are what it adds."""
    for name, t in unmoved(model, env).items():
        rows = t.detach().to("cpu", torch.float64)
        if t.dim() != 2 or t.shape[1] != d_model:
            continue
        if added is not None and (rows.shape[0] < added.shape[-2] or not close(
                added, rows[: added.shape[-2]].expand_as(added), tolerance("cpu", torch.float64))):
            continue
        clause.deviates(
            f"the positional table does not follow .to(): {name} is a plain attribute, not a "
            f"registered buffer ({t.dtype} on {t.device.type} in a model moved to {env.dtype} on "
            f"{env.device.type})", explain("positions-not-buffer"))


def embedded(
    clause: Check, method: str, model: nn.Module, ids: Tensor, env: Env,
    d_model: int = SMALL.d_model,
) -> Tensor:
    """``method`` (``embed_source`` / ``embed_target``) of ``ids`` on ``env``'s device. When the
    call fails (an output in another dtype, tensors on two devices) and the model keeps a table
    apart from ``.to()`` (:func:`not_buffer`), the deviation names it instead of the symptom."""
    try:
        return clause.require(method)(model, ids.to(env.device))
    except (Deviation, RuntimeError):
        not_buffer(clause, model, env, d_model)
        raise
