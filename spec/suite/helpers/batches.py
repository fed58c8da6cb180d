"""Token batches, and the passes that turn them into the model's outputs (through the adapter's
``forward``, or composed from its pieces)."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from spec.adapter import Config, declared
from spec.check import Check, Env
from spec.tolerances import tolerance

from .models import SMALL


def tokens(
    rng: torch.Generator,
    config: Config,
    batch: int,
    length: int,
    *,
    vocab: int | None = None,
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


def cpu_float64() -> Env:
    """The CPU float64 environment, for checks that are not about a device or a dtype (decoding
    decisions, counts, schedules)."""
    return Env(torch.device("cpu"), torch.float64, tolerance("cpu", torch.float64))


def shifted(clause: Check, tgt: Tensor, bos_id: int) -> Tensor:
    """The decoder input for ``tgt``: the adapter's ``decoder_input`` if it has one, otherwise
    the paper's (3.1/shifted-right): ``bos`` then ``tgt`` without its last token."""
    if clause.has("decoder_input"):
        return clause.require("decoder_input")(tgt, bos_id)
    return torch.cat([torch.full_like(tgt[:, :1], bos_id), tgt[:, :-1]], dim=1)


def logits(
    clause: Check, model: nn.Module, src: Tensor, src_mask: Tensor, tgt_in: Tensor
) -> Tensor:
    """Next-token logits ``[B, T, V]`` through the adapter: the whole model's ``forward`` when
    the adapter has one (the path its users call), otherwise embed and encode the source, embed
    and decode the (shifted-right) target ``tgt_in``, project (:func:`pieces`)."""
    if clause.has("forward"):
        return clause.require("forward")(model, src, tgt_in, src_mask)
    return pieces(clause, model, src, src_mask, tgt_in)


def pieces(
    clause: Check, model: nn.Module, src: Tensor, src_mask: Tensor, tgt_in: Tensor
) -> Tensor:
    """Next-token logits ``[B, T, V]`` composed from the adapter's pieces: embed and encode the
    source, embed and decode the (shifted-right) target ``tgt_in``, project."""
    x = clause.require("embed_source")(model, src)
    memory = clause.require("encode")(model, x, src_mask)
    y = clause.require("embed_target")(model, tgt_in)
    return clause.require("project")(model, clause.require("decode")(model, y, memory, src_mask))


def batch_of(rng: torch.Generator, env: Env, lengths: list[int], length: int = 8,
           tgt_length: int = 7) -> tuple[Tensor, Tensor, Tensor]:
    """Source ids and padding mask for ``lengths``, and a shifted-right target, on ``env``."""
    src, src_mask = tokens(rng, SMALL, len(lengths), length, lengths=lengths)
    tgt, _ = tokens(rng, SMALL, len(lengths), tgt_length, vocab=SMALL.tgt_vocab)
    tgt_in = torch.cat([torch.full_like(tgt[:, :1], SMALL.bos_id), tgt[:, :-1]], dim=1)
    return src.to(env.device), src_mask.to(env.device), tgt_in.to(env.device)


@dataclasses.dataclass(frozen=True)
class Batch:
    """Token ids with their padding mask, and embedded inputs of the same shapes (float64, CPU)
    for adapters that take embedded inputs (``torch.nn`` has no embeddings)."""

    src: Tensor
    src_mask: Tensor
    tgt_in: Tensor
    x: Tensor
    y: Tensor

    @staticmethod
    def draw(rng: torch.Generator, lengths: list[int]) -> Batch:
        cpu = cpu_float64()
        src, src_mask, tgt_in = batch_of(rng, cpu, lengths)
        x = cpu.randn(*src.shape, SMALL.d_model, generator=rng)
        y = cpu.randn(*tgt_in.shape, SMALL.d_model, generator=rng)
        return Batch(src, src_mask, tgt_in, x, y)

    def rows(self, index: Tensor | slice) -> Batch:
        return Batch(*(t[index] for t in dataclasses.astuple(self)))

    def run(self, clause: Check, model: torch.nn.Module, env: Env) -> Tensor:
        """The logits through the whole model when the adapter embeds and projects; otherwise
        the decoder output for the embedded inputs; without a decoder (an encoder-only
        implementation), the encoder output for the embedded source (or the source vectors)."""
        src_mask = self.src_mask.to(env.device)
        if not clause.has("decode"):
            x = (clause.require("embed_source")(model, self.src.to(env.device))
                 if clause.has("embed_source") else self.x.to(env.device, env.dtype))
            return clause.require("encode")(model, x, src_mask)
        if all(clause.has(n) for n in ("embed_source", "embed_target", "project")):
            return logits(clause, model, self.src.to(env.device), src_mask,
                          self.tgt_in.to(env.device))
        memory = clause.require("encode")(model, self.x.to(env.device, env.dtype), src_mask)
        y = self.y.to(env.device, env.dtype)
        return clause.require("decode")(model, y, memory, src_mask)


def encoder_only(clause: Check) -> bool:
    """Whether the adapter declares an encoder-only implementation."""
    return declared(clause.adapter, "architecture") == "encoder-only"


def outputs(
    clause: Check, model: nn.Module, src: Tensor, src_mask: Tensor, tgt_in: Tensor | None
) -> Tensor:
    """The model's outputs for training: the full pass (:func:`spec.suite.helpers.logits`) for
    the decoder input ``tgt_in``; an encoder-only model's projected encoder output (``tgt_in``
    None)."""
    if tgt_in is not None:
        return logits(clause, model, src, src_mask, tgt_in)
    x = clause.require("embed_source")(model, src)
    return clause.require("project")(model, clause.require("encode")(model, x, src_mask))
