"""The adapter protocol: the small, typed surface through which the suite sees an implementation.

An adapter is the one place that knows an implementation's names, tensor layouts and mask
conventions. The suite only ever talks to the adapter, in the paper's notation. Every capability
is optional: a method that is missing (or set to ``None``) makes the clauses that need it report
NOT PROVIDED, naming the method.

The methods the suite may call are listed in [`METHODS`][spec.adapter.METHODS] (their
arguments with shapes, what they return, their rules), the optional declarations in
[`ATTRIBUTES`][spec.adapter.ATTRIBUTES]. The documentation's page
[The adapter protocol][adapter-protocol] is generated from them and from this docstring, with
the clauses that use each method.

Conventions at the boundary
---------------------------
* Tensors are batch-first: ``[batch, length, features]``.
* Masks are boolean, ``True`` = may attend / is a real token. An attention mask broadcasts to
  ``[batch, L_q, L_k]``; a padding mask is ``[batch, L]``.
* Padding is at the end: a padding mask is ``True`` on a prefix of each row, and padded token
  ids (in sources, targets and decoder inputs) are ``pad_id``. The masks given to
  ``attention`` and ``multi_head_forward`` may hide any pattern of keys: an implementation that
  masks by key lengths raises [`NotProvided`][spec.adapter.NotProvided] for the others.
* Token ids are ``torch.long``.
* Models are built from a [`Config`][spec.adapter.Config]: the vocabulary sizes, ``d_model``,
  ``h``, ``d_ff``, ``n_layers`` (N), ``dropout`` (P_drop), ``max_len`` and the ids of the
  padding, start and end symbols.
* Modules are ``torch.nn.Module``; the suite moves them to its device and dtype with ``.to()``
  and switches them with ``.train()`` / ``.eval()``.
* Weight layouts are the paper's, applied as ``x @ W`` (rows are input features).
* Methods leave their tensor arguments unchanged (no in-place operations on them), and the
  methods that compute activations, attention weights or a loss return them in the dtype and
  on the device of their inputs. [`spec.guard`][spec.guard] checks both on every call.
* A method may raise [`NotProvided`][spec.adapter.NotProvided] for inputs it does not support
  (a module that only does self-attention, given a ``memory``): the sub-checks that need them
  are reported as not checked, and the rest of the clause is judged.

Canonical parameter names
-------------------------
``parameters(module)`` returns, and ``load_parameters(module, params)`` accepts, a flat ``dict``
keyed by these names (optional entries are simply absent when an implementation has no such
parameter; their presence is how the suite recognises a named variant):

| name | shape | paper |
|---|---|---|
| ``W_Q``, ``W_K`` | ``[h, d_model, d_k]`` | W_i^Q, W_i^K (3.2.2) |
| ``W_V`` | ``[h, d_model, d_v]`` | W_i^V |
| ``W_O`` | ``[h * d_v, d_model]`` | W^O |
| ``b_Q``, ``b_K``, ``b_V`` | ``[h, d_k]`` | optional: variant ``projection-biases`` |
| ``b_O`` | ``[d_model]`` | optional: variant ``projection-biases`` |
| ``W_1``, ``b_1`` | ``[d_model, d_ff]``, ``[d_ff]`` | Eq. 2 |
| ``W_2``, ``b_2`` | ``[d_ff, d_model]``, ``[d_model]`` | Eq. 2 |
| ``gamma``, ``beta`` | ``[d_model]`` | LayerNorm gain and bias |

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
    "ATTRIBUTES",
    "ENV_VAR",
    "METHODS",
    "SHIPPED",
    "Adapter",
    "AdapterError",
    "Attribute",
    "Config",
    "Method",
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
    """Source vocabulary size."""
    tgt_vocab: int = 13
    """Target vocabulary size (`V`)."""
    d_model: int = 16
    """The model width, d_model."""
    h: int = 4
    """The number of attention heads."""
    d_ff: int = 32
    """The inner width of the feed-forward network (3.3)."""
    n_layers: int = 2
    """`N`, the number of layers in each stack (3.1)."""
    dropout: float = 0.0
    """`P_drop` (5.4)."""
    max_len: int = 64
    """The longest sequence the model must handle (the size of a positional table)."""
    pad_id: int = 0
    """The padding token id: padded positions are hidden and add nothing to the loss."""
    bos_id: int = 1
    """The start symbol, first in the decoder input."""
    eos_id: int = 2
    """The end symbol that ends a decoded sequence."""
    shared_vocab: bool = True
    """Source and target share one vocabulary."""

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

    Implementations usually subclass nothing: a plain class (or module) with some of the
    methods of [`METHODS`][spec.adapter.METHODS] is an adapter, and
    [`ATTRIBUTES`][spec.adapter.ATTRIBUTES] lists what it may declare besides its ``name``.
    The suite checks each method for presence before using it.
    """

    name: str


