"""Timing: implementations called alternately, round after round, after warm-up."""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable

import torch


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
