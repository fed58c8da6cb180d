"""Section 5, training: label smoothing (5.4) and the learning-rate schedule (5.3) (checked
by :mod:`spec.suite.test_5_training`).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ._common import _f64

__all__ = [
    "Spread",
    "label_smoothed_loss",
    "noam_lr",
    "smoothed_targets",
]


Spread = Literal["excluding-true-and-pad", "excluding-true", "all"]


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
