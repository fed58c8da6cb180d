"""Benchmark the reference Transformer against ``torch.nn.Transformer``, in one run.

``python benchmarks/bench.py`` (or ``nox -s bench``) prints tables and writes JSON
(``build/bench/bench.json``). What it measures, on one device (``--device cpu|cuda``):

* **Training step** (forward, label-smoothed loss, backward, Adam step, learning-rate schedule)
  and **inference** (the full forward pass in evaluation mode under ``torch.inference_mode``)
  of the reference and of ``torch.nn.Transformer``, in tokens per second (source plus target
  tokens, padding excluded), at each size of ``--sizes``. The torch.nn model is what a user
  would build instead: ``nn.Transformer(batch_first=True)``, post-norm, ReLU, the same d_model,
  h, d_ff, N and dropout, with encoder and decoder stacks built without the final LayerNorm the
  paper does not have, wrapped with the reference's own embeddings, positional encoding and
  output projection (copies of them). The reference's weights are copied into it; before
  anything is timed both models run the same batch and the benchmark refuses to report if
  their logits, loss or gradients differ beyond a tolerance. torch.nn's attention projections
  have biases (it cannot drop them without also dropping the FFN and LayerNorm biases): they
  are set to zero. Both run in the same process, with the same threads and inputs, after
  warm-up, alternating, and the ratio is the median of the per-round ratios.
* **Peak memory** of the training step, beside its time (what is measured is printed).
* **Greedy decoding** with the reference's key/value cache and without it (recomputing the
  whole prefix at each step), and torch.nn's decoding (it has no cache: recomputation), at
  output lengths ``--decode-lengths``; the end-of-sentence token is never chosen, so every
  run produces exactly that many tokens.
* **The conformance suite's wall time** (``python -m spec -q -p no:cacheprovider`` in a
  subprocess).
* On CUDA, **model FLOPs utilisation** (MFU) of a training step of ``--mfu-sizes`` (base and
  big) under ``torch.autocast`` bfloat16: :func:`train_step_flops` / time / the device's peak
  dense bfloat16 rate (:data:`PEAK_BF16`, or ``--peak-tflops``).

``--quick`` runs tiny models for a few seconds (the project's tests use it).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

import transformer as T  # noqa: E402

# -- sizes ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Workload:
    """One batch: ``batch`` sentence pairs, up to ``src_len`` source and ``tgt_len`` target
    tokens each."""

    batch: int
    src_len: int
    tgt_len: int


@dataclasses.dataclass(frozen=True)
class Size:
    """A model shape and the batch it is measured with on each device type."""

    name: str
    d_model: int
    h: int
    d_ff: int
    n_layers: int
    vocab: int
    dropout: float
    workload: dict[str, Workload]

    def config(self, max_len: int = 1024) -> T.TransformerConfig:
        return T.TransformerConfig(
            src_vocab=self.vocab,
            tgt_vocab=self.vocab,
            d_model=self.d_model,
            h=self.h,
            d_ff=self.d_ff,
            n_layers=self.n_layers,
            dropout=self.dropout,
            share_vocab=True,
            max_len=max_len,
        )


SIZES: dict[str, Size] = {
    s.name: s
    for s in (
        # for tests and --quick: seconds on any machine
        Size("tiny", 32, 4, 64, 1, 64, 0.1, {"cpu": Workload(2, 8, 8), "cuda": Workload(2, 8, 8)}),
        # a small translation model: 8000-token shared vocabulary
        Size(
            "small",
            256,
            4,
            1024,
            2,
            8000,
            0.1,
            {"cpu": Workload(16, 32, 32), "cuda": Workload(64, 128, 128)},
        ),
        # the paper's base model with its 37000-token shared vocabulary (Table 3, 5.1)
        Size(
            "base",
            512,
            8,
            2048,
            6,
            37000,
            0.1,
            {"cpu": Workload(8, 32, 32), "cuda": Workload(128, 128, 128)},
        ),
        # the paper's big model (Table 3): CUDA only in practice
        Size(
            "big",
            1024,
            16,
            4096,
            6,
            37000,
            0.3,
            {"cpu": Workload(2, 16, 16), "cuda": Workload(64, 128, 128)},
        ),
    )
}

# -- the torch.nn model -----------------------------------------------------------------------


class TorchNNTransformer(nn.Module):
    """``torch.nn.Transformer`` with the reference's embeddings, positional encoding and output
    projection (copies), and the reference's weights.

    The encoder and decoder stacks are ``nn.TransformerEncoder`` / ``nn.TransformerDecoder``
    built with ``norm=None``: the paper has no LayerNorm after the stacks (torch.nn's default
    adds one). Masks are passed the way torch.nn's documentation says: ``tgt_mask`` from
    ``generate_square_subsequent_mask`` with ``tgt_is_causal=True``, and key padding masks.
    """

    def __init__(self, reference: T.Transformer) -> None:
        super().__init__()
        c = self.config = reference.config
        shared = copy.deepcopy(
            nn.ModuleDict(
                {
                    "src_embed": reference.src_embed,
                    "tgt_embed": reference.tgt_embed,
                    "positions": reference.positions,
                    "generator": reference.generator,
                }
            )
        )  # one deepcopy, so that tied weights stay tied
        self.src_embed, self.tgt_embed = shared["src_embed"], shared["tgt_embed"]
        self.positions, self.generator = shared["positions"], shared["generator"]
        layer: dict[str, Any] = {
            "d_model": c.d_model,
            "nhead": c.h,
            "dim_feedforward": c.d_ff,
            "dropout": c.dropout,
            "activation": "relu",
            "layer_norm_eps": c.norm_eps,
            "batch_first": True,
            "norm_first": False,
        }
        encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(**layer), c.n_layers, norm=None, enable_nested_tensor=True
        )
        decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(**layer), c.n_layers, norm=None)
        self.transformer = nn.Transformer(
            d_model=c.d_model,
            nhead=c.h,
            dim_feedforward=c.d_ff,
            dropout=c.dropout,
            custom_encoder=encoder,
            custom_decoder=decoder,
            batch_first=True,
        )
        self.to(next(reference.parameters()).device)
        self.load_reference(reference)

    @torch.no_grad()
    def load_reference(self, reference: T.Transformer) -> None:
        """Copy the reference's encoder and decoder weights (attention biases set to zero)."""

        def attention(mine: T.MultiHeadAttention, theirs: nn.MultiheadAttention) -> None:
            assert theirs.in_proj_weight is not None and theirs.in_proj_bias is not None
            theirs.in_proj_weight.copy_(mine.in_proj.weight)  # rows W^Q, W^K, W^V in both
            theirs.in_proj_bias.zero_()
            theirs.out_proj.weight.copy_(mine.out_proj.weight)
            assert theirs.out_proj.bias is not None
            theirs.out_proj.bias.zero_()

        def ffn_and_norms(mine: nn.Module, theirs: nn.Module, norms: int) -> None:
            theirs.linear1.load_state_dict(mine.ffn.w_1.state_dict())
            theirs.linear2.load_state_dict(mine.ffn.w_2.state_dict())
            for k in range(1, norms + 1):
                getattr(theirs, f"norm{k}").load_state_dict(
                    getattr(mine, f"residual_{k}").norm.state_dict()
                )

        for mine, theirs in zip(
            reference.encoder.layers, self.transformer.encoder.layers, strict=True
        ):
            attention(mine.self_attn, theirs.self_attn)
            ffn_and_norms(mine, theirs, 2)
        for mine, theirs in zip(
            reference.decoder.layers, self.transformer.decoder.layers, strict=True
        ):
            attention(mine.self_attn, theirs.self_attn)
            attention(mine.cross_attn, theirs.multihead_attn)
            ffn_and_norms(mine, theirs, 3)

    def encode(self, src: Tensor) -> tuple[Tensor, Tensor]:
        """The encoder output and the key padding mask (``True`` = padding, torch.nn's)."""
        padding = src == self.config.pad_id
        x = self.positions(self.src_embed(src))
        return self.transformer.encoder(x, src_key_padding_mask=padding), padding

    def decode(self, tgt_in: Tensor, memory: Tensor, padding: Tensor) -> Tensor:
        y = self.positions(self.tgt_embed(tgt_in))
        causal = nn.Transformer.generate_square_subsequent_mask(
            tgt_in.size(1), device=y.device, dtype=y.dtype
        )
        return self.transformer.decoder(
            y, memory, tgt_mask=causal, memory_key_padding_mask=padding, tgt_is_causal=True
        )

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        memory, padding = self.encode(src)
        return self.generator(self.decode(tgt_in, memory, padding))


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