@dataclasses.dataclass(frozen=True)
class Method:
    """One method of the adapter protocol: its arguments, what it returns, its rules.

    ``arguments`` holds one ``(name, type and shape, meaning)`` triple per argument, in call
    order; ``returns`` the type and shape of the result; ``does`` what the method computes,
    ``rules`` what else the suite relies on (Markdown, in the paper's notation: ``B`` batch,
    ``S`` / ``T`` source / target length, ``L_q`` / ``L_k`` query / key length, ``V`` target
    vocabulary). ``group`` is the heading the method is listed under; ``version`` the protocol
    version that added it.
    """

    name: str
    group: str
    arguments: tuple[tuple[str, str, str], ...]
    returns: str
    does: str
    rules: tuple[str, ...] = ()
    version: int = 1

    @property
    def signature(self) -> str:
        """How the suite calls the method: ``attention(q, k, v, mask)``."""
        return f"{self.name}({', '.join(name for name, _, _ in self.arguments)})"


_ATTENTION = "Scaled dot-product attention (3.2.1)"
_MODULES = "Multi-head attention, feed-forward network, positional encoding (3.2.2, 3.3, 3.5)"
_MODEL = "The model and its weights"
_PIECES = "The model's pieces (3.1, 3.4, 3.5)"
_DECODING = "Decoding (6.1 and practice)"
_TRAINING = "Training (5.3, 5.4)"
_CHECKPOINTS = "Checkpoints"

_MASK = ("mask", "bool tensor broadcastable to `[B, L_q, L_k]`, or `None`",
         "`True` = the query may attend to the key; `None`: every query attends to every key")
_QKV = (
    ("q", "tensor `[B, L_q, d_k]`", "queries"),
    ("k", "tensor `[B, L_k, d_k]`", "keys"),
    ("v", "tensor `[B, L_k, d_v]`", "values (`d_v` may differ from `d_k`)"),
    _MASK,
)
_MODEL_ARG = ("model", "`torch.nn.Module`", "a model from `model(config)`")
_SRC = ("src", "long tensor `[B, S]`", "source token ids")
_SRC_MASK = ("src_mask", "bool tensor `[B, S]`", "`True` = a real source token, `False` = padding")
_TGT_IN = ("tgt_in", "long tensor `[B, T]`",
           "the decoder input: the target already shifted right, starting with `bos_id`")
_Y = ("y", "tensor `[B, T, d_model]`", "the embedded decoder input (from `embed_target`)")
_MEMORY = ("memory", "tensor `[B, S, d_model]`", "the encoder output")
_CONFIG = ("config", "[`Config`][spec.adapter.Config]", "the model's configuration")

