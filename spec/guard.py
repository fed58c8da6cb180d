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

import contextlib
import dataclasses
import functools
import inspect
import itertools
import os
import signal
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from . import timeout
from .adapter import Config, NotProvided
from .timeout import Timeout
from .verdicts import Deviation

if TYPE_CHECKING:
    from .check import Check

__all__ = [
    "TENSOR_OUTPUTS", "ImplementationAssertion", "ImplementationError", "Refused", "guarded",
    "interrupts",
]

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

    signature = _signature(method)
    returned: list[tuple[weakref.ref[Tensor], int, complex]] = []  # earlier results, for reuse

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        arguments = _arguments(signature, args, kwargs)
        before = _snapshot(arguments)
        try:
            result = method(*args, **kwargs)
            timeout.check()  # a Timeout the method caught and swallowed
        except RecursionError:  # its depth varies from call to call: named, so it reads the same
            raise ImplementationError(f"adapter.{name} recursed without end (RecursionError)"
                                      ) from None
        except Timeout as stopped:
            stopped.where = stopped.where or f"adapter.{name}"
            raise
        except (NotProvided, Deviation):  # the suite's own outcomes, from a nested call
            raise
        except KeyboardInterrupt:
            if interrupts.by_user:  # Ctrl-C: the run stops, and its report says so
                raise
            raise ImplementationError(f"adapter.{name} raised KeyboardInterrupt") from None
        except Exception as exc:
            if name == "model":
                _refused(method, args, exc)
            if isinstance(exc, AssertionError):  # the implementation's assert, not a verdict
                raise ImplementationAssertion(f"AssertionError in adapter.{name}: {exc}") from exc
            raise
        if os.getpid() != interrupts.pid:  # a process the method forked: it must not run on
            os._exit(0)  # through the rest of the session (the parent reports the clause)
        changed = [(label, t) for label, t, copy in before if not _unchanged(copy, t)]
        if changed:
            owned = _owned(arguments)  # a module's own tensors may change (load, a training step)
            for label, tensor in changed:
                if _storage(tensor) not in owned:
                    check.deviates(f"adapter.{name} modified its input in place ({label})")
        _check_return(name, result)
        if isinstance(result, Tensor) and name in TENSOR_OUTPUTS:
            _check_not_reused(name, result, arguments, returned)
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


def _is_tensor(value: object) -> bool:
    return isinstance(value, Tensor)


def _is_ids(value: object) -> bool:
    if isinstance(value, Tensor):
        return value.dim() == 1 and not value.is_floating_point()
    return isinstance(value, (list, tuple)) and all(
        isinstance(t, int) and not isinstance(t, bool) for t in value)


def _is_number(value: object) -> bool:
    if isinstance(value, Tensor):
        return value.numel() == 1
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_parameters(value: object) -> bool:
    return isinstance(value, Mapping) and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in value.items())


RETURNS: dict[str, tuple[Callable[[object], bool], str]] = {
    "model": (lambda v: isinstance(v, nn.Module), "a torch.nn.Module"),
    "load": (lambda v: isinstance(v, nn.Module), "a torch.nn.Module"),
    "multi_head": (lambda v: isinstance(v, nn.Module), "a torch.nn.Module"),
    "feed_forward": (lambda v: isinstance(v, nn.Module), "a torch.nn.Module"),
    "parameters": (_is_parameters, "a dict of canonical name -> Tensor"),
    "positional_encoding": (_is_tensor, "a tensor [length, d_model]"),
    "decoder_input": (_is_tensor, "a tensor of ids [B, T]"),
    "greedy": (_is_tensor, "a tensor of ids [B, <= max_len]"),
    "forward": (_is_tensor, "a tensor of logits [B, T, V]"),
    "incremental_logits": (_is_tensor, "a tensor of logits [B, T, V]"),
    "beam_search": (_is_ids, "a list of int token ids"),
    "length_penalty": (_is_number, "a number"),
    "lr_schedule": (callable, "a function of the step"),
    "optimizer": (lambda v: isinstance(v, torch.optim.Optimizer), "a torch.optim.Optimizer"),
}
"""What each adapter method must return (see :mod:`spec.adapter`), beyond the tensors of
:data:`TENSOR_OUTPUTS`: anything else is an ERROR naming the method, not a confusing failure
wherever the suite first uses the value."""


def _check_return(name: str, result: object) -> None:
    if name in RETURNS and not RETURNS[name][0](result):
        raise ImplementationError(f"adapter.{name} returned {type(result).__name__}, expected "
                                  f"{RETURNS[name][1]}")


