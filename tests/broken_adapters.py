"""A corpus of broken adapters: each is the reference adapter with one thing broken.

Users point the suite at half-written code. tests/test_reliability.py runs the suite against
each of these (``--impl broken_adapters:NAME``) and checks that the run finishes, writes its
report, names the problem in the clauses it affects and leaves every other clause as the
reference's. ``CORPUS`` lists them with what they break.
"""

from __future__ import annotations

import math
import sys
import time

import torch
import torch.nn.functional as F
from torch import Tensor

import transformer as T
from spec.adapter import Config
from spec.adapters.reference import ReferenceAdapter


class MissingAttention(ReferenceAdapter):
    """A capability missing: no ``attention`` (nor ``attention_weights``)."""

    name = "missing-attention"
    attention = None  # type: ignore[assignment]
    attention_weights = None  # type: ignore[assignment]
    not_provided = {"attention": "not written yet"}  # noqa: RUF012


class RaisingFeedForward(ReferenceAdapter):
    """A capability that raises."""

    name = "raising-feed-forward"

    def feed_forward_forward(self, module: torch.nn.Module, x: Tensor) -> Tensor:
        raise RuntimeError("feed-forward exploded")


class Exits(ReferenceAdapter):
    """A capability that calls ``sys.exit``: must not end the run."""

    name = "exits"

    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        sys.exit(3)


class ReturnsNone(ReferenceAdapter):
    """``attention`` forgets its ``return``."""

    name = "returns-none"

    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        super().attention(q, k, v, mask)
        return None  # type: ignore[return-value]


class WrongShape(ReferenceAdapter):
    """``attention`` drops the last value feature: [B, L_q, d_v - 1]."""

    name = "wrong-shape"

    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        return super().attention(q, k, v, mask)[..., :-1]


class WrongDtype(ReferenceAdapter):
    """``attention`` returns float32 whatever its inputs."""

    name = "wrong-dtype"

    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        return super().attention(q, k, v, mask).float()


class WrongDevice(ReferenceAdapter):
    """``attention`` returns its result on another device (``meta`` stands for one on a
    CPU-only machine)."""

    name = "wrong-device"

    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        return super().attention(q, k, v, mask).to("meta")


class NaNAttention(ReferenceAdapter):
    """``attention`` puts a NaN in the first entry of every output."""

    name = "nan-attention"

    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        out = super().attention(q, k, v, mask).clone()
        out[:, 0, 0] = math.nan
        return out


class InfFeedForward(ReferenceAdapter):
    """The FFN overflows to +Inf in the first feature."""

    name = "inf-feed-forward"

    def feed_forward_forward(self, module: torch.nn.Module, x: Tensor) -> Tensor:
        out = super().feed_forward_forward(module, x).clone()
        out[..., 0] = math.inf
        return out


class DropoutInEval(ReferenceAdapter):
    """Functional dropout that ignores the mode (``F.dropout``'s ``training=True`` default):
    the source embeddings are random in evaluation mode too."""

    name = "dropout-in-eval"

    def embed_source(self, model: T.Transformer, src: Tensor) -> Tensor:
        return F.dropout(super().embed_source(model, src), 0.1)


class ModifiesInput(ReferenceAdapter):
    """``attention`` scales ``q`` in place (``q /= sqrt(d_k)``): the result is right, the
    caller's tensor is not."""

    name = "modifies-input"

    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        q /= math.sqrt(q.size(-1))
        w = q @ k.transpose(-2, -1)
        if mask is not None:
            w = w.masked_fill(~mask, -math.inf)
        return w.softmax(-1) @ v


class Sleeps(ReferenceAdapter):
    """``attention`` hangs (sleeps an hour) when it is given a mask."""

    name = "sleeps"

    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        if mask is not None:
            time.sleep(3600)
        return super().attention(q, k, v, mask)


class Spins(ReferenceAdapter):
    """``attention_weights`` loops forever, and swallows ``Exception`` while it does."""

    name = "spins"

    def attention_weights(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        n = 0
        while True:
            try:  # noqa: SIM105  (the point: it swallows exceptions)
                n += 1
            except Exception:
                pass


class LeaksGlobalState(ReferenceAdapter):
    """``attention`` changes torch's global state: default dtype, grad mode, RNG, threads,
    deterministic algorithms."""

    name = "leaks-global-state"

    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        torch.set_default_dtype(torch.float64)
        torch.set_grad_enabled(False)
        torch.manual_seed(0)
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True, warn_only=True)
        return super().attention(q, k, v, mask)


class RefusesFullDropout(ReferenceAdapter):
    """The implementation asserts ``dropout < 1`` when it is built (its own check): the
    settings it refuses are reported, not taken for a deviation."""

    name = "refuses-full-dropout"

    def model(self, config: Config) -> T.Transformer:
        assert config.dropout < 1, "dropout must be < 1"
        return super().model(config)


class AssertingFeedForward(ReferenceAdapter):
    """An ``assert`` of the implementation fails inside ``feed_forward_forward``: ERROR naming
    the method, not a DEVIATES."""

    name = "asserting-feed-forward"

    def feed_forward_forward(self, module: torch.nn.Module, x: Tensor) -> Tensor:
        assert x.shape[1] > 99, "sequences must be long"
        return super().feed_forward_forward(module, x)


class ForwardIgnoresPadding(ReferenceAdapter):
    """The whole-model ``forward`` (protocol version 2) drops the source padding mask, while
    the pieces take it: a bug that lives only in ``forward``."""

    name = "forward-ignores-padding"

    def forward(self, model: T.Transformer, src: Tensor, tgt_in: Tensor, src_mask: Tensor) -> Tensor:
        everything = torch.ones_like(src_mask)
        memory = self.encode(model, self.embed_source(model, src), everything)
        return self.project(model, self.decode(model, self.embed_target(model, tgt_in), memory,
                                               everything))


class BadDeclaration(ReferenceAdapter):
    """``architecture`` says something the protocol does not know: the run stops at once."""

    name = "bad-declaration"
    architecture = "decoder-only"


CORPUS = {
    "MissingAttention": "a capability missing",
    "RaisingFeedForward": "a capability raises",
    "Exits": "a capability calls sys.exit",
    "ReturnsNone": "a capability returns None",
    "WrongShape": "wrong output shape",
    "WrongDtype": "wrong output dtype",
    "WrongDevice": "output on the wrong device",
    "NaNAttention": "NaN in the output",
    "InfFeedForward": "Inf in the output",
    "DropoutInEval": "non-deterministic in evaluation mode",
    "ModifiesInput": "inputs modified in place",
    "Sleeps": "hangs in time.sleep",
    "Spins": "hangs in a Python loop",
    "LeaksGlobalState": "changes torch's global state",
    "RefusesFullDropout": "the implementation refuses a setting",
    "AssertingFeedForward": "an assert of the implementation fails",
    "ForwardIgnoresPadding": "a bug only in the whole-model forward",
}
"""Adapter class name -> what it breaks."""
