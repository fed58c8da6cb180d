"""What is run: the model sizes (:data:`SIZES`), the batch each is measured with on each device
type, random batches of sentence pairs, and the training step that is timed (:class:`Trainer`)."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import torch
from torch import Tensor, nn

import transformer as T


@dataclasses.dataclass(frozen=True)
class Workload:
    """One batch: ``batch`` sentence pairs, up to ``src_len`` source and ``tgt_len`` target
    tokens each."""

    batch: int
    src_len: int
    tgt_len: int


@dataclasses.dataclass(frozen=True)
class Size:
    """A model shape and the batch it is measured with on each device type."""

    name: str
    d_model: int
    h: int
    d_ff: int
    n_layers: int
    vocab: int
    dropout: float
    workload: dict[str, Workload]

    def config(self, max_len: int = 1024) -> T.TransformerConfig:
        return T.TransformerConfig(
            src_vocab=self.vocab,
            tgt_vocab=self.vocab,
            d_model=self.d_model,
            h=self.h,
            d_ff=self.d_ff,
            n_layers=self.n_layers,
            dropout=self.dropout,
            share_vocab=True,
            max_len=max_len,
        )


SIZES: dict[str, Size] = {
    s.name: s
    for s in (
        # for tests and --quick: seconds on any machine
        Size("tiny", 32, 4, 64, 1, 64, 0.1, {"cpu": Workload(2, 8, 8), "cuda": Workload(2, 8, 8)}),
        # a small translation model: 8000-token shared vocabulary
        Size(
            "small",
            256,
            4,
            1024,
            2,
            8000,
            0.1,
            {"cpu": Workload(16, 32, 32), "cuda": Workload(64, 128, 128)},
        ),
        # the paper's base model with its 37000-token shared vocabulary (Table 3, 5.1)
        Size(
            "base",
            512,
            8,
            2048,
            6,
            37000,
            0.1,
            {"cpu": Workload(8, 32, 32), "cuda": Workload(128, 128, 128)},
        ),
        # the paper's big model (Table 3): CUDA only in practice
        Size(
            "big",
            1024,
            16,
            4096,
            6,
            37000,
            0.3,
            {"cpu": Workload(2, 16, 16), "cuda": Workload(64, 128, 128)},
        ),
    )
}


@dataclasses.dataclass
class Batch:
    src: Tensor
    tgt: Tensor
    tgt_in: Tensor
    pad_id: int

    @property
    def tokens(self) -> int:
        """Source plus target tokens, padding excluded."""
        return int((self.src != self.pad_id).sum()) + int((self.tgt != self.pad_id).sum())


def make_batch(
    config: T.TransformerConfig, work: Workload, device: torch.device, *, padding: float = 0.25
) -> Batch:
    """Random sentence pairs whose lengths spread evenly over ``1 - padding`` .. 100% of the
    maximum (the rest is padding), as in a batch of sentences of similar length."""
    g = torch.Generator().manual_seed(1234)
    low = 3  # after pad, bos, eos
    src = torch.randint(low, config.src_vocab, (work.batch, work.src_len), generator=g)
    tgt = torch.randint(low, config.tgt_vocab, (work.batch, work.tgt_len), generator=g)
    if padding:
        for i in range(work.batch):
            share = 1.0 - padding + padding * (i + 1) / work.batch
            src[i, max(1, round(work.src_len * share)) :] = config.pad_id
            tgt[i, max(1, round(work.tgt_len * share)) :] = config.pad_id
    tgt_in = T.shift_right(tgt, config.bos_id)
    return Batch(src.to(device), tgt.to(device), tgt_in.to(device), config.pad_id)


def autocast(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager[Any]:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


class Trainer:
    """One training step of a model: forward, label-smoothed loss, backward, Adam (the
    paper's settings) and the Eq. 3 learning-rate schedule; gradients are freed after it."""

    def __init__(
        self, model: nn.Module, batch: Batch, amp: torch.dtype | None, device: torch.device
    ) -> None:
        c: T.TransformerConfig = model.config  # type: ignore[assignment]
        self.model, self.batch, self.amp, self.device = model, batch, amp, device
        self.loss = T.LabelSmoothingLoss(c.tgt_vocab, c.pad_id, c.label_smoothing)
        self.optimizer = T.make_optimizer(model.parameters())
        self.scheduler = T.noam_scheduler(self.optimizer, c.d_model)

    def __call__(self) -> None:
        self.model.train()
        b = self.batch
        with autocast(self.device, self.amp):
            logits = self.model(b.src, b.tgt_in)
        loss = self.loss(logits, b.tgt)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
