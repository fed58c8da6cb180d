"""What the gradient clause (practice/gradients) measures: a batch holding every token, the
gradient of each canonical parameter in its canonical layout, and the embedding rows that a
batch uses but that get no gradient."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from spec.adapter import Config
from spec.check import Check, Env
from spec.diagnosis import explain

from .batches import encoder_only, shifted

__all__ = ["canonical_gradients", "every_token", "frozen_rows", "named_rows", "padding_elsewhere"]


def every_token(
    clause: Check, env: Env, rng: torch.Generator, config: Config
) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
    """Source ids and mask, the decoder input (``None`` for an encoder-only model) and the
    target: three sequences, the first holding every token that is not special once, the
    others padded. An encoder-decoder's target is a source sequence then eos; an encoder-only
    model's, its source reversed."""
    special = (config.pad_id, config.bos_id, config.eos_id)
    real = torch.tensor([i for i in range(config.src_vocab) if i not in special])
    n = len(real)
    src = real[torch.randint(n, (3, n), generator=rng)]
    src[0] = real[torch.randperm(n, generator=rng)]
    src_mask = torch.arange(n) < torch.tensor([n, n - 3, 4]).unsqueeze(1)
    src = src.masked_fill(~src_mask, config.pad_id)
    if encoder_only(clause):
        target = src.flip(1)
        return src.to(env.device), src_mask.to(env.device), None, target.to(env.device)
    eos = torch.full((3, 1), config.pad_id)
    target = torch.cat([src, eos], 1)
    target[torch.arange(3), src_mask.sum(1)] = config.eos_id
    tgt_in = shifted(clause, target, config.bos_id)
    return (src.to(env.device), src_mask.to(env.device), tgt_in.to(env.device),
            target.to(env.device))


def canonical_gradients(clause: Check, model: nn.Module) -> dict[str, Tensor]:
    """The gradient of every canonical parameter, in the canonical layout: each parameter's
    gradient is put in its place (NaN for a frozen parameter, so that it never reads as a
    zero gradient) and read back through ``parameters``; then the weights are restored. Tied
    matrices read one and the same gradient, the sum of every use."""
    params = list(model.parameters())
    with torch.no_grad():
        saved = [p.detach().clone() for p in params]
        for p in params:
            none = torch.full_like(p, 0.0 if p.requires_grad else math.nan)
            p.copy_(none if p.grad is None else p.grad)
        grads = {n: t.detach().clone() for n, t in clause.require("parameters")(model).items()}
        for p, value in zip(params, saved, strict=True):
            p.copy_(value)
    return grads


def frozen_rows(grads: dict[str, Tensor], used: dict[str, Tensor]) -> dict[str, list[int]]:
    """Matrix name -> the token ids in ``used[name]`` whose row of ``grads[name]`` is all zero
    (``generator.W`` is ``[d_model, V]``: its rows are columns); names the adapter does not
    expose are skipped."""
    out = {}
    for name, ids in used.items():
        if name not in grads:
            continue
        g = grads[name].T if name == "generator.W" else grads[name]
        zero = sorted(i for i in set(ids.tolist()) if not bool((g[i] != 0).any()))
        if zero:
            out[name] = zero
    return out


def padding_elsewhere(frozen: dict[str, list[int]]) -> str | None:
    """``padding-id-hard-coded`` when the lookup treats exactly one real token as padding (its
    row alone gets no gradient, whatever the configured padding id): what ``nn.Embedding``'s
    ``padding_idx`` set to another id does."""
    ids = {i for rows in frozen.values() for i in rows}
    return explain("padding-id-hard-coded") if len(ids) == 1 else None


def named_rows(rows: dict[str, list[int]]) -> str:
    """``src_embedding rows (token ids) [1, 4]; generator.W ...`` for :func:`frozen_rows`."""
    return "; ".join(f"{name} rows (token ids) {ids}" for name, ids in rows.items())
