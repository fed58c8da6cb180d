"""Mapping a library's parameters onto the suite's canonical names, for adapter writers.

An adapter's ``parameters`` and ``load_parameters`` (see :mod:`spec.adapter`) read and write a
module's tensors under canonical names (``encoder.0.self_attn.W_Q`` of shape ``[h, d_model,
d_k]``, ...). Most libraries store the same numbers in another layout: ``nn.Linear`` keeps
``W.T``, heads are rows of one projection, Q, K and V share one fused matrix. A :class:`Slot`
says where one canonical parameter lives and how to convert it; a :data:`Layout` maps every
canonical name of a module to its slot, and :func:`read` and :func:`write` do the rest::

    def _layout(model):
        return {"src_embedding": Slot("encoder.embed.weight"),
                "encoder.0.ffn.W_1": Slot("encoder.layers.0.fc1.weight", transpose, transpose),
                **heads("encoder.0.self_attn.", "encoder.layers.0.attn.", h, d_k, d_model)}

    def parameters(self, module):  return read(module, _layout(module))
    def load_parameters(self, module, params):  write(module, _layout(module), params)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

__all__ = ["Layout", "Slot", "heads", "read", "same", "transpose", "write"]


def same(t: Tensor) -> Tensor:
    """The identity conversion: the library stores the canonical layout."""
    return t


def transpose(t: Tensor) -> Tensor:
    """``nn.Linear`` stores ``W.T`` (``[out, in]``); the paper writes ``x W`` (``[in, out]``)."""
    return t.t()


@dataclasses.dataclass(frozen=True)
class Slot:
    """Where one canonical parameter lives in a module.

    ``path`` names a parameter or a buffer of the module (``module.get_parameter`` /
    ``get_buffer``); ``rows`` selects a block of its first axis (one of Q, K, V in a fused
    projection); ``read`` turns that block into the canonical layout and ``write`` turns a
    canonical tensor back into the block.
    """

    path: str
    read: Callable[[Tensor], Tensor] = same
    write: Callable[[Tensor], Tensor] = same
    rows: tuple[int, int] | None = None

    def target(self, module: nn.Module) -> Tensor:
        """The library's tensor (or the block of it) that holds this parameter."""
        t: Tensor
        try:
            t = module.get_parameter(self.path)
        except AttributeError:  # not a parameter: a buffer (a frozen bias, a fixed table)
            t = module.get_buffer(self.path)
        return t if self.rows is None else t[self.rows[0] : self.rows[1]]


Layout = dict[str, Slot]
"""Canonical name -> where it lives."""


def heads(prefix: str, path: str, h: int, d_k: int, d_model: int, *, bias: bool,
          names: Mapping[str, str] | None = None, fused: str | None = None) -> Layout:
    """The slots of one multi-head attention block stored as ``nn.Linear`` layers.

    Head ``i`` of a projection is rows ``[i d_k, (i+1) d_k)`` of its ``[h d_k, d_model]``
    weight. ``names`` maps ``Q``, ``K``, ``V``, ``O`` to the library's ``nn.Linear`` names under
    ``path`` (default ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``); with ``fused`` the
    projections Q, K, V are consecutive row blocks of the one parameter ``path + fused +
    "_weight"`` (and ``"_bias"``), as ``nn.MultiheadAttention`` stores them.
    """
    linear = {"Q": "q_proj", "K": "k_proj", "V": "v_proj", "O": "out_proj", **(names or {})}

    def read_w(w: Tensor) -> Tensor:  # [h d_k, d] -> [h, d, d_k]
        return w.reshape(h, d_k, d_model).transpose(1, 2)

    def write_w(c: Tensor) -> Tensor:
        return c.transpose(1, 2).reshape(h * d_k, d_model)

    def read_b(b: Tensor) -> Tensor:
        return b.reshape(h, d_k)

    def write_b(c: Tensor) -> Tensor:
        return c.reshape(h * d_k)

    out: Layout = {}
    for i, x in enumerate("QKV"):
        if fused is None:
            weight, b, rows = f"{path}{linear[x]}.weight", f"{path}{linear[x]}.bias", None
        else:
            weight, b = f"{path}{fused}_weight", f"{path}{fused}_bias"
            rows = (i * h * d_k, (i + 1) * h * d_k)
        out[f"{prefix}W_{x}"] = Slot(weight, read_w, write_w, rows)
        if bias:
            out[f"{prefix}b_{x}"] = Slot(b, read_b, write_b, rows)
    out[f"{prefix}W_O"] = Slot(f"{path}{linear['O']}.weight", transpose, transpose)
    if bias:
        out[f"{prefix}b_O"] = Slot(f"{path}{linear['O']}.bias")
    return out


def read(module: nn.Module, layout: Layout) -> dict[str, Tensor]:
    """A snapshot of ``module``'s parameters under their canonical names (copies, detached)."""
    return {name: slot.read(slot.target(module).detach()).clone()
            for name, slot in layout.items()}


def write(module: nn.Module, layout: Layout, params: Mapping[str, Tensor]) -> None:
    """Copy canonical parameters (any subset of the layout's names) into ``module``.

    Raises ``KeyError`` naming the unknown names and ``ValueError`` naming a parameter whose
    shape is not the canonical one (``copy_`` would broadcast it silently).
    """
    unknown = sorted(set(params) - set(layout))
    if unknown:
        raise KeyError(f"unknown parameters {unknown}; known: {sorted(layout)}")
    with torch.no_grad():
        for name, value in params.items():
            slot = layout[name]
            target = slot.target(module)
            expected = tuple(slot.read(target).shape)
            if tuple(value.shape) != expected:
                raise ValueError(f"{name}: shape {tuple(value.shape)}, expected {expected}")
            target.copy_(slot.write(value))