def _check_not_reused(name: str, result: Tensor, arguments: list[tuple[str, Any]],
                      returned: list[tuple[weakref.ref[Tensor], int, complex]]) -> None:
    """ERROR if ``result`` is the memory of an earlier result of the same method, still held by
    the caller, whose values it has overwritten (an output buffer reused across calls): every
    earlier result would silently change under the suite. A result that is one of the call's
    inputs, or equal to the earlier one, is fine."""
    where = _storage(result)
    if where is None or result.device.type == "meta" or result.layout != torch.strided:
        return
    inputs: set[int | None] | None = None  # the arguments' storages, gathered when needed
    for ref, pointer, fingerprint in returned:
        earlier = ref()
        if earlier is None or pointer != where:
            continue
        if inputs is None:
            inputs = {_storage(t) for label, value in arguments for _, t in _tensors(label, value)}
        if where not in inputs and _fingerprint(earlier) != fingerprint:
            raise ImplementationError(
                f"adapter.{name} returned the memory of an earlier result again, overwriting "
                "it (an output buffer reused across calls): return a new tensor each call")
    returned[:] = [r for r in returned if r[0]() is not None][-7:]
    returned.append((weakref.ref(result), where, _fingerprint(result)))


def _fingerprint(t: Tensor) -> complex:
    """A cheap summary of a tensor's values (their sum, and their sum weighted by position)."""
    flat = t.detach().reshape(-1).to(torch.float64)
    weights = torch.arange(1, flat.numel() + 1, dtype=torch.float64, device=flat.device)
    return complex(float(flat.nan_to_num().sum()), float((flat.nan_to_num() * weights).sum()))


class ImplementationError(Exception):
    """Something an adapter method must not do, which would otherwise end or derail the run (a
    ``KeyboardInterrupt`` it raised itself): ERROR for the clause, naming the method."""


class _Interrupts:
    """Tells a Ctrl-C (a real ``SIGINT``, which stops the run) from a ``KeyboardInterrupt`` an
    implementation raises (an ERROR of the clause); and which process is the session's."""

    def __init__(self) -> None:
        self.by_user = False
        self.pid = os.getpid()

    def handler(self, signum: int, frame: object) -> None:
        self.by_user = True
        raise KeyboardInterrupt

    def install(self) -> Callable[[], None]:
        """Handle ``SIGINT`` (in the main thread, where Python handles signals); returns what
        restores the previous handler."""
        self.pid = os.getpid()
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = signal.signal(signal.SIGINT, self.handler)

        def restore() -> None:
            signal.signal(signal.SIGINT, previous)

        return restore


interrupts = _Interrupts()


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


_SIGNATURES: dict[bool, weakref.WeakKeyDictionary[Any, inspect.Signature | None]] = {
    True: weakref.WeakKeyDictionary(),  # a bound method's function -> the method's signature
    False: weakref.WeakKeyDictionary(),  # any other callable -> its signature
}


def _signature(method: Callable[..., Any]) -> inspect.Signature | None:
    """``inspect.signature(method)`` (None where there is none, as for some builtins), worked out
    once per function: a clause asks for the same few methods hundreds of times per run."""
    bound = inspect.ismethod(method)
    cache, key = _SIGNATURES[bound], method.__func__ if bound else method  # type: ignore[attr-defined]
    with contextlib.suppress(KeyError, TypeError):  # TypeError: no weak reference to it
        return cache[key]
    try:
        signature: inspect.Signature | None = inspect.signature(method)
    except (TypeError, ValueError):
        signature = None
    with contextlib.suppress(TypeError):
        cache[key] = signature
    return signature


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
    out = []
    for label, value in arguments:
        for where, t in _tensors(label, value):
            if t.device.type != "meta" and t.layout == torch.strided:
                out.append((where, t, t.detach().clone()))
    return out


def _owned(arguments: list[tuple[str, Any]]) -> set[int | None]:
    """The storages of the parameters and buffers of the module arguments (computed only when an
    argument changed: walking a model's tensors on every call costs more than the call)."""
    modules = [v for _, v in arguments if isinstance(v, nn.Module)]
    return {
        _storage(t)
        for m in modules
        for t in itertools.chain(m.parameters(), m.buffers())
        if t.device.type != "meta"
    } - {None}


def _unchanged(copy: Tensor, now: Tensor) -> bool:
    """Whether ``now`` still holds what ``copy`` holds (NaN equal to NaN)."""
    if now.shape != copy.shape or now.dtype != copy.dtype or now.device != copy.device:
        return False
    now = now.detach()
    if torch.equal(now, copy):  # the common case, in one operation (False when a NaN is there)
        return True
    if not (now.is_floating_point() or now.is_complex()):
        return False
    return bool(((now == copy) | (now.isnan() & copy.isnan())).all())


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
