"""Whether the model runs at all in a dtype on a device: an implementation that cannot run in
float64 (a library bug, an overflow in a mask) would otherwise turn every clause checked there
into ERROR. The plugin asks :func:`fails_in` about a clause test that raised: if the model
fails there whatever the clause, that run is "not checked" and the other runs decide the
verdict; practice/devices-dtypes reports the failure itself."""

from __future__ import annotations

import torch

from spec.adapter import Adapter, NotProvided
from spec.check import Check, Env
from spec.clauses import CLAUSES
from spec.tolerances import tolerance

from .batches import Batch
from .models import build

_CACHE: dict[tuple[int, str, torch.dtype], tuple[Adapter, str | None]] = {}
"""(id of the adapter, device, dtype) -> (the adapter, kept alive so that its id is not reused;
what the probe found)."""


def fails_in(adapter: Adapter, device: str, dtype: torch.dtype) -> str | None:
    """Why the model of ``adapter`` cannot run a batch on ``device`` in ``dtype``, when it can
    on the CPU in another dtype; None if it can, if it cannot anywhere (then the failure is not
    about the dtype), or if the adapter has no model. Probed once per adapter and place."""
    why = _cached(adapter, device, dtype)
    other = ("cpu", torch.float64) if (device, dtype) == ("cpu", torch.float32) else (
        "cpu", torch.float32)
    if why is None or _cached(adapter, *other) is not None:
        return None  # it runs, or it runs nowhere: not a question of the dtype or the device
    return why


def _cached(adapter: Adapter, device: str, dtype: torch.dtype) -> str | None:
    key = (id(adapter), device, dtype)
    if key not in _CACHE:
        _CACHE[key] = (adapter, _probe(adapter, device, dtype))
    return _CACHE[key][1]


def _probe(adapter: Adapter, device: str, dtype: torch.dtype) -> str | None:
    check = Check(CLAUSES["practice/devices-dtypes"], adapter, "")
    env = Env(torch.device(device), dtype, tolerance(device, dtype))
    rng = torch.Generator().manual_seed(0)
    try:
        model, _ = build(check, env, rng)
        with torch.no_grad():
            Batch.draw(rng, [4, 3]).run(check, model, env)
    except NotProvided:
        return None  # nothing to run: the clause's own failure stands
    except Exception as exc:  # the model does not run here
        first = (str(exc).strip().splitlines() or [""])[0]
        return f"{type(exc).__name__}: {first}"
    return None
