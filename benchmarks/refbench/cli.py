"""Benchmark the reference Transformer against ``torch.nn.Transformer``, in one run.

The command line (``python benchmarks/bench.py --help``): its options, the parts it runs
(:data:`PARTS`), and the report it prints and writes as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from . import ROOT
from .decoding import bench_decoding
from .memory import CPU_MEMORY, CUDA_MEMORY
from .mfu import bench_mfu
from .models import Disagreement, bench_models
from .report import environment, render
from .suite import bench_suite
from .workloads import SIZES


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