@torch.no_grad()
def torch_nn_greedy(model: TorchNNTransformer, src: Tensor, max_len: int) -> Tensor:
    """Greedy decoding with torch.nn: no key/value cache, so each step recomputes the prefix
    (the decoder runs over all tokens so far; only the last position is projected)."""
    c = model.config
    memory, padding = model.encode(src)
    tokens = torch.full((src.size(0), 1), c.bos_id, dtype=torch.long, device=src.device)
    for _ in range(max_len):
        hidden = model.decode(tokens, memory, padding)[:, -1]
        tokens = torch.cat([tokens, model.generator(hidden).argmax(-1, keepdim=True)], dim=1)
    return tokens[:, 1:]


# -- inputs, agreement --------------------------------------------------------------------------


@dataclasses.dataclass
class Batch:
    src: Tensor
    tgt: Tensor
    tgt_in: Tensor
    pad_id: int

    @property
    def tokens(self) -> int:
        """Source plus target tokens, padding excluded."""
        return int((self.src != self.pad_id).sum()) + int((self.tgt != self.pad_id).sum())


def make_batch(
    config: T.TransformerConfig, work: Workload, device: torch.device, *, padding: float = 0.25
) -> Batch:
    """Random sentence pairs whose lengths spread evenly over ``1 - padding`` .. 100% of the
    maximum (the rest is padding), as in a batch of sentences of similar length."""
    g = torch.Generator().manual_seed(1234)
    low = 3  # after pad, bos, eos
    src = torch.randint(low, config.src_vocab, (work.batch, work.src_len), generator=g)
    tgt = torch.randint(low, config.tgt_vocab, (work.batch, work.tgt_len), generator=g)
    if padding:
        for i in range(work.batch):
            share = 1.0 - padding + padding * (i + 1) / work.batch
            src[i, max(1, round(work.src_len * share)) :] = config.pad_id
            tgt[i, max(1, round(work.tgt_len * share)) :] = config.pad_id
    tgt_in = T.shift_right(tgt, config.bos_id)
    return Batch(src.to(device), tgt.to(device), tgt_in.to(device), config.pad_id)


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
    grads = []
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


