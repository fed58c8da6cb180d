"""What the corpus shares: an adapter over the reference that applies one change to every model it
builds or loads, and the reference's parts written out step by step, so that a mutant overrides
the one step its bug lives in.

* :class:`Implementation` is the reference adapter with a hook, :meth:`Implementation.patch`,
  that changes a freshly built (or loaded) :class:`transformer.Transformer`, and ``SWAPS``, which
  replaces the class of every matching submodule (``{T.FeedForward: NoReLU}``). Its parameter
  layout can grow (variants that add parameters extend :meth:`Implementation.layout`), and its
  checkpoints rebuild the changed model, so that a variant survives save and load.
* :class:`Mutant` is a broken implementation: ``EXPECTED`` clauses must DEVIATE, the suite must
  name ``DIAGNOSIS`` (a :data:`spec.diagnosis.KNOWN_BUGS` name) for one of them, and ``ERRORS``
  lists the clauses where the bug makes the implementation raise (ERROR is then its verdict).
* :class:`Variant` is a legitimate reading of the paper: ``VARIANTS`` are the (clause, variant)
  pairs the suite must report, and no clause may deviate.
* :class:`Attention` is the reference multi-head attention, step by step.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import transformer as T
from spec.adapter import Config, Params
from spec.adapters import reference as R
from spec.adapters.reference import ReferenceAdapter

Read = Callable[[Tensor], Tensor]
Write = Callable[[Tensor, Tensor], None]
Layout = dict[str, tuple[str, Read, Write]]
"""canonical name -> (attribute path, live tensor -> canonical value, (live, canonical) -> copy)"""


def resolve(module: nn.Module, path: str) -> Tensor:
    """The tensor at ``path``: attributes, and integer parts indexing lists (plain ones too)."""
    obj: Any = module
    for part in path.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    assert isinstance(obj, Tensor), path
    return obj


def copy_with(write: Read, rows: slice | None = None) -> Write:
    """A writer: ``write`` turns the canonical value into the live layout; ``rows`` picks the
    rows of the live tensor it goes to (the reference stacks W^Q, W^K, W^V in one matrix)."""

    def copy(live: Tensor, value: Tensor) -> None:
        (live if rows is None else live[rows]).copy_(write(value))

    return copy


def reference_layout(module: nn.Module) -> Layout:
    """The reference adapter's layout of ``module``, in this module's form."""
    out: Layout = {}
    for name, (path, read, write) in R._layout(module).items():
        base, _, index = path.partition("#")
        rows = None
        if index:
            d = resolve(module, base).size(1)
            rows = slice(int(index) * d, (int(index) + 1) * d)
        out[name] = (base, read, copy_with(write, rows))
    return out


def attention_modules(module: nn.Module) -> list[tuple[str, str, T.MultiHeadAttention]]:
    """(canonical prefix, attribute path prefix, module) of each multi-head attention in
    ``module`` (itself one, or a :class:`transformer.Transformer`)."""
    if isinstance(module, T.MultiHeadAttention):
        return [("", "", module)]
    if not isinstance(module, T.Transformer):
        return []
    out = []
    for stack, layers in (("encoder", module.encoder.layers), ("decoder", module.decoder.layers)):
        for i, layer in enumerate(layers):
            for sub in ("self_attn", "cross_attn") if stack == "decoder" else ("self_attn",):
                out.append((f"{stack}.{i}.{sub}.", f"{stack}.layers.{i}.{sub}.", getattr(layer, sub)))
    return out


def retype(modules: Iterable[Any], cls: type[nn.Module]) -> None:
    """Give each of ``modules`` the class ``cls`` (a subclass of its own: same parameters)."""
    for module in modules:
        module.__class__ = cls


class Attention(T.MultiHeadAttention):
    """The reference multi-head attention, one method per step (same parameters, same results).

    ``project`` -> ``split`` into heads -> (``extend`` the key/value cache) -> ``mask`` ->
    ``attend`` -> ``concat`` the heads -> ``output`` projection. ``attend`` is also what the
    adapter's standalone ``attention`` runs (on a one-head module with d_model = d_k).
    """

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None = None,
        mask: Tensor | None = None,
        *,
        is_causal: bool = False,
        cache: T.KVCache | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        q = self.split(self.project(x, 0))
        if memory is None:  # self-attention: this step's keys and values join the cache
            k, v = self.split(self.project(x, 1)), self.split(self.project(x, 2))
            if cache is not None:
                if cache.k is not None and cache.v is not None:
                    k, v = self.extend(cache.k, k), self.extend(cache.v, v)
                cache.k, cache.v = k, v
        elif cache is not None and cache.k is not None and cache.v is not None:
            k, v = cache.k, cache.v
        else:
            k, v = self.split(self.project(memory, 1)), self.split(self.project(memory, 2))
            if cache is not None:
                cache.k, cache.v = k, v
        out, weights = self.attend(q, k, v, self.mask(mask, is_causal, q.size(-2), k.size(-2)))
        return self.output(self.concat(out)), weights

    def project(self, x: Tensor, which: int) -> Tensor:
        """x W^Q (0), x W^K (1) or x W^V (2), all heads side by side ``[B, L, d_model]``."""
        rows = slice(which * self.d_model, (which + 1) * self.d_model)
        bias = self.in_proj.bias
        return F.linear(x, self.in_proj.weight[rows], None if bias is None else bias[rows])

    def split(self, t: Tensor) -> Tensor:
        """``[B, L, d_model]`` -> ``[B, h, L, d_k]``."""
        b, length, _ = t.shape
        return t.view(b, length, self.h, self.d_k).transpose(1, 2)

    def extend(self, cached: Tensor, new: Tensor) -> Tensor:
        """The cached keys (or values) followed by this step's."""
        return torch.cat([cached, new], dim=2)

    @property
    def device(self) -> torch.device:
        return self.in_proj.weight.device

    def causal(self, lq: int, lk: int) -> Tensor:
        """Query i (the last lq of lk positions) may see keys j <= its own position."""
        return torch.ones(lq, lk, dtype=torch.bool, device=self.device).tril(lk - lq)

    def mask(self, mask: Tensor | None, is_causal: bool, lq: int, lk: int) -> Tensor | None:
        """The mask the heads use, ``True`` = may attend (broadcasting over the heads)."""
        if is_causal:
            return self.causal(lq, lk)
        return mask.unsqueeze(1) if mask is not None and mask.dim() == 3 else mask

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """softmax(Q K^T / sqrt(d_k)) V: the weights of :meth:`weights`, applied to V."""
        weights = self.weights(self.scores(q, k), mask)
        return weights @ v, weights

    def scores(self, q: Tensor, k: Tensor) -> Tensor:
        """Q K^T / sqrt(d_k)."""
        return q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))

    def weights(self, scores: Tensor, mask: Tensor | None) -> Tensor:
        """The softmax over the keys, masked scores -inf (a fully masked row gets weights 0)."""
        if mask is None:
            return scores.softmax(-1)
        empty = ~mask.any(-1, keepdim=True)
        scores = scores.masked_fill(~mask, -math.inf).masked_fill(empty, 0.0)
        return scores.softmax(-1).masked_fill(~mask | empty, 0.0)

    def concat(self, heads: Tensor) -> Tensor:
        """``[B, h, L, d_k]`` -> ``[B, L, h d_k]``: Concat(head_1, ..., head_h)."""
        b, h, length, d_k = heads.shape
        return heads.transpose(1, 2).reshape(b, length, h * d_k)

    def output(self, t: Tensor) -> Tensor:
        """The output projection W^O."""
        return self.out_proj(t)


