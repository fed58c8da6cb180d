"""The report: the environment a run was measured in, and the tables printed at its end."""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch


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