# -- timing -------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclasses.dataclass
class Timing:
    """Seconds per call of each implementation, one entry per round."""

    seconds: dict[str, list[float]]

    def median(self, name: str) -> float:
        return statistics.median(self.seconds[name])

    def ratio(self, fast: str, slow: str) -> float:
        """Median over rounds of time(slow) / time(fast): how many times faster ``fast`` is
        (for throughput: throughput(fast) / throughput(slow))."""
        return statistics.median(self.ratios(fast, slow))

    def ratios(self, fast: str, slow: str) -> list[float]:
        pairs = zip(self.seconds[fast], self.seconds[slow], strict=True)
        return [s / f for f, s in pairs]

    def spread(self, fast: str, slow: str) -> tuple[float, float]:
        """The quartiles of the per-round ratios (the middle half of the rounds)."""
        r = sorted(self.ratios(fast, slow))
        if len(r) < 2:
            return r[0], r[0]
        q = statistics.quantiles(r, n=4, method="inclusive")
        return q[0], q[2]


def measure(
    fns: dict[str, Callable[[], object]],
    device: torch.device,
    *,
    repeats: int,
    inner: int = 1,
    warmup: int = 1,
) -> Timing:
    """Time each function ``inner`` times per round, ``repeats`` rounds, alternating the order
    of the implementations from round to round, after ``warmup`` calls of each."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    synchronize(device)
    seconds: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            synchronize(device)
            start = time.perf_counter()
            for _ in range(inner):
                fns[name]()
            synchronize(device)
            seconds[name].append((time.perf_counter() - start) / inner)
    return Timing(seconds)


# -- peak memory --------------------------------------------------------------------------------


def _resident_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the parameters, buffers, gradients and optimizer state (each storage once)."""
    seen: set[int] = set()
    total = 0
    tensors: list[Tensor] = [*model.parameters(), *model.buffers()]
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    for state in optimizer.state.values():
        tensors += [t for t in state.values() if isinstance(t, Tensor)]
    for t in tensors:
        storage = t.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total


CPU_MEMORY = (
    "CPU: bytes of live tensors, from torch.profiler's allocation events: the parameters, "
    "buffers and Adam state live before the step, plus the largest increase during it"
)
CUDA_MEMORY = "CUDA: torch.cuda.max_memory_allocated() over one step"


