"""The part ``mfu``: model FLOPs utilisation of the reference's training step under bfloat16
autocast; the FLOPs of a step (:func:`train_step_flops`) and the devices' peak rates."""

from __future__ import annotations

import argparse
import dataclasses
import platform
from typing import Any

import torch

import transformer as T

from .memory import peak_step_memory
from .timing import measure
from .workloads import SIZES, Trainer, make_batch

PEAK_BF16: dict[str, float] = {
    # device name (as torch.cuda.get_device_name reports it) contains -> dense bf16 FLOP/s
    "H100 PCIe": 756e12,
    "H100 NVL": 835e12,
    "H200 NVL": 835e12,
    "H100": 989e12,  # SXM (the name reads "NVIDIA H100 80GB HBM3")
    "H200": 989e12,
    "GH200": 989e12,
    "A100": 312e12,
}
"""Peak dense (no sparsity) bfloat16 tensor-core rates from NVIDIA's data sheets. The first
key contained in the device name wins, so more specific names come first."""


def peak_bf16_flops(device_name: str) -> float | None:
    """The device's peak dense bfloat16 FLOP/s, or ``None`` if it is not in the table."""
    for key, value in PEAK_BF16.items():
        if key in device_name:
            return value
    return None


def train_step_flops(
    config: T.TransformerConfig, batch: int, src_len: int, tgt_len: int
) -> dict[str, float]:
    r"""Model FLOPs of one training step (forward and backward) on a full batch (no padding).

    Matrix products only, at 2 FLOPs per multiply-add, and backward = 2 x forward, so a step
    is 3 x the forward pass. With d = d_model, N layers, S = ``src_len``, T = ``tgt_len``,
    V the target vocabulary, per sentence pair, the forward pass does:

    * ``linear`` (the weight matrices, 2 FLOPs per weight per token that passes through it):
      encoder ``2 N S (4 d^2 + 2 d d_ff)``; decoder ``2 N T (4 d^2 + 2 d^2 + 2 d d_ff)``
      (self-attention, cross-attention's W^Q and W^O, FFN) plus ``2 N S (2 d^2)`` (its W^K
      and W^V applied to the encoder output); output projection ``2 T d V``. That is
      "2 x parameters x tokens" without the embedding look-ups.
    * ``attention`` (Q K^T and the weights times V, 2 d multiply-adds per query-key pair
      over all heads): ``4 d N (S^2 + T(T+1)/2 + T S)``: the decoder's causal
      self-attention counts only the pairs it may attend (T(T+1)/2).
    * ``attention_full`` counts the causal square in full (``T^2``), as FLOP counters that see
      a dense attention do.

    ``total`` = 3 x (``linear`` + ``attention``), times ``batch``.
    """
    d, n, f, v = config.d_model, config.n_layers, config.d_ff, config.tgt_vocab
    s, t = src_len, tgt_len
    linear = 2 * n * s * (4 * d * d + 2 * d * f)
    linear += 2 * n * t * (6 * d * d + 2 * d * f) + 2 * n * s * 2 * d * d
    linear += 2 * t * d * v
    attention = 4 * d * n * (s * s + t * (t + 1) / 2 + t * s)
    attention_full = 4 * d * n * (s * s + t * t + t * s)
    forward = {"linear": linear, "attention": attention, "attention_full": attention_full}
    out = {k: 3.0 * batch * x for k, x in forward.items()}
    out["total"] = out["linear"] + out["attention"]
    return out


def bench_mfu(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """MFU of the reference's training step under bfloat16 autocast, at ``--mfu-sizes``."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    peak = args.peak_tflops * 1e12 if args.peak_tflops else None
    why = ""
    if peak is None and device.type == "cuda":
        peak = peak_bf16_flops(name)
        if peak is None:
            why = f"peak bf16 rate of {name!r} unknown: pass --peak-tflops"
    elif peak is None:
        why = "MFU is reported on CUDA (or with --peak-tflops)"
    rows = []
    for size_name in args.mfu_sizes:
        size = SIZES[size_name]
        work = size.workload[device.type]
        torch.manual_seed(0)
        model = T.Transformer(size.config()).to(device)
        batch = make_batch(model.config, work, device, padding=0.0)
        step = Trainer(model, batch, torch.bfloat16, device)
        timing = measure({"step": step}, device, repeats=args.repeats, inner=args.inner, warmup=2)
        seconds = timing.median("step")
        flops = train_step_flops(model.config, work.batch, work.src_len, work.tgt_len)
        achieved = flops["total"] / seconds
        memory = peak_step_memory(step, model, step.optimizer, device)
        rows.append(
            {
                "size": size_name,
                "workload": dataclasses.asdict(work),
                "seconds": seconds,
                "tokens_per_s": batch.tokens / seconds,
                "flops_per_step": flops,
                "achieved_tflops": achieved / 1e12,
                "mfu": achieved / peak if peak else None,
                "peak_memory_bytes": memory,
            }
        )
        del model, step
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {"device": name, "peak_flops": peak, "why_no_mfu": why, "rows": rows}
