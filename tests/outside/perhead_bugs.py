"""Four small bugs in :mod:`tests.outside.perhead`, each a subclass of a correct part and its own
adapter (``adapter_<bug>``, named ``outside-perhead-<bug>``) with its own verdicts.

* ``shared_norm``: each layer builds one LayerNorm and hands it to all its sub-layer
  connections (the paper has one per sub-layer: 2 per encoder layer, 3 per decoder layer).
* ``shared_kv``: each head projects keys and values with one matrix (W_i^K is W_i^V).
* ``dropout_fixed``: the sub-layer dropout is hard-coded to 0.1, whatever the configuration.
* ``double_dropout``: the sub-layer output goes through its dropout twice.

The adapters map the parameters as they really are: a shared tensor appears under every
canonical name that it stands for.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from tests.outside import perhead
from tests.outside.perhead import VERDICTS as CORRECT

# -- shared_norm -----------------------------------------------------------------------------


class SharedNormTransformer(perhead.Transformer):
    """Every sub-layer connection of a layer uses the layer's one LayerNorm."""

    def sublayers(self, n: int) -> nn.ModuleList:
        connections = super().sublayers(n)
        for connection in connections[1:]:
            connection.norm = connections[0].norm
        return connections


class SharedNormAdapter(perhead.PerHeadAdapter):
    name = "outside-perhead-shared_norm"
    model_type = SharedNormTransformer


adapter_shared_norm = SharedNormAdapter()

VERDICTS_shared_norm: dict[str, tuple[str, str]] = {
    **CORRECT,
    "3.1/residual-norm": (
        "DEVIATES shared-norms",
        "the sub-layers of a layer share one LayerNorm: norm_1, norm_2 (, norm_3) are one",
    ),
    "table3/param-formula": (
        "DEVIATES shared-norms",
        "one LayerNorm per layer, not one per sub-layer: 2 d_model fewer per shared norm",
    ),
}
"""What a careful reader of the paper says of every clause that does not simply CONFORM."""

# -- shared_kv -------------------------------------------------------------------------------


class SharedKVHead(perhead.Head):
    """Keys and values come from the same projection."""

    def __init__(self, d_model: int, d_k: int) -> None:
        super().__init__(d_model, d_k)
        self.v = self.k


class SharedKVAttention(perhead.MultiHeadedAttention):
    head = SharedKVHead


class SharedKVTransformer(perhead.Transformer):
    def attention(self) -> nn.Module:
        return SharedKVAttention(self.h, self.d_model)


class SharedKVAdapter(perhead.PerHeadAdapter):
    name = "outside-perhead-shared_kv"
    model_type = SharedKVTransformer
    attention_type = SharedKVAttention


adapter_shared_kv = SharedKVAdapter()

VERDICTS_shared_kv: dict[str, tuple[str, str]] = {
    **CORRECT,
    "3.2.2/eq": ("DEVIATES shared-projections", "V W_i^K instead of V W_i^V: no W_i^V"),
    "3.2.2/head-dims": (
        "DEVIATES shared-projections",
        "the projections hold 3 d_model^2, not 4 d_model^2",
    ),
    "table3/param-formula": ("DEVIATES shared-projections", "attention blocks of 3 d^2, not 4 d^2"),
}
"""What a careful reader of the paper says of every clause that does not simply CONFORM."""

# -- dropout_fixed ---------------------------------------------------------------------------


class FixedDropoutTransformer(perhead.Transformer):
    """The sub-layer connections drop with 0.1 whatever ``dropout`` says (the embeddings'
    dropout still follows it)."""

    def sublayers(self, n: int) -> nn.ModuleList:
        return nn.ModuleList(perhead.SublayerConnection(self.d_model, 0.1) for _ in range(n))


class FixedDropoutAdapter(perhead.PerHeadAdapter):
    name = "outside-perhead-dropout_fixed"
    model_type = FixedDropoutTransformer


adapter_dropout_fixed = FixedDropoutAdapter()

VERDICTS_dropout_fixed: dict[str, tuple[str, str]] = {
    **CORRECT,
    "5.4/residual-dropout": ("DEVIATES dropout-rate-ignored", "the residual rate is always 0.1"),
}
"""What a careful reader of the paper says of every clause that does not simply CONFORM."""

# -- double_dropout --------------------------------------------------------------------------


class DoubleDropoutConnection(perhead.SublayerConnection):
    """``norm(x + dropout(dropout(sublayer(x))))``: a keep rate of (1 - p)^2, and the kept
    values scaled by 1 / (1 - p)^2."""

    def forward(self, x: Tensor, sublayer: Callable[[Tensor], Tensor]) -> Tensor:
        return self.norm(x + self.dropout(self.dropout(sublayer(x))))


class DoubleDropoutTransformer(perhead.Transformer):
    def sublayers(self, n: int) -> nn.ModuleList:
        return nn.ModuleList(DoubleDropoutConnection(self.d_model, self.p) for _ in range(n))


class DoubleDropoutAdapter(perhead.PerHeadAdapter):
    name = "outside-perhead-double_dropout"
    model_type = DoubleDropoutTransformer


adapter_double_dropout = DoubleDropoutAdapter()

VERDICTS_double_dropout: dict[str, tuple[str, str]] = {
    **CORRECT,
    "5.4/residual-dropout": (
        "DEVIATES double-dropout",
        "the sub-layer output is dropped twice: rate 1 - (1 - p)^2, not p",
    ),
}
"""What a careful reader of the paper says of every clause that does not simply CONFORM."""
