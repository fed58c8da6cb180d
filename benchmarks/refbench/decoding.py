"""The part ``decoding``: greedy decoding with the reference's key/value cache, without it, and
with torch.nn (which has none), every run producing exactly the requested number of tokens."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

import transformer as T

from .timing import measure
from .torch_nn import TorchNNTransformer, torch_nn_greedy
from .workloads import SIZES, Workload, make_batch


class NeverEOS(nn.Module):
    """An output projection whose end-of-sentence logit is ``-inf``: greedy decoding then runs
    for exactly ``max_len`` steps. Wraps (and keeps tied) the model's own projection."""

    def __init__(self, projection: nn.Module, eos_id: int) -> None:
        super().__init__()
        self.projection, self.eos_id = projection, eos_id

    def forward(self, hidden: Tensor) -> Tensor:
        logits = self.projection(hidden)
        logits[..., self.eos_id] = float("-inf")
        return logits


def _recorder(
    outputs: dict[str, Tensor],
) -> Callable[[str, Callable[[], Tensor]], Callable[[], object]]:
    """``record(name, fn)``: a call of ``fn`` that keeps its result in ``outputs[name]``."""

    def record(name: str, fn: Callable[[], Tensor]) -> Callable[[], object]:
        def call() -> object:
            outputs[name] = fn()
            return None

        return call

    return record


def bench_decoding(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Greedy decoding: the reference with and without its cache, and torch.nn (no cache)."""
    size = SIZES[args.decode_size]
    lengths = args.decode_lengths
    torch.manual_seed(0)
    ref = T.Transformer(size.config(max_len=max(lengths) + 1)).to(device).eval()
    # the model only calls its generator (hidden states to logits): NeverEOS can stand in
    ref.generator = NeverEOS(ref.generator, ref.config.eos_id)  # type: ignore[assignment]
    other = TorchNNTransformer(ref).eval()
    work = Workload(args.decode_batch, size.workload[device.type].src_len, 0)
    src = make_batch(ref.config, dataclasses.replace(work, tgt_len=1), device).src
    rows = []
    for length in lengths:
        outputs: dict[str, Tensor] = {}

        run = _recorder(outputs)
        fns = {
            "cached": run("cached", partial(T.greedy_decode, ref, src, length)),
            "recompute": run(
                "recompute", partial(T.greedy_decode, ref, src, length, use_cache=False)
            ),
        }
        if length <= args.torch_nn_decode_max:
            fns["torch.nn"] = run("torch.nn", partial(torch_nn_greedy, other, src, length))
        # the longest recomputation takes long: fewer rounds there
        repeats = args.decode_repeats if length <= 128 else max(1, args.decode_repeats // 3)
        timing = measure(fns, device, repeats=repeats, warmup=1 if length <= 128 else 0)
        if outputs["cached"].size(1) != length:  # pragma: no cover - NeverEOS guarantees it
            raise RuntimeError(f"decoding stopped early at {outputs['cached'].size(1)} tokens")
        row: dict[str, Any] = {
            "length": length,
            "seconds": {n: timing.median(n) for n in fns},
            "tokens_per_s": {n: args.decode_batch * length / timing.median(n) for n in fns},
            "cache_speedup": timing.ratio("cached", "recompute"),
            "cache_speedup_quartiles": timing.spread("cached", "recompute"),
            "same_tokens": bool(torch.equal(outputs["cached"], outputs["recompute"])),
            "rounds": timing.seconds,
        }
        if "torch.nn" in fns:
            row["cached_vs_torch_nn"] = timing.ratio("cached", "torch.nn")
            row["same_tokens_torch_nn"] = bool(torch.equal(outputs["cached"], outputs["torch.nn"]))
        rows.append(row)
    return {
        "size": size.name,
        "batch": args.decode_batch,
        "src_len": work.src_len,
        "rows": rows,
    }
