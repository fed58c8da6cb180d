"""Guards around the adapter's methods, so that a broken adapter is named, not misread.

Every capability a clause test takes with :meth:`spec.check.Check.require` is wrapped by
:func:`guarded`. Around each call it checks what every method of every adapter owes its caller,
whatever the clause:

* **Inputs are not modified in place.** The tensor arguments (and the tensors in ``dict``,
  ``list`` and ``tuple`` arguments, one level deep) are copied before the call and compared
  after it; a change is a DEVIATES naming the method: "adapter.attention modified its input in
  place (argument 1, q)". Without this an adapter that scales ``q`` in place would fail later
  checks with confusing numbers. Tensors that share storage with a module argument's
  parameters or buffers belong to that module (``load_parameters`` writes them) and are not
  compared.
* **Outputs keep the inputs' dtype and device.** For the methods in :data:`TENSOR_OUTPUTS`
  (those that compute activations or attention weights) the result must be a tensor with the
  dtype and device of the floating-point tensor arguments, or else of a module argument's
  parameters: "adapter.attention returned dtype torch.float32, expected torch.float64". A
  result on another device, or in another precision, would otherwise be judged with the wrong
  tolerance, or fail with an unrelated error. A loss must be a tensor on its inputs' device,
  in any floating-point precision.

A :class:`spec.timeout.Timeout` that interrupts a guarded call is labelled with the method's
name, so that the report says where the test hung.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import itertools
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .adapter import Config, NotProvided
from .timeout import Timeout
from .verdicts import Deviation

if TYPE_CHECKING:
    from .check import Check

__all__ = ["TENSOR_OUTPUTS", "ImplementationAssertion", "Refused", "guarded"]

TENSOR_OUTPUTS: dict[str, tuple[bool, bool]] = {
    "attention": (True, True),
    "attention_weights": (True, True),
    "multi_head_forward": (True, True),
    "feed_forward_forward": (True, True),
    "embed_source": (True, True),
    "embed_target": (True, True),
    "encode": (True, True),
    "decode": (True, True),
    "decode_incremental": (True, True),
    "project": (True, True),
    "loss": (False, True),
}
"""Adapter methods whose result is a tensor, and whether it must have (the dtype, the device) of
their inputs (see :mod:`spec.adapter` for the protocol). A loss may be computed in a higher
precision than the logits (the reference returns a float32 loss for bfloat16 logits): only its
device is checked."""


def guarded(check: Check, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` (the adapter's capability ``name``), checked on every call for ``check``'s
    clause: inputs unchanged, and for :data:`TENSOR_OUTPUTS` the output's dtype and device."""

    try:
        signature: inspect.Signature | None = inspect.signature(method)
    except (TypeError, ValueError):  # some builtins have none
        signature = None

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        arguments = _arguments(signature, args, kwargs)
        before = _snapshot(arguments)
        try:
            result = method(*args, **kwargs)
        except Timeout as timeout:
            timeout.where = timeout.where or f"adapter.{name}"
            raise
        except (NotProvided, Deviation):  # the suite's own outcomes, from a nested call
            raise
        except Exception as exc:
            if name == "model":
                _refused(method, args, exc)
            if isinstance(exc, AssertionError):  # the implementation's assert, not a verdict
                raise ImplementationAssertion(f"AssertionError in adapter.{name}: {exc}") from exc
            raise
        for label, tensor, copy in before:
            if not _unchanged(copy, tensor):
                check.deviates(f"adapter.{name} modified its input in place ({label})")
        if name in TENSOR_OUTPUTS:
            placement = _placement(arguments)
            if placement is not None:
                same_dtype, same_device = TENSOR_OUTPUTS[name]
                dtype, device = placement
                check.expect_tensor(
                    result,
                    f"adapter.{name}",
                    dtype=dtype if same_dtype else None,
                    device=device if same_device else None,
                )
        return result

    return call


class ImplementationAssertion(Exception):
    """An ``assert`` of the implementation (or its adapter) failed inside an adapter call: the
    implementation's own check, never read as the suite's (a DEVIATES); the clause is ERROR."""