def peak_step_memory(
    step: Callable[[], object],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
) -> int | None:
    """Peak bytes of tensor memory during one call of ``step`` (see :data:`CPU_MEMORY` and
    :data:`CUDA_MEMORY`); ``None`` where it cannot be measured."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device))
    try:
        from torch._C._profiler import _EventType
        from torch.profiler import ProfilerActivity, profile
    except ImportError:  # pragma: no cover - private profiler API moved
        return None
    before = _resident_bytes(model, optimizer)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    results = prof.profiler.kineto_results if prof.profiler is not None else None
    if results is None:  # pragma: no cover
        return None
    peak = 0
    stack = list(results.experimental_event_tree())
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.tag == _EventType.Allocation:
            peak = max(peak, int(node.extra_fields.total_allocated))
    return before + peak


# -- the benchmarks -----------------------------------------------------------------------------


def autocast(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager[Any]:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


class Trainer:
    """One training step of a model: forward, label-smoothed loss, backward, Adam (the
    paper's settings) and the Eq. 3 learning-rate schedule; gradients are freed after it."""

    def __init__(
        self, model: nn.Module, batch: Batch, amp: torch.dtype | None, device: torch.device
    ) -> None:
        c: T.TransformerConfig = model.config  # type: ignore[assignment]
        self.model, self.batch, self.amp, self.device = model, batch, amp, device
        self.loss = T.LabelSmoothingLoss(c.tgt_vocab, c.pad_id, c.label_smoothing)
        self.optimizer = T.make_optimizer(model.parameters())
        self.scheduler = T.noam_scheduler(self.optimizer, c.d_model)

    def __call__(self) -> None:
        self.model.train()
        b = self.batch
        with autocast(self.device, self.amp):
            logits = self.model(b.src, b.tgt_in)
        loss = self.loss(logits, b.tgt)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)


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
    ref.generator = NeverEOS(ref.generator, ref.config.eos_id)
    other = TorchNNTransformer(ref).eval()
    work = Workload(args.decode_batch, size.workload[device.type].src_len, 0)
    src = make_batch(ref.config, dataclasses.replace(work, tgt_len=1), device).src
    rows = []
    for length in lengths:
        outputs: dict[str, Tensor] = {}

        run = _recorder(outputs)
        fns = {
            "cached": run("cached", lambda n=length: T.greedy_decode(ref, src, n)),
            "recompute": run(
                "recompute", lambda n=length: T.greedy_decode(ref, src, n, use_cache=False)
            ),
        }
        if length <= args.torch_nn_decode_max:
            fns["torch.nn"] = run("torch.nn", lambda n=length: torch_nn_greedy(other, src, n))
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


def bench_suite(args: argparse.Namespace) -> dict[str, Any]:
    """Wall time of ``python -m spec -q -p no:cacheprovider`` (the conformance suite against
    the reference, on CPU, plus the CUDA parametrisations where a GPU is present)."""
    command = [sys.executable, "-m", "spec", "-q", "-p", "no:cacheprovider"]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    lines = [ln for ln in done.stdout.splitlines() if ln.strip()]
    return {
        "command": " ".join(["python", *command[1:]]),
        "seconds": seconds,
        "returncode": done.returncode,
        "summary": lines[-1] if lines else "",
    }


# -- model FLOPs utilisation ----------------------------------------------------------------


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


# -- report -------------------------------------------------------------------------------------


