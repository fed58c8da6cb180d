"""Peak memory of one training step (what is measured: :data:`CPU_MEMORY`,
:data:`CUDA_MEMORY`)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


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