class Refused(NotProvided):
    """``model(config)`` raised for a configuration the suite asked for, and the same adapter
    builds the suite's default configuration: the implementation does not support a setting.
    The clause reports which settings differ from the default (NOT PROVIDED), never a deviation."""


def _refused(method: Callable[..., Any], args: tuple[Any, ...], exc: BaseException) -> None:
    """Raise :class:`Refused` if ``model(config)`` failed on a config that differs from the
    default one the same method builds; return (the caller re-raises) otherwise."""
    config = args[0] if args else None
    if not isinstance(config, Config) or config == Config():
        return
    try:
        method(Config())
    except Exception:  # the default fails too: the adapter is broken, not refusing a setting
        return
    default = Config()
    settings = ", ".join(
        f"{f.name}={getattr(config, f.name)!r}"
        for f in dataclasses.fields(Config)
        if getattr(config, f.name) != getattr(default, f.name)
    )
    raise Refused(
        "model", f"the implementation refused the configuration {settings} "
        f"({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''})"
    ) from exc


def _arguments(
    signature: inspect.Signature | None, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> list[tuple[str, Any]]:
    """(label, value) for each argument: its parameter's name where the signature says."""
    if signature is not None:
        try:
            return [
                (f"argument `{k}`", v) for k, v in signature.bind(*args, **kwargs).arguments.items()
            ]
        except TypeError:  # the call does not fit the signature: the method will say so
            pass
    return [(f"argument {i}", v) for i, v in enumerate(args)] + [
        (f"argument `{k}`", v) for k, v in kwargs.items()
    ]


def _tensors(label: str, value: Any) -> Iterator[tuple[str, Tensor]]:
    """``value`` if it is a tensor, or the tensors inside it one level deep, labelled."""
    if isinstance(value, Tensor):
        yield label, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(item, Tensor):
                yield f"{label}[{key!r}]", item
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            if isinstance(item, Tensor):
                yield f"{label}[{i}]", item


def _storage(t: Tensor) -> int | None:
    try:
        return int(t.untyped_storage().data_ptr())
    except (RuntimeError, NotImplementedError):  # sparse and other storage-less tensors
        return None


def _snapshot(arguments: list[tuple[str, Any]]) -> list[tuple[str, Tensor, Tensor]]:
    """(label, tensor, copy) for each tensor argument whose values can be read."""
    modules = [v for _, v in arguments if isinstance(v, nn.Module)]
    owned = {
        _storage(t)
        for m in modules
        for t in itertools.chain(m.parameters(), m.buffers())
        if t.device.type != "meta"
    }
    out = []
    for label, value in arguments:
        for where, t in _tensors(label, value):
            if t.device.type == "meta" or t.layout != torch.strided:
                continue
            if owned and _storage(t) in owned:
                continue
            out.append((where, t, t.detach().clone()))
    return out


def _unchanged(copy: Tensor, now: Tensor) -> bool:
    """Whether ``now`` still holds what ``copy`` holds (NaN equal to NaN)."""
    if now.shape != copy.shape or now.dtype != copy.dtype or now.device != copy.device:
        return False
    now = now.detach()
    if now.is_floating_point() or now.is_complex():
        same = (now == copy) | (now.isnan() & copy.isnan())
        return bool(same.all())
    return bool(torch.equal(now, copy))


def _placement(arguments: list[tuple[str, Any]]) -> tuple[torch.dtype, torch.device] | None:
    """The dtype and device a result must have: those of the floating-point tensor arguments
    (when they agree), else of the first module argument's floating-point parameters; ``None``
    when neither says."""
    values = [v for _, v in arguments]
    floats = {
        (v.dtype, v.device) for v in values if isinstance(v, Tensor) and v.is_floating_point()
    }
    if floats:
        return floats.pop() if len(floats) == 1 else None
    for module in (v for v in values if isinstance(v, nn.Module)):
        for t in itertools.chain(module.parameters(), module.buffers()):
            if t.is_floating_point():
                return t.dtype, t.device
    return None
