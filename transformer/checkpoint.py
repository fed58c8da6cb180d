"""Checkpoints: a model's configuration and weights, loaded without unpickling objects.

Implements: practice/save-load.

A checkpoint is a file written by :func:`torch.save` holding only plain data: a format tag, the
configuration as a dictionary, and the state dict. :func:`load_checkpoint` reads it with
``torch.load(weights_only=True)``, which refuses any pickled object other than tensors and
plain containers, so a checkpoint cannot run code.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import torch

from .config import TransformerConfig
from .model import Transformer

FORMAT = "attention-spec-checkpoint/1"


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

    Raises:
        CheckpointError: the file is missing, truncated or corrupt, is not a checkpoint, carries
            pickled objects, or its configuration or weights do not match.
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
    model = Transformer(stored).to(map_location)
    state = payload.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: the checkpoint holds no state dict")
    floats = [t.dtype for t in state.values() if torch.is_tensor(t) and t.is_floating_point()]
    if floats:
        model = model.to(floats[0])  # the dtype the model was saved in, not the default
    try:
        model.load_state_dict(state)
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: weights do not fit the configuration: {exc}") from None
    return model
