"""Model configuration, and the paper's base and big models (Table 3).

Implements: table3/param-formula (through :func:`base` and :func:`big`), 3.2.2/head-dims
(``d_k = d_v = d_model / h``, checked here).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Everything that determines a model's shape and its regularisation.

    Attributes:
        src_vocab: source vocabulary size.
        tgt_vocab: target vocabulary size.
        d_model: width of every sub-layer output and of the embeddings (3.1/width).
        h: number of attention heads; ``d_model`` must be divisible by it (3.2.2/head-dims).
        d_ff: inner width of the feed-forward networks (3.3/dims).
        n_layers: N, the number of identical layers in each stack (3.1/encoder-stack).
        dropout: P_drop, residual and embedding dropout (5.4).
        label_smoothing: eps_ls (5.4/label-smoothing).
        max_len: the longest sequence the positional-encoding table covers.
        share_vocab: source and target share one vocabulary, so all three embedding
            matrices are tied (3.4/weight-tying); otherwise only the target embedding and the
            pre-softmax projection are.
        pad_id, bos_id, eos_id: special token ids.
        norm_eps: LayerNorm epsilon (the paper does not state one).
    """

    src_vocab: int
    tgt_vocab: int
    d_model: int = 512
    h: int = 8
    d_ff: int = 2048
    n_layers: int = 6
    dropout: float = 0.1
    label_smoothing: float = 0.1
    max_len: int = 1024
    share_vocab: bool = False
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("src_vocab", "tgt_vocab", "d_model", "h", "d_ff", "n_layers", "max_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.d_model % self.h:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by the number of heads h ({self.h})"
            )
        for name in ("dropout", "label_smoothing"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        if self.share_vocab and self.src_vocab != self.tgt_vocab:
            raise ValueError(
                "share_vocab needs src_vocab == tgt_vocab, got "
                f"{self.src_vocab} and {self.tgt_vocab}"
            )
        specials = {"pad_id": self.pad_id, "bos_id": self.bos_id, "eos_id": self.eos_id}
        for name, value in specials.items():
            if not 0 <= value < min(self.src_vocab, self.tgt_vocab):
                raise ValueError(f"{name} ({value}) must be a valid id in both vocabularies")
        if len(set(specials.values())) != 3:
            raise ValueError(f"pad_id, bos_id and eos_id must differ, got {specials}")

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a plain dictionary (what checkpoints store)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TransformerConfig:
        """Build a configuration, refusing unknown keys by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known keys are {sorted(known)}")
        return cls(**values)


def base(
    src_vocab: int = 37000, tgt_vocab: int | None = None, **overrides: Any
) -> TransformerConfig:
    """The paper's base model: N=6, d_model=512, d_ff=2048, h=8, P_drop=0.1, eps_ls=0.1."""
    tgt = src_vocab if tgt_vocab is None else tgt_vocab
    values: dict[str, Any] = {
        "src_vocab": src_vocab,
        "tgt_vocab": tgt,
        "share_vocab": tgt == src_vocab,
    }
    return TransformerConfig.from_dict({**values, **overrides})


def big(
    src_vocab: int = 37000, tgt_vocab: int | None = None, **overrides: Any
) -> TransformerConfig:
    """The paper's big model: N=6, d_model=1024, d_ff=4096, h=16, P_drop=0.3."""
    values = {"d_model": 1024, "d_ff": 4096, "h": 16, "dropout": 0.3}
    return base(src_vocab, tgt_vocab, **{**values, **overrides})