_METHODS = (
    Method(
        "attention", _ATTENTION, _QKV, "tensor `[B, L_q, d_v]`",
        "Scaled dot-product attention, Eq. 1: `softmax(Q K^T / sqrt(d_k)) V`, with no "
        "projection.",
        ("A masked connection gets weight exactly 0, as if its score were -infinity: the keys and "
         "values behind the mask must not change the output.",
         "The suite's masks leave every query at least one key it may attend to.",
         "An implementation without an attention function of its own (one that calls "
         "`torch.nn.MultiheadAttention`, say) leaves it out, or returns the library's, which is "
         "then what 3.2.1 judges."),
    ),
    Method(
        "attention_weights", _ATTENTION, _QKV, "tensor `[B, L_q, L_k]`",
        "The attention weights `softmax(Q K^T / sqrt(d_k))` of the same computation: for each "
        "query, non-negative and summing to 1 over the keys.",
        ("Optional even where `attention` exists: without it the suite reads the weights as "
         "`attention(q, k, I, None)` (the identity as values).",),
    ),
    Method(
        "multi_head", _MODULES,
        (("d_model", "int", "the model width"),
         ("h", "int", "the number of heads; `d_k = d_v = d_model / h`")),
        "`torch.nn.Module`",
        "A fresh multi-head attention module (3.2.2).",
        ("The suite moves the module to its device and dtype and switches it to evaluation "
         "mode; it reads and writes its weights with `parameters` and `load_parameters` "
         "(`W_Q`, `W_K`, `W_V`, `W_O`, and the biases `b_Q`, ... where it has them).",),
    ),
    Method(
        "multi_head_forward", _MODULES,
        (("module", "`torch.nn.Module`", "a module from `multi_head`"),
         ("x", "tensor `[B, L_q, d_model]`", "the queries' input"),
         ("memory", "tensor `[B, L_k, d_model]`, or `None`",
          "`None`: self-attention, `Q = K = V = x`; otherwise `Q = x` and `K = V = memory`"),
         _MASK),
        "tensor `[B, L_q, d_model]`",
        "`MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O` with "
        "`head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)` (3.2.2).",
        ("With `mask=None` no mask applies: no causal mask of its own, in self-attention or "
         "over a memory.",
         "A module that only does self-attention raises [`NotProvided`][spec.adapter.NotProvided] "
         "when given a `memory`: the cross-attention sub-checks are then not checked."),
    ),
    Method(
        "feed_forward", _MODULES,
        (("d_model", "int", "input and output width"), ("d_ff", "int", "inner width")),
        "`torch.nn.Module`",
        "A fresh position-wise feed-forward network (3.3): "
        "`FFN(x) = max(0, x W_1 + b_1) W_2 + b_2`.",
        ("Its weights are read and written as `W_1`, `b_1`, `W_2`, `b_2`.",),
    ),
    Method(
        "feed_forward_forward", _MODULES,
        (("module", "`torch.nn.Module`", "a module from `feed_forward`"),
         ("x", "tensor `[B, L, d_model]`", "the input")),
        "tensor `[B, L, d_model]`",
        "The feed-forward network applied to each position of `x`.",
    ),
    Method(
        "positional_encoding", _MODULES,
        (("length", "int", "number of positions"), ("d_model", "int", "the model width")),
        "tensor `[length, d_model]`",
        "The sinusoidal table of 3.5: `PE(pos, 2i) = sin(pos / 10000^(2i / d_model))`, "
        "`PE(pos, 2i + 1) = cos(pos / 10000^(2i / d_model))`.",
        ("Returned in float64 where the implementation can compute it there: the table is "
         "judged at the tolerance of the dtype it comes in.",
         "An implementation with learned positions has none (it returns `src_positions` / "
         "`tgt_positions` from `parameters`: variant `learned-positions`)."),
    ),
    Method(
        "model", _MODEL, (_CONFIG,), "`torch.nn.Module`",
        "A fresh model of the configuration, in the paper's notation (`N` = `n_layers`, "
        "`P_drop` = `dropout`).",
        ("The suite moves the model to its device and dtype with `.to()` and switches "
         "`.train()` / `.eval()` itself.",
         "A configuration the implementation does not support (`dropout=1.0`, say) raises "
         "any exception from "
         "`model(config)`: while the default `Config()` builds, the clause reports the refused "
         "setting as NOT PROVIDED, never a deviation."),
    ),
    Method(
        "parameters", _MODEL,
        (("module", "`torch.nn.Module`",
          "a model, or a module from `multi_head` / `feed_forward`"),),
        "`dict[str, Tensor]`",
        "The module's weights under their canonical names and shapes, in the paper's layout "
        "(see the table of canonical parameter names).",
        ("Names the implementation has no parameter for are left out, never returned as zeros.",
         "Every name returned, canonical or extra, round-trips through `load_parameters`."),
    ),
    Method(
        "load_parameters", _MODEL,
        (("module", "`torch.nn.Module`", "as for `parameters`"),
         ("params", "`Mapping[str, Tensor]`",
          "canonical names (and the extras `parameters` returns) -> values, on the module's "
          "device and dtype")),
        "`None`",
        "Write `params` into the module, in the layout `parameters` reads.",
        ("The suite loads distinct random values into every name and reads them back: names "
         "the paper keeps apart must not alias (tied embeddings excepted: of tied names, the "
         "one written last wins).",
         "Without it the suite judges the module's own initial weights, as `parameters` reads "
         "them."),
    ),
    Method(
        "embed_source", _PIECES, (_MODEL_ARG, _SRC), "tensor `[B, S, d_model]`",
        "The bottom of the encoder: the token embeddings multiplied by `sqrt(d_model)` (3.4) "
        "plus the positional encoding (3.5), with dropout in training mode (5.4).",
    ),
    Method(
        "embed_target", _PIECES,
        (_MODEL_ARG, ("tgt", "long tensor `[B, T]`", "decoder input token ids")),
        "tensor `[B, T, d_model]`",
        "The bottom of the decoder, as `embed_source` for the target vocabulary.",
    ),
    Method(
        "encode", _PIECES,
        (_MODEL_ARG, ("x", "tensor `[B, S, d_model]`", "the embedded source"), _SRC_MASK),
        "tensor `[B, S, d_model]`",
        "The encoder stack (3.1): its `N` layers on the embedded source; self-attention hides "
        "the padded positions.",
        ("Whatever stands at padding positions changes nothing at real positions.",),
    ),
    Method(
        "decode", _PIECES, (_MODEL_ARG, _Y, _MEMORY, _SRC_MASK), "tensor `[B, T, d_model]`",
        "The decoder stack (3.1): masked self-attention (the causal mask is applied inside: "
        "position `i` attends to positions `<= i`), attention over `memory` (hiding padded "
        "source positions) and the feed-forward network, in each of its `N` layers.",
    ),
    Method(
        "project", _PIECES,
        (_MODEL_ARG, ("y", "tensor `[..., d_model]`", "decoder outputs")),
        "tensor `[..., V]`",
        "The pre-softmax linear map (3.4): `y @ generator.W` (`+ generator.b`), the logits; "
        "log-probabilities instead where the adapter declares `outputs = \"log-probs\"`.",
        ("Called on `[B, T, d_model]` and on `[B, d_model]` (the last position only, in beam "
         "search).",),
    ),
    Method(
        "decoder_input", _PIECES,
        (("tgt", "long tensor `[B, T]`", "target token ids"),
         ("bos_id", "int", "the start symbol")),
        "long tensor `[B, T]`",
        "The decoder input for `tgt` in training: shifted one position right, `bos_id` "
        "first, the last token dropped (3.1).",
        ("Without it the suite shifts the target itself, as the paper does.",),
    ),
    Method(
        "forward", _PIECES, (_MODEL_ARG, _SRC, _TGT_IN, _SRC_MASK), "tensor `[B, T, V]`",
        "The whole model as its users call it: embed, encode, decode and project in one call.",
        ("Where it exists the suite takes the model's logits from it rather than from the "
         "pieces, and checks that both agree.",
         "Logits, or log-probabilities where the adapter declares `outputs = \"log-probs\"`."),
        version=2,
    ),
    Method(
        "decode_incremental", _DECODING, (_MODEL_ARG, _Y, _MEMORY, _SRC_MASK),
        "tensor `[B, T, d_model]`",
        "What `decode` computes, one position at a time: each step is fed only the newest "
        "position's embedding `y[:, t : t + 1]` and the implementation's cache.",
        ("For an implementation with a cache of keys and values (or of states). One that "
         "decodes by running the whole prefix again at every step has nothing to check here "
         "and leaves this and `incremental_logits` out.",),
    ),
    Method(
        "incremental_logits", _DECODING, (_MODEL_ARG, _SRC, _SRC_MASK, _TGT_IN),
        "tensor `[B, T, V]`",
        "The logits of the implementation's own decoding loop: one token id at a time, the "
        "implementation giving each new token its position and reading its cache.",
        ("Judged, as log-probabilities, against the full pass at every step.",),
        version=2,
    ),
    Method(
        "greedy", _DECODING,
        (_MODEL_ARG, _SRC, _SRC_MASK, _CONFIG,
         ("max_len", "int", "the most tokens to generate")),
        "long tensor `[B, <= max_len]`",
        "Greedy decoding from `config.bos_id`: the most probable next token at every step.",
        ("The ids come without the start symbol; a row ends at its first `config.eos_id` "
         "(what follows it is ignored).",),
    ),
    Method(
        "beam_search", _DECODING,
        (_MODEL_ARG, ("src", "long tensor `[1, S]`", "one source sentence"),
         ("src_mask", "bool tensor `[1, S]`", "its padding mask"), _CONFIG),
        "`list[int]`",
        "The implementation's beam search, which 6.1 says is beam size 4, the length penalty "
        "`lp(Y) = ((5 + |Y|) / 6)^alpha` with `alpha = 0.6`, and at most `len(src) + 50` "
        "tokens.",
        ("Returns the best hypothesis without the start symbol, ending with `config.eos_id` "
         "unless the length limit cut it.",),
    ),
    Method(
        "length_penalty", _DECODING,
        (("length", "int", "`|Y|`, the hypothesis length"), ("alpha", "float", "`alpha`")),
        "float",
        "The length penalty of Wu et al. (2016) that beam search divides log-probabilities "
        "by: `((5 + |Y|) / 6)^alpha`.",
        ("Checked with `beam_search` only: without one it is never called.",),
    ),
    Method(
        "loss", _TRAINING,
        (("logits", "tensor `[B, T, V]`", "what `project` returns"),
         ("target", "long tensor `[B, T]`", "target token ids"),
         ("pad_id", "int", "the padding id; padding targets add nothing")),
        "scalar tensor",
        "The training loss: cross-entropy against label-smoothed targets, `eps_ls = 0.1` "
        "(5.4), divided by the number of non-padding target tokens.",
        ("Other normalisers and the KL divergence are named variants of "
         "5.4/label-smoothing.",
         "It may be computed in a higher precision than the logits (only its device is "
         "checked)."),
    ),
    Method(
        "lr_schedule", _TRAINING,
        (("d_model", "int", "the model width"), ("warmup", "int", "`warmup_steps`")),
        "`Callable[[int], float]`",
        "The learning rate as a function of the step `>= 1`, Eq. 3: "
        "`d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)`.",
        ("At step 0, where Eq. 3 is undefined, it may raise `ArithmeticError` or `ValueError`; "
         "a value there is the variant `step-zero`.",
         "Steps count from 1, as in the paper. A function written for PyTorch's `LambdaLR`, "
         "which calls it with the number of steps taken so far (from 0), is usually Eq. 3 at "
         "`step + 1`: return `lambda step: f(step - 1)`, else the clause reports "
         "`schedule-off-by-one`."),
    ),
    Method(
        "optimizer", _TRAINING,
        (("params", "`list[torch.nn.Parameter]`", "the parameters to train"),),
        "`torch.optim.Optimizer`",
        "The training optimizer of 5.3: Adam with `beta1 = 0.9`, `beta2 = 0.98`, "
        "`eps = 1e-9`.",
        ("Any learning rate will do, and no scheduler: 5.3/adam reads the rate of "
         "`param_groups[0]` (a rate of 0, which a scheduler may set for step 0, is replaced "
         "by 1), sets `.grad`, calls `.step()` and compares the update with Adam's at that "
         "rate; practice/trainable sets the rate of every group itself. The schedule is "
         "`lr_schedule`'s.",),
    ),
    Method(
        "save", _CHECKPOINTS,
        (_MODEL_ARG, ("path", "`pathlib.Path`", "a file to create")),
        "`None`",
        "Write a checkpoint of the model to `path`.",
    ),
    Method(
        "load", _CHECKPOINTS, (("path", "`pathlib.Path`", "a file written by `save`"),),
        "`torch.nn.Module`",
        "The model read back from a checkpoint.",
        ("Every parameter comes back bit for bit, in the dtype it was saved in; the suite "
         "moves the model to its device and dtype.",),
    ),
)

