"""Checkpoints: a model's configuration and weights, loaded without unpickling objects.

Implements: practice/save-load.

A checkpoint is a file written by :func:`torch.save` holding only plain data: a format tag, the
configuration as a dictionary, and the state dict. :func:`load_checkpoint` reads it with
``torch.load(weights_only=True)``, which refuses any pickled object other than tensors and
plain containers, so a checkpoint cannot run code.

Before any model is built, the state dict is checked against the configuration: its keys and
every tensor's shape must be those the configuration gives (so that a small file cannot ask for
a huge model), and all its tensors must be floating point of one dtype. The model is loaded in
that dtype, the one it was saved in: a state dict mixing dtypes is refused, not cast.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import torch

from .config import TransformerConfig
from .model import Transformer

FORMAT = "attention-spec-checkpoint/1"

MAX_POSITION_TABLE_BYTES = 256 * 2**20
"""The largest positional-encoding table (``max_len x d_model`` float64) a checkpoint's
configuration may ask for: 256 MiB, ``max_len`` 65536 at ``d_model`` 512. The table is not
saved, so the weights do not bound it; a larger one is refused rather than allocated."""


class CheckpointError(Exception):
    """A checkpoint could not be read, or does not fit the model asked for."""


def save_checkpoint(model: Transformer, path: str | os.PathLike[str]) -> None:
    """Write ``model``'s configuration and weights to ``path``."""
    payload = {"format": FORMAT, "config": model.config.to_dict(), "state_dict": model.state_dict()}
    torch.save(payload, path)


def load_checkpoint(
    path: str | os.PathLike[str],
    config: TransformerConfig | None = None,
    map_location: str | torch.device = "cpu",
) -> Transformer:
    """Rebuild the model saved at ``path``.

    Args:
        path: a file written by :func:`save_checkpoint`.
        config: if given, the stored configuration must equal it.
        map_location: where to put the tensors.

    Returns:
        The model, in the dtype of the saved weights, on ``map_location``.

    Raises:
        CheckpointError: the file is missing, truncated or corrupt, is not a checkpoint, carries
            pickled objects, its configuration is invalid or does not match ``config``, its
            weights do not fit the configuration (names, shapes, number of layers), mix dtypes
            or are not floating point, its tied weights differ, or its ``max_len`` asks for a
            positional-encoding table larger than :data:`MAX_POSITION_TABLE_BYTES`.
    """
    try:
        payload: Any = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused to load: it holds pickled objects other than tensors ({exc})"
        ) from None
    except Exception as exc:  # torch.load fails in many ways on a damaged file
        raise CheckpointError(
            f"{path}: not a readable checkpoint (truncated or corrupt?): {exc}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not an attention-spec checkpoint (expected format {FORMAT!r})"
        )
    try:
        stored = TransformerConfig.from_dict(payload["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid configuration in checkpoint: {exc}") from None
    if config is not None and config != stored:
        diff = {
            k: (v, getattr(stored, k))
            for k, v in config.to_dict().items()
            if getattr(stored, k) != v
        }
        raise CheckpointError(f"{path}: configuration mismatch (asked, stored): {diff}")
    state = payload.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: the checkpoint holds no state dict")
    dtype = _check_state(path, state, stored)
    model = Transformer(stored).to(device=map_location, dtype=dtype)
    model.load_state_dict(state)
    return model


def _check_state(
    path: str | os.PathLike[str], state: dict[Any, Any], config: TransformerConfig
) -> torch.dtype:
    """Check ``state`` against ``config`` without building the model; return its one dtype.

    The configuration's sizes must be those of the weights, so that a small file cannot make
    the loader allocate a huge model; the model is compared on the ``meta`` device, which
    allocates nothing, once the number of layers (which the meta model's building time grows
    with) is known to match. ``max_len``, which no weight records, is bounded by
    :data:`MAX_POSITION_TABLE_BYTES`.
    """
    names = [key for key in state if not isinstance(key, str)]
    if names:
        raise CheckpointError(
            f"{path}: state dict keys must be parameter names (str), got {names[:5]!r}"
        )
    unfit = f"{path}: weights do not fit the configuration:"
    for stack in ("encoder", "decoder"):
        prefix = f"{stack}.layers."
        found = len({key[len(prefix) :].split(".")[0] for key in state if key.startswith(prefix)})
        if found != config.n_layers:
            raise CheckpointError(
                f"{unfit} the configuration asks for n_layers={config.n_layers}, the state dict "
                f"holds {found} {stack} layers"
            )
    with torch.device("meta"):
        meta = Transformer(config)
    expected = meta.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{unfit} missing {missing}, unexpected {unexpected}")
    odd = [
        f"{k} is a {type(v).__name__}, not a tensor"
        for k, v in state.items()
        if not torch.is_tensor(v)
    ]
    odd += [
        f"{k} has shape {list(v.shape)}, the configuration needs {list(expected[k].shape)}"
        for k, v in state.items()
        if torch.is_tensor(v) and v.shape != expected[k].shape
    ]
    odd += [
        f"{k} is {v.dtype}, not a floating-point dtype"
        for k, v in state.items()
        if torch.is_tensor(v) and not v.is_floating_point()
    ]
    if odd:
        more = f"; and {len(odd) - 3} more" if len(odd) > 3 else ""
        raise CheckpointError(f"{unfit} {'; '.join(odd[:3])}{more}")
    by_dtype: dict[torch.dtype, list[str]] = {}
    for key, tensor in state.items():
        by_dtype.setdefault(tensor.dtype, []).append(key)
    if len(by_dtype) > 1:
        groups = ", ".join(
            f"{dtype} ({keys[0]}{f' and {len(keys) - 1} more' if len(keys) > 1 else ''})"
            for dtype, keys in sorted(by_dtype.items(), key=lambda item: str(item[0]))
        )
        raise CheckpointError(
            f"{path}: the state dict mixes dtypes: {groups}; a checkpoint holds one dtype, "
            "the one the model is loaded in"
        )
    tied: dict[int, list[str]] = {}  # 3.4/weight-tying: one matrix under several names
    for name, parameter in meta.named_parameters(remove_duplicate=False):
        tied.setdefault(id(parameter), []).append(name)
    values = not any(tensor.is_meta for tensor in state.values())  # map_location="meta": none
    for first, *others in tied.values():
        for other in others:
            if values and not torch.equal(state[first], state[other]):
                raise CheckpointError(
                    f"{path}: {first} and {other} are one tied matrix (3.4/weight-tying), but "
                    "the checkpoint gives them different values"
                )
    table = config.max_len * config.d_model * 8  # PositionalEncoding keeps it in float64
    if table > MAX_POSITION_TABLE_BYTES:  # d_model is the weights' own: max_len is the cause
        raise CheckpointError(
            f"{path}: max_len={config.max_len} asks for a positional-encoding table of {table} "
            f"bytes, more than the {MAX_POSITION_TABLE_BYTES} bytes a checkpoint may ask for; "
            "build the model yourself (Transformer(config)) if you mean it"
        )
    return next(iter(by_dtype))