class Implementation(ReferenceAdapter):
    """The reference adapter over a changed reference model (see the module docstring)."""

    name = "implementation"
    SWAPS: ClassVar[dict[type[nn.Module], type[nn.Module]]] = {}
    """Reference class -> the class every such submodule of a built model becomes."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:  # NoScale -> no-scale, FFNDropout -> ffn-dropout
            cls.name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])|(?<=[a-z])(?=[0-9])",
                              "-", cls.__name__).lower()

    @classmethod
    def bug(cls) -> str:
        """The first line of the class docstring: what the implementation does."""
        return (cls.__doc__ or "").strip().splitlines()[0]

    # -- the change ---------------------------------------------------------------------------
    def patch(self, model: T.Transformer) -> nn.Module:
        """Change a freshly built reference model (default: nothing)."""
        return model

    def swapped(self, module: nn.Module) -> nn.Module:
        """``module`` with every submodule of a class in ``SWAPS`` given its new class."""
        for sub in module.modules():
            new = self.SWAPS.get(type(sub))
            if new is not None:
                sub.__class__ = new
        return module

    def attention_class(self) -> type[T.MultiHeadAttention]:
        return self.SWAPS.get(T.MultiHeadAttention, T.MultiHeadAttention)  # type: ignore[return-value]

    def model(self, config: Config) -> nn.Module:
        return self.patch(self.swapped(super().model(config)))  # type: ignore[arg-type]

    def multi_head(self, d_model: int, h: int) -> nn.Module:
        return self.swapped(T.MultiHeadAttention(d_model, h))

    def feed_forward(self, d_model: int, d_ff: int) -> nn.Module:
        return self.swapped(T.FeedForward(d_model, d_ff))

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        cls = self.attention_class()
        if not issubclass(cls, Attention):
            out, weights = T.scaled_dot_product_attention(q, k, v, mask, need_weights=True)
            assert weights is not None
            return out, weights
        one = cls(q.size(-1), 1).to(q.device, q.dtype).eval()
        return one.attend(q, k, v, mask)

    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        return self._attend(q, k, v, mask)[0]

    def attention_weights(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        return self._attend(q, k, v, mask)[1]

    # -- parameters -----------------------------------------------------------------------
    def layout(self, module: nn.Module) -> Layout:
        """Canonical name -> where and how; extended by variants that add parameters."""
        return reference_layout(module)

    def parameters(self, module: nn.Module) -> dict[str, Tensor]:
        return {n: read(resolve(module, p).detach()) for n, (p, read, _) in self.layout(module).items()}

    def load_parameters(self, module: nn.Module, params: Params) -> None:
        layout = self.layout(module)
        unknown = sorted(set(params) - set(layout))
        if unknown:
            raise KeyError(f"unknown parameters {unknown}")
        with torch.no_grad():
            for name, value in params.items():
                path, _, write = layout[name]
                write(resolve(module, path), value)

    # -- checkpoints: the changed model, rebuilt --------------------------------------------
    def save(self, model: T.Transformer, path: str | os.PathLike[str]) -> None:
        torch.save({"config": model.config.to_dict(), "state": model.state_dict()}, path)

    def load(self, path: str | os.PathLike[str]) -> nn.Module:
        payload = torch.load(path, weights_only=True)
        config = T.TransformerConfig.from_dict(payload["config"])
        model = self.patch(self.swapped(T.Transformer(config)))  # type: ignore[arg-type]
        floats = [t.dtype for t in payload["state"].values() if t.is_floating_point()]
        model = model.to(floats[0]) if floats else model
        model.load_state_dict(payload["state"])
        return model


class Mutant(Implementation):
    """A broken implementation: one bug that real from-scratch implementations make."""

    EXPECTED: ClassVar[tuple[str, ...]] = ()
    """Clauses that must report DEVIATES."""
    DIAGNOSIS: ClassVar[str | None] = None
    """The known bug (spec.diagnosis.KNOWN_BUGS) the suite must name for one of EXPECTED."""
    ERRORS: ClassVar[tuple[str, ...]] = ()
    """Clauses where the bug makes the implementation raise: ERROR is allowed there."""


class Variant(Implementation):
    """A legitimate reading of the paper: named VARIANTs, and no clause deviates."""

    VARIANTS: ClassVar[tuple[tuple[str, str], ...]] = ()
    """(clause id, variant name) pairs that must be reported as VARIANT."""