METHODS: dict[str, Method] = {method.name: method for method in _METHODS}
"""Every method the suite may call on an adapter, by name, in the order the page
[The adapter protocol][adapter-protocol] lists them. All are optional."""


@dataclasses.dataclass(frozen=True)
class Attribute:
    """An attribute an adapter declares (see :data:`ATTRIBUTES`): its type, its default
    (``None``: required), what it says."""

    name: str
    type: str
    default: str | None
    says: str
    version: int = 1


_ATTRIBUTES = (
    Attribute("name", "str", None,
              "What the reports call the implementation. The only attribute an adapter must "
              "have."),
    Attribute("not_provided", "`Mapping[str, str]`", "{}",
              "Method name -> why the adapter does not provide it: the reason is shown with "
              "each NOT PROVIDED verdict it causes."),
    Attribute("architecture", "str", '"encoder-decoder"',
              "What the implementation is: the paper's encoder-decoder, an encoder without a "
              "decoder (`\"encoder-only\"`: the methods of the decoder and of decoding are NOT "
              "PROVIDED, with that reason), or attention modules only (`\"attention-only\"`: "
              "the stacks and the model are NOT PROVIDED).",
              version=2),
    Attribute("outputs", "str", '"logits"',
              "What `project` and `forward` return: logits, or log-probabilities "
              "(`\"log-probs\"`, the log-softmax already applied). The suite compares either "
              "after a log-softmax.",
              version=2),
)

ATTRIBUTES: dict[str, Attribute] = {attribute.name: attribute for attribute in _ATTRIBUTES}
"""What an adapter may declare besides its methods, by name. Only ``name`` is required; the
others default to what describes the paper's model, so an adapter written for protocol
version 1 keeps working unchanged."""


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