def environment(device: torch.device, threads: int) -> dict[str, Any]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        with contextlib.suppress(OSError):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device.type,
        "device_name": name,
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32 if device.type == "cuda" else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _mib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:,.0f} MiB"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool = False) -> str:
    if markdown:
        lines = [header, ["---"] * len(header), *rows]
        return "\n" + "\n".join("| " + " | ".join(map(str, r)) + " |" for r in lines)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    line = "  ".join(f"{h:<{w}}" for h, w in zip(header, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(f"{x:>{w}}" for x, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def render(result: dict[str, Any], markdown: bool = False) -> str:
    """The tables printed at the end of a run (``markdown``: as Markdown tables)."""
    env = result["environment"]
    out = [
        f"{env['date']}  {env['device']} ({env['device_name']}), {env['threads']} threads, "
        f"torch {env['torch']}",
        "",
    ]
    models = result.get("models", [])
    for kind, title in (
        ("training", "Training step (forward, loss, backward, Adam)"),
        ("inference", "Inference (forward, eval mode, inference_mode)"),
    ):
        if not models:
            break
        rows = []
        for m in models:
            w, sec = m["size"]["workload"], m[kind]
            row = [
                m["size"]["name"],
                f"{w['batch']}x{w['src_len']}+{w['tgt_len']}",
                f"{sec['tokens_per_s']['reference']:,.0f}",
                f"{sec['tokens_per_s']['torch.nn']:,.0f}",
                "{:.2f} ({:.2f}-{:.2f})".format(sec["ratio"], *sec["ratio_quartiles"]),
            ]
            if kind == "training":
                mem = sec["peak_memory_bytes"]
                row += [_mib(mem["reference"]), _mib(mem["torch.nn"])]
            rows.append(row)
        header = ["size", "batch", "reference tok/s", "torch.nn tok/s", "ref/torch.nn (quartiles)"]
        if kind == "training":
            header += ["peak mem ref", "peak mem torch.nn"]
        out += [
            f"{title}, tokens/s (source + target, padding excluded)",
            _table(header, rows, markdown),
            "",
        ]
    if models:
        out += [f"peak memory: {result['memory_measure']}", ""]
    dec = result.get("decoding")
    if dec:
        has_nn = any("torch.nn" in r["seconds"] for r in dec["rows"])
        header = ["output tokens", "cached s", "recompute s", "cache speedup"]
        if has_nn:
            header += ["torch.nn s", "cached vs torch.nn"]
        rows = []
        for r in dec["rows"]:
            row = [
                str(r["length"]),
                f"{r['seconds']['cached']:.3f}",
                f"{r['seconds']['recompute']:.3f}",
                f"{r['cache_speedup']:.1f}x",
            ]
            if "torch.nn" in r["seconds"]:
                row += [f"{r['seconds']['torch.nn']:.3f}", f"{r['cached_vs_torch_nn']:.1f}x"]
            elif has_nn:
                row += ["not run", "-"]
            rows.append(row)
        out += [
            f"Greedy decoding, {dec['size']} model, batch {dec['batch']}, source length "
            f"{dec['src_len']} (seconds per batch)",
            _table(header, rows, markdown),
            "",
        ]
    suite = result.get("suite")
    if suite:
        out += [
            f"Conformance suite: {suite['seconds']:.1f} s wall ({suite['command']}; "
            f"exit {suite['returncode']}: {suite['summary']})",
            "",
        ]
    mfu = result.get("mfu")
    if mfu and mfu["rows"]:
        rows = [
            [
                r["size"],
                "{batch}x{src_len}+{tgt_len}".format(**r["workload"]),
                f"{r['seconds'] * 1e3:.1f}",
                f"{r['tokens_per_s']:,.0f}",
                f"{r['achieved_tflops']:.1f}",
                "n/a" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%",
                _mib(r["peak_memory_bytes"]),
            ]
            for r in mfu["rows"]
        ]
        header = ["size", "batch", "ms/step", "tok/s", "TFLOP/s", "MFU", "peak mem"]
        peak = "unknown" if mfu["peak_flops"] is None else f"{mfu['peak_flops'] / 1e12:g} TFLOP/s"
        out += [
            f"Model FLOPs utilisation, reference training step, bf16 autocast ({mfu['device']}, "
            f"peak {peak})",
            _table(header, rows, markdown),
        ]
        if mfu["why_no_mfu"]:
            out.append(f"MFU n/a: {mfu['why_no_mfu']}")
        out.append("")
    return "\n".join(out)


# -- command line -------------------------------------------------------------------------------


def _names(text: str) -> list[str]:
    names = [s for s in text.split(",") if s]
    unknown = [s for s in names if s not in SIZES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown sizes {unknown}; known: {sorted(SIZES)}")
    return names


def _ints(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s]


PARTS = ("models", "decoding", "suite", "mfu")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--sizes", type=_names, default=None, help="default: small,base")
    p.add_argument("--mfu-sizes", type=_names, default=None, help="default: base,big on CUDA")
    p.add_argument("--decode-size", choices=sorted(SIZES), default=None, help="default: small")
    p.add_argument("--decode-lengths", type=_ints, default=None, help="default: 32,128,512")
    p.add_argument("--decode-batch", type=int, default=None, help="default: 8 (CPU), 32 (CUDA)")
    p.add_argument(
        "--torch-nn-decode-max",
        type=int,
        default=128,
        help="decode with torch.nn up to this length (it recomputes: slow; default 128)",
    )
    p.add_argument("--repeats", type=int, default=None, help="rounds per measurement (default 15)")
    p.add_argument(
        "--decode-repeats",
        type=int,
        default=None,
        help="rounds per decoding length (default 7; a third of them beyond 128 tokens)",
    )
    p.add_argument("--inner", type=int, default=1, help="calls per round")
    p.add_argument("--warmup", type=int, default=1, help="calls before timing")
    p.add_argument("--threads", type=int, default=None, help="torch threads (CPU)")
    p.add_argument(
        "--autocast",
        choices=["none", "bf16"],
        default=None,
        help="autocast of the model comparison (default: none on CPU, bf16 on CUDA)",
    )
    p.add_argument(
        "--dropout", type=float, default=None, help="override the sizes' dropout (paper: 0.1)"
    )
    p.add_argument(
        "--padding",
        type=float,
        default=0.25,
        help="sentence lengths spread over (1 - PADDING) .. 100%% of the batch's (default 0.25)",
    )
    p.add_argument("--tolerance", type=float, default=None, help="agreement check (relative)")
    p.add_argument("--peak-tflops", type=float, default=None, help="peak bf16 rate for MFU")
    p.add_argument("--skip", type=lambda s: s.split(","), default=[], help=f"of {PARTS}")
    p.add_argument("--quick", action="store_true", help="tiny models, a few seconds")
    p.add_argument("--json", type=Path, default=ROOT / "build" / "bench" / "bench.json")
    p.add_argument("--markdown", type=Path, default=None, help="also write the tables as Markdown")
    args = p.parse_args(argv)
    cuda = args.device == "cuda"
    unknown = [s for s in args.skip if s not in PARTS]
    if unknown:
        p.error(f"--skip: unknown parts {unknown}; known: {PARTS}")
    if args.quick:
        defaults: dict[str, Any] = {
            "sizes": ["tiny"],
            "mfu_sizes": ["tiny"] if cuda else [],
            "decode_size": "tiny",
            "decode_lengths": [4, 8],
            "decode_batch": 2,
            "repeats": 2,
            "decode_repeats": 2,
        }
    else:
        defaults = {
            "sizes": ["small", "base"],
            "mfu_sizes": ["base", "big"] if cuda else [],
            "decode_size": "small",
            "decode_lengths": [32, 128, 512],
            "decode_batch": 32 if cuda else 8,
            "repeats": 15,
            "decode_repeats": 7,
        }
    defaults["autocast"] = "bf16" if cuda else "none"
    defaults["tolerance"] = 1e-3 if cuda else 1e-4
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.peak_tflops and not args.mfu_sizes:
        args.mfu_sizes = ["tiny"] if args.quick else ["base", "big"]
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch.cuda.is_available() is False")
    if args.threads:
        torch.set_num_threads(args.threads)
    result: dict[str, Any] = {
        "environment": environment(device, torch.get_num_threads()),
        "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "memory_measure": CUDA_MEMORY if device.type == "cuda" else CPU_MEMORY,
    }
    if "models" not in args.skip:
        result["models"] = []
        for name in args.sizes:
            print(f"measuring training and inference at size {name} ...", flush=True)
            result["models"].append(bench_models(SIZES[name], args, device))
    if "decoding" not in args.skip and args.decode_lengths:
        print("measuring greedy decoding ...", flush=True)
        result["decoding"] = bench_decoding(args, device)
    if "mfu" not in args.skip and args.mfu_sizes:
        print("measuring model FLOPs utilisation ...", flush=True)
        result["mfu"] = bench_mfu(args, device)
    if "suite" not in args.skip:
        print("timing the conformance suite ...", flush=True)
        result["suite"] = bench_suite(args)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with warnings.catch_warnings():
            # torch.nn's encoder fast path packs padded batches into nested tensors, and warns
            warnings.filterwarnings("ignore", message="The PyTorch API of nested tensors")
            result = run(args)
    except Disagreement as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print()
    print(render(result))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"results written to {args.json}")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(render(result, markdown=True), encoding="utf-8")
        print(f"Markdown tables written to {args.markdown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
