"""The part ``models``: training step and inference, the reference against torch.nn, at one
size, after checking that both models compute the same function (:func:`check_agreement`)."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

import transformer as T

from .memory import peak_step_memory
from .timing import Timing, measure
from .torch_nn import TorchNNTransformer
from .workloads import Batch, Size, Trainer, autocast, make_batch


class Disagreement(RuntimeError):
    """The two models do not compute the same function: nothing is reported."""


def check_agreement(
    ref: T.Transformer, other: TorchNNTransformer, batch: Batch, tol: float
) -> dict[str, float]:
    """Run both models (evaluation mode, so no dropout) on ``batch``: logits without autograd
    (torch.nn's inference fast path), and loss and gradients with it (its training path).
    Raise :class:`Disagreement` if any differs by more than ``tol`` (relative to the largest
    value). Returns the relative differences."""
    ref.eval()
    other.eval()
    with torch.no_grad():
        a, b = ref(batch.src, batch.tgt_in), other(batch.src, batch.tgt_in)
    errors = {"logits (no autograd)": _relative(a, b)}
    loss = T.LabelSmoothingLoss(ref.config.tgt_vocab, ref.config.pad_id, 0.1)
    grads: list[tuple[Tensor, Any]] = []  # gradients found by attribute name in both models
    for model in (ref, other):
        model.zero_grad(set_to_none=True)
        value = loss(model(batch.src, batch.tgt_in), batch.tgt)
        value.backward()
        grads.append((value.detach(), model.tgt_embed.weight.grad))
    (la, ga), (lb, gb) = grads
    assert ga is not None and gb is not None
    errors["loss"] = _relative(la, lb)
    errors["embedding gradient"] = _relative(ga, gb)
    for model in (ref, other):
        model.zero_grad(set_to_none=True)
    bad = {k: v for k, v in errors.items() if not v <= tol}
    if bad:
        raise Disagreement(
            "the reference and torch.nn models disagree: "
            + ", ".join(f"{k} differ by {v:.3g} (tolerance {tol:g})" for k, v in bad.items())
            + "; refusing to report timings of models that do not compute the same function"
        )
    return errors


def _relative(a: Tensor, b: Tensor) -> float:
    scale = max(float(a.abs().max()), float(b.abs().max()), 1e-30)
    return float((a.float() - b.float()).abs().max()) / scale


def build_pair(size: Size, device: torch.device) -> tuple[T.Transformer, TorchNNTransformer]:
    torch.manual_seed(0)
    ref = T.Transformer(size.config()).to(device)
    return ref, TorchNNTransformer(ref)


def bench_models(size: Size, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Training step and inference, reference against torch.nn, at one size."""
    if args.dropout is not None:
        size = dataclasses.replace(size, dropout=args.dropout)
    work = size.workload[device.type]
    ref, other = build_pair(size, device)
    batch = make_batch(ref.config, work, device, padding=args.padding)
    agreement = check_agreement(ref, other, batch, args.tolerance)
    amp = torch.bfloat16 if args.autocast == "bf16" else None
    models = {"reference": ref, "torch.nn": other}

    def infer(model: nn.Module) -> Callable[[], object]:
        def run() -> object:
            model.eval()
            with torch.inference_mode(), autocast(device, amp):
                return model(batch.src, batch.tgt_in)

        return run

    inference = measure(
        {name: infer(m) for name, m in models.items()},
        device,
        repeats=args.repeats,
        inner=args.inner,
        warmup=args.warmup,
    )
    trainers = {name: Trainer(m, batch, amp, device) for name, m in models.items()}
    training = measure(
        dict(trainers.items()), device, repeats=args.repeats, inner=args.inner, warmup=args.warmup
    )
    memory = {
        name: peak_step_memory(t, t.model, t.optimizer, device) for name, t in trainers.items()
    }
    tokens = batch.tokens

    def section(timing: Timing) -> dict[str, Any]:
        return {
            "seconds": {n: timing.median(n) for n in models},
            "tokens_per_s": {n: tokens / timing.median(n) for n in models},
            "ratio": timing.ratio("reference", "torch.nn"),
            "ratio_quartiles": timing.spread("reference", "torch.nn"),
            "rounds": timing.seconds,
        }

    return {
        "size": dataclasses.asdict(size) | {"workload": dataclasses.asdict(work)},
        "parameters": sum(p.numel() for p in ref.parameters()),
        "tokens_per_batch": tokens,
        "agreement": agreement,
        "training": section(training) | {"peak_memory_bytes": memory},
        "inference": section(inference),
    }
