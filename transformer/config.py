"""Model configuration, and the paper's base and big models (Table 3).

Implements: table3/param-formula (through :func:`base` and :func:`big`), 3.2.2/head-dims
(``d_k = d_v = d_model / h``, checked here).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Everything that determines a model's shape and its regularisation.

    Attributes:
        src_vocab: source vocabulary size.
        tgt_vocab: target vocabulary size.
        d_model: width of every sub-layer output and of the embeddings (3.1/width); even, for
            the sinusoidal positional encoding (3.5).
        h: number of attention heads; ``d_model`` must be divisible by it (3.2.2/head-dims).
        d_ff: inner width of the feed-forward networks (3.3/dims).
        n_layers: N, the number of identical layers in each stack (3.1/encoder-stack).
        dropout: P_drop, residual and embedding dropout (5.4), in ``[0, 1]``.
        label_smoothing: eps_ls (5.4/label-smoothing), in ``[0, 1)``.
        max_len: the longest sequence the positional-encoding table covers.
        share_vocab: source and target share one vocabulary, so all three embedding
            matrices are tied (3.4/weight-tying); otherwise only the target embedding and the
            pre-softmax projection are.
        pad_id, bos_id, eos_id: special token ids.
        norm_eps: LayerNorm epsilon (the paper does not state one), finite and ``> 0``.

    Every field is checked when the configuration is made: a bad value raises ``ValueError``
    naming the field, the value and what is expected.
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
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.d_model % self.h:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by the number of heads h ({self.h})"
            )
        if self.d_model % 2:
            raise ValueError(
                "d_model must be even (the sinusoidal encoding pairs sin and cos), "
                f"got {self.d_model}"
            )
        # P_drop = 1 is allowed: it drops every sub-layer output, and the conformance suite
        # probes 5.4/residual-dropout with it. NaN fails the comparisons.
        if not _is_real(self.dropout) or not 0.0 <= self.dropout <= 1.0:
            raise ValueError(f"dropout must be a number in [0, 1], got {self.dropout!r}")
        smoothing = self.label_smoothing  # 1 would put no mass on the true token
        if not _is_real(smoothing) or not 0.0 <= smoothing < 1.0:
            raise ValueError(f"label_smoothing must be a number in [0, 1), got {smoothing!r}")
        if not _is_real(self.norm_eps) or not 0.0 < self.norm_eps < math.inf:
            raise ValueError(f"norm_eps must be a finite number > 0, got {self.norm_eps!r}")
        if not isinstance(self.share_vocab, bool):
            raise ValueError(f"share_vocab must be True or False, got {self.share_vocab!r}")
        if self.share_vocab and self.src_vocab != self.tgt_vocab:
            raise ValueError(
                "share_vocab needs src_vocab == tgt_vocab, got "
                f"{self.src_vocab} and {self.tgt_vocab}"
            )
        specials = {"pad_id": self.pad_id, "bos_id": self.bos_id, "eos_id": self.eos_id}
        for name, value in specials.items():
            if not _is_int(value):
                raise ValueError(f"{name} must be an integer token id, got {value!r}")
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
