"""What the suite's test modules share: models with well-conditioned random weights, tokens."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from spec.adapter import Config
from spec.check import Check, Env

SMALL = Config()
"""The configuration most model tests use: d_model 16, h 4, d_ff 32, N 2, vocab 13, no dropout."""


def draw(name: str, shape: torch.Size, rng: torch.Generator) -> Tensor:
    """A well-conditioned random value for the canonical parameter ``name`` (float64, CPU).

    Matrices are scaled by 1/sqrt(fan-in) so activations stay O(1); LayerNorm gains are near 1;
    biases are small but non-zero, so that a misplaced one shows.
    """
    x = torch.randn(*shape, generator=rng, dtype=torch.float64)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "gamma":
        return 1.0 + 0.2 * x
    if leaf == "beta" or leaf.startswith("b_") or leaf == "b":
        return 0.2 * x
    if leaf in ("W_Q", "W_K", "W_V"):
        return x / math.sqrt(shape[-2])
    if leaf in ("src_embedding", "tgt_embedding"):
        return x / math.sqrt(shape[-1])
    if leaf in ("src_positions", "tgt_positions"):
        return 0.5 * x
    return x / math.sqrt(shape[0])


def randomize(clause: Check, module: nn.Module, env: Env, rng: torch.Generator) -> dict[str, Tensor]:
    """Load random canonical parameters into ``module`` (when the adapter can write them) and
    return the parameters as the adapter reads them back, which is what the oracle uses."""
    read = clause.require("parameters")
    params: dict[str, Tensor] = dict(read(module))
    if clause.has("load_parameters"):
        fresh = {name: draw(name, t.shape, rng).to(env.device, env.dtype) for name, t in params.items()}
        clause.require("load_parameters")(module, fresh)
        params = dict(read(module))
    return {name: t.detach() for name, t in params.items()}


def build(
    clause: Check, env: Env, rng: torch.Generator, config: Config = SMALL
) -> tuple[nn.Module, dict[str, Tensor]]:
    """A model from the adapter, on ``env``'s device and dtype, in evaluation mode, with random
    weights; and its canonical parameters."""
    model = clause.require("model")(config).to(env.device, env.dtype).eval()
    return model, randomize(clause, model, env, rng)


def tokens(
    rng: torch.Generator, config: Config, batch: int, length: int, *, vocab: int | None = None,
    lengths: list[int] | None = None,
) -> tuple[Tensor, Tensor]:
    """Random ids ``[batch, length]`` avoiding the special ids, padded after ``lengths``;
    and the padding mask ``[batch, length]`` (True = real token)."""
    vocab = vocab or config.src_vocab
    ids = torch.randint(3, vocab, (batch, length), generator=rng)
    valid = torch.ones(batch, length, dtype=torch.bool)
    for row, n in enumerate(lengths or []):
        valid[row, n:] = False
    return ids.masked_fill(~valid, config.pad_id), valid
