"""Toy tasks (copy, reverse) and a small trainer, run as ``transformer-toy`` or ``python -m transformer.toy``.

The trainer uses the paper's recipe at toy scale: label-smoothed loss (smoothing 0 by default,
so that the loss can reach zero), Adam with the paper's betas and eps, and the Eq. 3 schedule.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections.abc import Sequence

import torch
from tqdm import tqdm

from .checkpoint import load_checkpoint, save_checkpoint
from .config import TransformerConfig
from .decoding import greedy_decode
from .model import Transformer, shift_right
from .training import LabelSmoothingLoss, make_optimizer, noam_scheduler

TASKS = ("copy", "reverse")
SYMBOLS = 10  # tokens 3 .. 12; 0, 1, 2 are pad, bos, eos


def toy_config(**overrides: object) -> TransformerConfig:
    """A small model for the toy tasks (trains in seconds on two CPU cores)."""
    values: dict[str, object] = {
        "src_vocab": SYMBOLS + 3,
        "tgt_vocab": SYMBOLS + 3,
        "share_vocab": True,
        "d_model": 64,
        "h": 4,
        "d_ff": 128,
        "n_layers": 2,
        "dropout": 0.0,
        "label_smoothing": 0.0,
        "max_len": 64,
    }
    return TransformerConfig.from_dict({**values, **overrides})


def make_dataset(
    task: str, n: int, min_len: int = 3, max_len: int = 8, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` examples of ``task``: padded sources ``[n, max_len]`` and targets ending in ``eos``."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {TASKS}")
    g = torch.Generator().manual_seed(seed)
    src = torch.zeros(n, max_len, dtype=torch.long)
    tgt = torch.zeros(n, max_len + 1, dtype=torch.long)
    lengths = torch.randint(min_len, max_len + 1, (n,), generator=g)
    for row, length in enumerate(lengths.tolist()):
        seq = torch.randint(3, 3 + SYMBOLS, (length,), generator=g)
        src[row, :length] = seq
        tgt[row, :length] = seq.flip(0) if task == "reverse" else seq
        tgt[row, length] = 2
    return src, tgt


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` reports."""

    losses: list[float]
    seconds: float


def train(
    model: Transformer,
    src: torch.Tensor,
    tgt: torch.Tensor,
    steps: int,
    batch_size: int = 64,
    warmup: int = 200,
    lr: float = 0.25,
    seed: int = 0,
    progress: bool = False,
) -> TrainResult:
    """Train ``model`` for ``steps`` updates on mini-batches of ``(src, tgt)``."""
    c = model.config
    loss_fn = LabelSmoothingLoss(c.tgt_vocab, c.pad_id, c.label_smoothing)
    optimizer = make_optimizer(model.parameters(), lr=lr)
    scheduler = noam_scheduler(optimizer, c.d_model, warmup)
    g = torch.Generator().manual_seed(seed)
    model.train()
    losses: list[float] = []
    start = time.perf_counter()
    bar = tqdm(range(steps), desc="training", disable=not progress, file=sys.stderr)
    for _ in bar:
        idx = torch.randint(0, src.size(0), (batch_size,), generator=g)
        logits = model(src[idx], shift_right(tgt[idx], c.bos_id))
        loss = loss_fn(logits, tgt[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
    model.eval()
    return TrainResult(losses, time.perf_counter() - start)


def accuracy(model: Transformer, src: torch.Tensor, tgt: torch.Tensor) -> float:
    """Fraction of examples whose greedy decoding equals the target exactly (up to ``eos``)."""
    model.eval()
    out = greedy_decode(model, src, max_len=tgt.size(1))
    out = torch.nn.functional.pad(out, (0, tgt.size(1) - out.size(1)))
    return float((out == tgt).all(dim=1).float().mean())


def main(argv: Sequence[str] | None = None) -> int:
    """Train on a toy task, save, reload, and compare greedy decoding with an untrained model."""
    p = argparse.ArgumentParser(prog="transformer-toy", description=main.__doc__)
    p.add_argument("--task", choices=TASKS, default="copy")
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--examples", type=int, default=1000)
    p.add_argument("--lr", type=float, default=0.25, help="multiplies the Eq. 3 schedule")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="toy-checkpoint.pt", help="where to save the trained model")
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error("--steps must be >= 1")
    torch.manual_seed(args.seed)
    src, tgt = make_dataset(args.task, args.examples, seed=args.seed)
    model = Transformer(toy_config())
    before = accuracy(model, src, tgt)
    result = train(
        model, src, tgt, args.steps, args.batch_size, lr=args.lr, seed=args.seed, progress=True
    )
    save_checkpoint(model, args.out)
    reloaded = load_checkpoint(args.out)
    after = accuracy(reloaded, src, tgt)
    final = sum(result.losses[-20:]) / min(20, len(result.losses))
    print(f"task {args.task}: {args.steps} steps in {result.seconds:.1f} s, final loss {final:.4f}")
    print(
        f"exact-match accuracy on the training examples: untrained {before:.1%}, trained {after:.1%}"
    )
    print(f"saved to {args.out} and reloaded from it")
    return 0 if math.isfinite(final) else 1


if __name__ == "__main__":
    raise SystemExit(main())
