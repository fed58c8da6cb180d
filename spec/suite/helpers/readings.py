"""How a model reads what the paper leaves open around its sub-layers (:class:`Reading`), and
the LayerNorm of a reading."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Literal

from torch import Tensor

from spec import oracle

Stack = Literal["encoder", "decoder"]


@dataclasses.dataclass(frozen=True)
class Reading:
    """How a model reads what the paper leaves open around its sub-layers, found on the model
    itself by :func:`spec.suite.helpers.stacks.match_reading`.

    ``norm``: ``"post"``, the paper's LayerNorm(x + Sublayer(x)), or ``"pre"``,
    x + Sublayer(LayerNorm(x)); the LayerNorm's epsilon, whether its variance divides by n - 1,
    whether epsilon is added inside the square root (all variants of 3.1/residual-norm); the
    FFN's activation (``gelu`` is a variant of 3.3/eq2); and ``hidden_norm``, a LayerNorm (gain
    1, bias 0) after each stack that the adapter does not expose (a deviation of
    3.1/no-final-norm). Clauses about other parts of a model compute the oracle in the model's
    own reading, so that only their own question is judged: a variant of another clause (or a
    deviation that another clause reports) does not fail them.
    """

    norm: Literal["post", "pre"] = "post"
    eps: float = 1e-5
    unbiased: bool = False
    eps_inside_sqrt: bool = True
    hidden_norm: bool = False
    activation: Literal["relu", "gelu"] = "relu"

    @property
    def standard_layer_norm(self) -> bool:
        """Whether the LayerNorm is the oracle's (biased variance, eps inside the sqrt)."""
        return not self.unbiased and self.eps_inside_sqrt

    def variants(self) -> list[tuple[str, str]]:
        """(variant of 3.1/residual-norm, reason) for each way this reading leaves the paper."""
        out = []
        if self.norm == "pre":
            out.append(("pre-norm", "every sub-layer is wrapped as x + Sublayer(LayerNorm(x))"))
        if self.eps != PAPER.eps:
            out.append(("layer-norm-eps", f"the LayerNorm epsilon is {self.eps:g}"))
        if self.unbiased:
            out.append(("unbiased-variance", "LayerNorm divides the squared deviations by n - 1"))
        if not self.eps_inside_sqrt:
            out.append(("eps-outside-sqrt", "LayerNorm divides by sqrt(var) + eps"))
        return out


PAPER = Reading()
"""Post-norm, PyTorch's LayerNorm (eps 1e-5, biased variance), ReLU: what the clauses call
conforming."""

READINGS: tuple[Reading, ...] = tuple(
    Reading(norm, eps, unbiased, inside, hidden, activation)
    for hidden in (False, True)
    for activation in ("relu", "gelu")
    for norm in ("post", "pre")
    for unbiased, inside in ((False, True), (True, False), (False, False), (True, True))
    for eps in (1e-5, 1e-6, 1e-12)
)
"""Every reading :func:`spec.suite.helpers.stacks.match_reading` recognises, the paper's first:
post- or pre-norm; LayerNorm epsilon 1e-5 (PyTorch), 1e-6 (tensor2tensor, the Annotated
Transformer) or 1e-12 (BERT); biased or unbiased variance (``torch.std``); epsilon inside or
outside the square root; ReLU or GELU; with or without an unexposed LayerNorm after the stack."""


def layers(params: Mapping[str, Tensor], stack: Stack) -> dict[int, dict[str, Tensor]]:
    """Layer index -> that layer's parameters (names without ``{stack}.{i}.``), in order."""
    out: dict[int, dict[str, Tensor]] = {}
    for name, t in params.items():
        head, _, rest = name.partition(".")
        index, _, leaf = rest.partition(".")
        if head == stack and index.isdigit():
            out.setdefault(int(index), {})[leaf] = t
    return dict(sorted(out.items()))


def layer_norm(x: Tensor, norm_params: Mapping[str, Tensor], reading: Reading) -> Tensor:
    """:func:`spec.oracle.layer_norm` with ``norm_params`` (``gamma``, ``beta``) in ``reading``."""
    return oracle.layer_norm(
        x,
        norm_params["gamma"],
        norm_params.get("beta"),
        reading.eps,
        unbiased=reading.unbiased,
        eps_inside_sqrt=reading.eps_inside_sqrt,
    )
