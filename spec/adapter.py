"""The adapter protocol: the small, typed surface through which the suite sees an implementation.

An adapter is the one place that knows an implementation's names, tensor layouts and mask
conventions. The suite only ever talks to the adapter, in the paper's notation. Every capability
is optional: a method that is missing (or set to ``None``) makes the clauses that need it report
NOT PROVIDED, naming the method.

Conventions at the boundary
---------------------------
* Tensors are batch-first: ``[batch, length, features]``.
* Masks are boolean, ``True`` = may attend / is a real token. An attention mask broadcasts to
  ``[batch, L_q, L_k]``; a padding mask is ``[batch, L]``.
* Token ids are ``torch.long``.
* Modules are ``torch.nn.Module``; the suite switches them with ``.train()`` / ``.eval()``.
* Weight layouts are the paper's, applied as ``x @ W`` (rows are input features).
* Methods leave their tensor arguments unchanged (no in-place operations on them), and the
  methods that compute activations, attention weights or a loss return them in the dtype and
  on the device of their inputs. :mod:`spec.guard` checks both on every call.

Canonical parameter names
-------------------------
``parameters(module)`` returns, and ``load_parameters(module, params)`` accepts, a flat ``dict``
keyed by these names (optional entries are simply absent when an implementation has no such
parameter; their presence is how the suite recognises a named variant):

=============================  ==========================  ========================================
name                           shape                       paper
=============================  ==========================  ========================================
``W_Q``, ``W_K``               ``[h, d_model, d_k]``       W_i^Q, W_i^K (3.2.2)
``W_V``                        ``[h, d_model, d_v]``       W_i^V
``W_O``                        ``[h * d_v, d_model]``      W^O
``b_Q``, ``b_K``, ``b_V``      ``[h, d_k]``                optional: variant ``projection-biases``
``b_O``                        ``[d_model]``               optional: variant ``projection-biases``
``W_1``, ``b_1``               ``[d_model, d_ff]``, ...    Eq. 2
``W_2``, ``b_2``               ``[d_ff, d_model]``, ...    Eq. 2
``gamma``, ``beta``            ``[d_model]``               LayerNorm gain and bias
=============================  ==========================  ========================================

A whole model prefixes them: ``encoder.{i}.self_attn.*``, ``encoder.{i}.norm_1.*`` (after
self-attention), ``encoder.{i}.ffn.*``, ``encoder.{i}.norm_2.*``; ``decoder.{i}.self_attn.*``,
``decoder.{i}.norm_1.*``, ``decoder.{i}.cross_attn.*``, ``decoder.{i}.norm_2.*``,
``decoder.{i}.ffn.*``, ``decoder.{i}.norm_3.*``; optional ``encoder.norm.*`` and
``decoder.norm.*`` (variant ``final-norm``). The norm names stay the same for a pre-norm
implementation: ``norm_k`` is the norm that belongs to the k-th sub-layer, wherever it is applied.
Embeddings: ``src_embedding`` ``[src_vocab, d_model]``, ``tgt_embedding`` ``[tgt_vocab, d_model]``,
``generator.W`` ``[d_model, tgt_vocab]`` (the pre-softmax linear map), optional ``generator.b``
``[tgt_vocab]``, and optional ``src_positions`` / ``tgt_positions`` ``[max_len, d_model]``
(variant ``learned-positions``). Tied matrices appear under each of their names.

Parameters beyond the table
---------------------------
``parameters`` may return names that are not in the table (a LayerNorm on the embeddings, an
extra projection, a norm kept inside the attention module): every name it returns must
round-trip through ``load_parameters``. The suite writes distinct values to every name and
reads them back, so names the paper keeps apart must not alias (tied embeddings excepted, see
3.4). Recognised extras: ``src_embedding_norm.gamma``/``.beta`` and
``tgt_embedding_norm.gamma``/``.beta`` ``[d_model]``, a LayerNorm applied to the sum of the
embedding and the positional encoding (variant ``embedding-norm`` of 3.5/added). The suite
never compares two models through a partial copy of their weights: when it needs a second
model with the same weights it copies the whole ``state_dict`` where the two models' states
have the same keys and shapes, and the canonical parameters otherwise.

Declarations (protocol version 2)
---------------------------------
Optional attributes that say what the implementation is; each has a default that describes the
paper's model, so an adapter written for version 1 keeps working unchanged:

* ``architecture``: ``"encoder-decoder"`` (default), ``"encoder-only"`` (no decoder: the
  clauses about the decoder, cross-attention and decoding are NOT PROVIDED, with that reason)
  or ``"attention-only"`` (only attention modules: clauses about stacks and the model are NOT
  PROVIDED).
* ``outputs``: what ``project`` and ``forward`` return: ``"logits"`` (default) or
  ``"log-probs"`` (log-softmax already applied). The suite compares either after a
  log-softmax, and reads probabilities from either.
* ``not_provided``: capability name -> why it is missing (shown in the report).

Rules every method follows
--------------------------
* ``greedy(model, src, src_mask, config, max_len)`` returns ``[B, <= max_len]`` token ids
  *without* the start symbol; a row ends at its first ``config.eos_id`` (what follows is
  ignored); decoding starts from ``config.bos_id``.
* ``beam_search(model, src [1, S], src_mask, config)`` returns the best hypothesis as a list of
  ids without the start symbol, ending with ``eos_id`` unless the length limit cut it.
* ``decode_incremental(model, y, memory, src_mask)`` computes the same ``[B, T, d_model]`` as
  ``decode``, but one position at a time, feeding each step only the newest position's
  embedding and the implementation's cache; ``incremental_logits(model, src, src_mask,
  tgt_in)`` does the same from token ids to logits ``[B, T, V]`` (position and cache handled by
  the implementation, as in its own decoding loop).
* ``forward(model, src [B, S], tgt_in [B, T], src_mask [B, S]) -> [B, T, V]`` is the whole
  model as its users call it (``tgt_in`` is already shifted right); the suite checks it against
  the pieces and the oracle.
* A model the implementation cannot build (a setting it does not support) raises from
  ``model(config)``: the suite reports the setting refused, never a deviation.
* A method may raise :class:`NotProvided` for inputs it does not support (a module that only
  does self-attention, given a ``memory``): the sub-checks that need them are reported as not
  checked, and the rest of the clause is judged.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

__all__ = [
    "ENV_VAR",
    "SHIPPED",
    "Adapter",
    "AdapterError",
    "Config",
    "NotProvided",
    "capability",
    "declared",
    "load_adapter",
]

ENV_VAR = "TRANSFORMER_SPEC_IMPL"
"""Environment variable naming the implementation under test (same syntax as ``--impl``)."""

SHIPPED: dict[str, str] = {
    "reference": "spec.adapters.reference:adapter",
    "torch.nn": "spec.adapters.torch_nn:adapter",
    "hf-marian": "spec.adapters.hf_marian:adapter",  # needs the extra `matrix` (transformers)
    "hf-bart": "spec.adapters.hf_bart:adapter",  # needs the extra `matrix` (transformers)
    "hf-fsmt": "spec.adapters.hf_fsmt:adapter",  # needs the extra `matrix` (transformers)
    "x-transformers": "spec.adapters.x_transformers:adapter",  # extra `matrix` (x-transformers)
}
"""Short names for the adapters that ship with the suite."""


@dataclasses.dataclass(frozen=True)
class Config:
    """The configuration the suite asks an adapter to build a model from (paper notation).

    ``shared_vocab`` says that source and target use one vocabulary (``src_vocab ==
    tgt_vocab``), which is what three-way weight tying (3.4) needs.
    """

    src_vocab: int = 13
    tgt_vocab: int = 13
    d_model: int = 16
    h: int = 4
    d_ff: int = 32
    n_layers: int = 2
    dropout: float = 0.0
    max_len: int = 64
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    shared_vocab: bool = True

    @property
    def d_k(self) -> int:
        """d_k = d_v = d_model / h (3.2.2)."""
        return self.d_model // self.h


class NotProvided(Exception):
    """Raised when the implementation under test does not expose a capability.

    ``detail`` says what exactly is missing, or why (an adapter explains what it leaves out in
    its optional ``not_provided`` mapping, capability name -> reason).
    """

    def __init__(self, capability: str, detail: str = "", *, missing_method: bool = False) -> None:
        self.capability = capability
        if missing_method:
            message = f"the adapter does not provide `{capability}`"
            message = f"{message}: {detail}" if detail else message
        else:
            message = f"`{capability}`: {detail}" if detail else f"`{capability}` is not provided"
        super().__init__(message)


class AdapterError(Exception):
    """An adapter could not be loaded, or is not an adapter."""


@runtime_checkable
class Adapter(Protocol):
    """What the suite may call. Only ``name`` is required; every method is optional.

    Implementations usually subclass nothing: a plain class (or module) with some of these
    methods is an adapter. The suite checks each method for presence before using it.
    """

    name: str
    # not_provided: Mapping[str, str]   (optional: why each missing capability is missing)

    # -- 3.2.1 scaled dot-product attention ------------------------------------------------
    # attention(q [B,Lq,d_k], k [B,Lk,d_k], v [B,Lk,d_v], mask bool|None) -> [B,Lq,d_v]
    # attention_weights(q, k, v, mask) -> [B,Lq,Lk]                          (optional)
    # -- 3.2.2 multi-head attention ----------------------------------------------------------
    # multi_head(d_model, h) -> Module
    # multi_head_forward(module, x [B,Lq,d], memory [B,Lk,d] | None, mask) -> [B,Lq,d_model]
    #     (memory None: self-attention, Q = K = V = x; otherwise Q = x and K = V = memory)
    # -- 3.3 feed-forward ------------------------------------------------------------------
    # feed_forward(d_model, d_ff) -> Module;  feed_forward_forward(module, x) -> same shape
    # -- 3.5 positional encoding -------------------------------------------------------------
    # positional_encoding(length, d_model) -> [length, d_model] (float64 if it can)
    # -- the model ---------------------------------------------------------------------------
    # model(config) -> Module
    # parameters(module) -> dict[str, Tensor];  load_parameters(module, dict) -> None
    # embed_source(model, src ids [B,S]) -> [B,S,d];  embed_target(model, tgt ids [B,T])
    # encode(model, x [B,S,d], src_mask [B,S]) -> [B,S,d]            (the encoder stack)
    # decode(model, y [B,T,d], memory [B,S,d], src_mask [B,S]) -> [B,T,d]  (causal inside)
    # decode_incremental(model, y, memory, src_mask) -> [B,T,d]  (step by step, with a cache)
    # project(model, y [B,T,d]) -> logits [B,T,V]
    # decoder_input(tgt [B,T], bos_id) -> [B,T]    (the shifted-right decoder input)
    # -- 5.3, 5.4, 6.1 -----------------------------------------------------------------------
    # loss(logits [B,T,V], target [B,T], pad_id) -> scalar (the training loss, label smoothed)
    # lr_schedule(d_model, warmup) -> Callable[[int], float]   (learning rate at step >= 1)
    # optimizer(params) -> torch.optim.Optimizer
    # beam_search(model, src [1,S], src_mask [1,S], config) -> list[int]
    # greedy(model, src [B,S], src_mask [B,S], config, max_len) -> [B, <=max_len]
    # length_penalty(length, alpha) -> float
    # -- practice ----------------------------------------------------------------------------
    # save(model, path) -> None;  load(path) -> Module
    # -- protocol version 2 (optional) --------------------------------------------------------
    # architecture: str  ("encoder-decoder" | "encoder-only" | "attention-only")
    # outputs: str       ("logits" | "log-probs"): what project and forward return
    # forward(model, src [B,S], tgt_in [B,T], src_mask [B,S]) -> [B,T,V]
    # incremental_logits(model, src [B,S], src_mask [B,S], tgt_in [B,T]) -> [B,T,V]


Capability = Callable[..., Any]

ARCHITECTURES = ("encoder-decoder", "encoder-only", "attention-only")
"""The values of the optional ``architecture`` declaration (the paper's is the first)."""
OUTPUTS = ("logits", "log-probs")
"""The values of the optional ``outputs`` declaration (the default is the first)."""

DECLARATIONS: dict[str, tuple[str, ...]] = {"architecture": ARCHITECTURES, "outputs": OUTPUTS}


def declared(adapter: object, name: str) -> str:
    """The adapter's declaration ``name`` (see :data:`DECLARATIONS`), or its default; an
    :class:`AdapterError` naming the allowed values for anything else."""
    allowed = DECLARATIONS[name]
    value = getattr(adapter, name, None)
    if value is None:
        return allowed[0]
    if value not in allowed:
        raise AdapterError(
            f"adapter.{name} is {value!r}; it must be one of {', '.join(map(repr, allowed))}"
        )
    return str(value)


DECODER_CAPABILITIES = frozenset({
    "decode", "decode_incremental", "embed_target", "decoder_input", "beam_search", "greedy",
    "forward", "incremental_logits", "length_penalty",
})
"""What an ``encoder-only`` implementation cannot have."""
ATTENTION_CAPABILITIES = frozenset({"attention", "attention_weights", "multi_head",
                                    "multi_head_forward", "parameters", "load_parameters"})
"""What an ``attention-only`` implementation can have."""


def capability(adapter: object, name: str) -> Capability:
    """Return the adapter's method ``name``, or raise :class:`NotProvided` naming it (and the
    declared ``architecture`` when that is why it is missing)."""
    architecture = declared(adapter, "architecture")
    if (architecture == "encoder-only" and name in DECODER_CAPABILITIES) or (
        architecture == "attention-only" and name not in ATTENTION_CAPABILITIES
    ):
        raise NotProvided(name, f"the implementation is {architecture}")
    method = getattr(adapter, name, None)
    if method is None:
        reasons = getattr(adapter, "not_provided", None) or {}
        raise NotProvided(name, str(reasons.get(name, "")), missing_method=True)
    if not callable(method):
        raise AdapterError(f"adapter attribute `{name}` is not callable: {method!r}")
    return method


def load_adapter(spec: str | None = None) -> Adapter:
    """Load the adapter named by ``spec``, ``$TRANSFORMER_SPEC_IMPL``, or the reference.

    ``spec`` is a shipped short name (``reference``, ``torch.nn``) or ``module:attribute``.
    The attribute may be an adapter object, or a class or factory called without arguments.
    """
    if spec is not None and not spec.strip():
        raise AdapterError("the implementation name is empty: use one of "
                           f"{sorted(SHIPPED)} or 'module:attribute'")
    if spec is None and ENV_VAR in os.environ and not os.environ[ENV_VAR].strip():
        raise AdapterError(f"${ENV_VAR} is set but empty: unset it, or name an adapter")
    spec = spec or os.environ.get(ENV_VAR) or "reference"
    target = SHIPPED.get(spec, spec)
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise AdapterError(
            f"cannot load adapter {spec!r}: use one of {sorted(SHIPPED)} or 'module:attribute'"
        )
    try:
        module = importlib.import_module(module_name)
    except AdapterError:  # the module's own message (a missing optional extra) says it all
        raise
    except Exception as exc:  # an adapter module that fails to import must be named
        raise AdapterError(
            f"cannot import adapter module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    except SystemExit as exc:  # sys.exit() at import would end the run without a report
        raise AdapterError(
            f"cannot import adapter module {module_name!r}: it called sys.exit({exc.code!r})"
        ) from None
    try:
        obj = getattr(module, attribute)
    except AttributeError:
        raise AdapterError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if isinstance(obj, type) or (callable(obj) and not hasattr(obj, "name")):
        try:
            obj = obj()
        except Exception as exc:
            raise AdapterError(f"calling {target!r} to make the adapter failed: {exc}") from exc
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not name:
        raise AdapterError(f"{target!r} is not an adapter: it needs a non-empty `name` string")
    for declaration in DECLARATIONS:
        declared(obj, declaration)
    return obj


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter (CPU for a module without parameters)."""
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


Params = Mapping[str, Tensor]
