"""What the suite's test modules share: models with well-conditioned random weights, tokens."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn

from spec import oracle
from spec.adapter import Config, declared
from spec.check import Check, Deviation, Env
from spec.diagnosis import explain
from spec.oracle import sub
from spec.tolerances import Tolerance, close, diagnose, error_ratio, tolerance

SMALL = Config()
"""The configuration most model tests use: d_model 16, h 4, d_ff 32, N 2, vocab 13, no dropout."""


def draw(name: str, shape: torch.Size, rng: torch.Generator) -> Tensor:
    """A well-conditioned random value for the canonical parameter ``name`` (float64, CPU).

    Matrices are scaled by 1/sqrt(fan-in) so activations stay O(1); LayerNorm gains are near 1;
    biases are small but non-zero, so that a misplaced one shows.
    """
    x = torch.randn(*shape, generator=rng, dtype=torch.float64)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "gamma":
        return 1.0 + 0.2 * x
    if leaf == "beta" or leaf.startswith("b_") or leaf == "b":
        return 0.2 * x
    if leaf in ("W_Q", "W_K", "W_V"):
        return x / math.sqrt(shape[-2])
    if leaf in ("src_embedding", "tgt_embedding"):
        return x / math.sqrt(shape[-1])
    if leaf in ("src_positions", "tgt_positions"):
        return 0.5 * x
    return x / math.sqrt(shape[0])


def randomize(
    clause: Check, module: nn.Module, env: Env, rng: torch.Generator
) -> dict[str, Tensor]:
    """Load random canonical parameters into ``module`` (when the adapter can write them) and
    return the parameters as the adapter reads them back, which is what the oracle uses."""
    read = clause.require("parameters")
    params: dict[str, Tensor] = dict(read(module))
    if clause.has("load_parameters"):
        fresh = {
            name: draw(name, t.shape, rng).to(env.device, env.dtype) for name, t in params.items()
        }
        clause.require("load_parameters")(module, fresh)
        params = dict(read(module))
    return {name: t.detach().clone() for name, t in params.items()}


def aliases(params: Mapping[str, Tensor], names: Iterable[str]) -> list[tuple[str, str]]:
    """Pairs among ``names`` (those present in ``params``) that read back one and the same
    value although :func:`randomize` loaded distinct random values into each: parameters the
    implementation shares where the paper has distinct ones. Also pairs of heads
    (``W_K[0]``, ``W_K[1]``) within a per-head matrix ``[h, d_model, d_k]``. Meaningful only
    after :func:`randomize` could load (the adapter has ``load_parameters``)."""
    present = [n for n in names if n in params]
    pairs = [(a, b) for i, a in enumerate(present) for b in present[i + 1:]
             if params[a].shape == params[b].shape and bool(torch.equal(params[a], params[b]))]
    for name in present:
        t = params[name]
        if t.dim() == 3 and t.shape[0] > 1:
            pairs += [(f"{name}[{i}]", f"{name}[{j}]") for i in range(t.shape[0])
                      for j in range(i + 1, t.shape[0]) if bool(torch.equal(t[i], t[j]))]
    return pairs


def build(
    clause: Check, env: Env, rng: torch.Generator, config: Config = SMALL
) -> tuple[nn.Module, dict[str, Tensor]]:
    """A model from the adapter, on ``env``'s device and dtype, in evaluation mode, with random
    weights; and its canonical parameters."""
    model = clause.require("model")(config).to(env.device, env.dtype).eval()
    return model, randomize(clause, model, env, rng)


def twin(
    clause: Check, model: nn.Module, config: Config, env: Env, params: Mapping[str, Tensor]
) -> nn.Module:
    """A second model from the adapter, built from ``config`` on ``env``, with ``model``'s
    weights: every entry of ``model``'s ``state_dict`` that the new model has with the same
    shape (so parameters without a canonical name are copied too), then the canonical
    parameters ``params`` on top when some entries differ (a positional table built for
    another ``max_len``). Never a copy of the canonical parameters alone, which would leave
    the others at their initial values."""
    other = clause.require("model")(config).to(env.device, env.dtype).eval()
    state, target = model.state_dict(), other.state_dict()
    same = {k: v for k, v in state.items() if k in target and target[k].shape == v.shape}
    other.load_state_dict(same, strict=False)
    if len(same) < max(len(state), len(target)):
        clause.require("load_parameters")(other, {n: t.to(env.device, env.dtype)
                                                  for n, t in params.items()})
    return other


def tokens(
    rng: torch.Generator,
    config: Config,
    batch: int,
    length: int,
    *,
    vocab: int | None = None,
    lengths: list[int] | None = None,
) -> tuple[Tensor, Tensor]:
    """Random ids ``[batch, length]`` avoiding the special ids, padded after ``lengths``;
    and the padding mask ``[batch, length]`` (True = real token)."""
    vocab = vocab or config.src_vocab
    ids = torch.randint(3, vocab, (batch, length), generator=rng)
    valid = torch.ones(batch, length, dtype=torch.bool)
    for row, n in enumerate(lengths or []):
        valid[row, n:] = False
    return ids.masked_fill(~valid, config.pad_id), valid


# -- shared by the 3.4, 3.5, 5.x, 6.1, table3 and practice modules ----------------------------


def cpu_float64() -> Env:
    """The CPU float64 environment, for checks that are not about a device or a dtype (decoding
    decisions, counts, schedules)."""
    from spec.tolerances import tolerance

    return Env(torch.device("cpu"), torch.float64, tolerance("cpu", torch.float64))


def shifted(clause: Check, tgt: Tensor, bos_id: int) -> Tensor:
    """The decoder input for ``tgt``: the adapter's ``decoder_input`` if it has one, otherwise
    the paper's (3.1/shifted-right): ``bos`` then ``tgt`` without its last token."""
    if clause.has("decoder_input"):
        return clause.require("decoder_input")(tgt, bos_id)
    return torch.cat([torch.full_like(tgt[:, :1], bos_id), tgt[:, :-1]], dim=1)


def logits(
    clause: Check, model: nn.Module, src: Tensor, src_mask: Tensor, tgt_in: Tensor
) -> Tensor:
    """Next-token logits ``[B, T, V]`` through the adapter: the whole model's ``forward`` when
    the adapter has one (the path its users call), otherwise embed and encode the source, embed
    and decode the (shifted-right) target ``tgt_in``, project (:func:`pieces`)."""
    if clause.has("forward"):
        return clause.require("forward")(model, src, tgt_in, src_mask)
    return pieces(clause, model, src, src_mask, tgt_in)


def pieces(
    clause: Check, model: nn.Module, src: Tensor, src_mask: Tensor, tgt_in: Tensor
) -> Tensor:
    """Next-token logits ``[B, T, V]`` composed from the adapter's pieces: embed and encode the
    source, embed and decode the (shifted-right) target ``tgt_in``, project."""
    x = clause.require("embed_source")(model, src)
    memory = clause.require("encode")(model, x, src_mask)
    y = clause.require("embed_target")(model, tgt_in)
    return clause.require("project")(model, clause.require("decode")(model, y, memory, src_mask))


def batch_of(rng: torch.Generator, env: Env, lengths: list[int], length: int = 8,
           tgt_length: int = 7) -> tuple[Tensor, Tensor, Tensor]:
    """Source ids and padding mask for ``lengths``, and a shifted-right target, on ``env``."""
    src, src_mask = tokens(rng, SMALL, len(lengths), length, lengths=lengths)
    tgt, _ = tokens(rng, SMALL, len(lengths), tgt_length, vocab=SMALL.tgt_vocab)
    tgt_in = torch.cat([torch.full_like(tgt[:, :1], SMALL.bos_id), tgt[:, :-1]], dim=1)
    return src.to(env.device), src_mask.to(env.device), tgt_in.to(env.device)


@dataclasses.dataclass(frozen=True)
class Batch:
    """Token ids with their padding mask, and embedded inputs of the same shapes (float64, CPU)
    for adapters that take embedded inputs (``torch.nn`` has no embeddings)."""

    src: Tensor
    src_mask: Tensor
    tgt_in: Tensor
    x: Tensor
    y: Tensor

    @staticmethod
    def draw(rng: torch.Generator, lengths: list[int]) -> Batch:
        cpu = cpu_float64()
        src, src_mask, tgt_in = batch_of(rng, cpu, lengths)
        x = cpu.randn(*src.shape, SMALL.d_model, generator=rng)
        y = cpu.randn(*tgt_in.shape, SMALL.d_model, generator=rng)
        return Batch(src, src_mask, tgt_in, x, y)

    def rows(self, index: Tensor | slice) -> Batch:
        return Batch(*(t[index] for t in dataclasses.astuple(self)))

    def run(self, clause: Check, model: torch.nn.Module, env: Env) -> Tensor:
        """The logits through the whole model when the adapter embeds and projects; otherwise
        the decoder output for the embedded inputs; without a decoder (an encoder-only
        implementation), the encoder output for the embedded source (or the source vectors)."""
        src_mask = self.src_mask.to(env.device)
        if not clause.has("decode"):
            x = (clause.require("embed_source")(model, self.src.to(env.device))
                 if clause.has("embed_source") else self.x.to(env.device, env.dtype))
            return clause.require("encode")(model, x, src_mask)
        if all(clause.has(n) for n in ("embed_source", "embed_target", "project")):
            return logits(clause, model, self.src.to(env.device), src_mask,
                          self.tgt_in.to(env.device))
        memory = clause.require("encode")(model, self.x.to(env.device, env.dtype), src_mask)
        y = self.y.to(env.device, env.dtype)
        return clause.require("decode")(model, y, memory, src_mask)


EMBEDDING_NAMES = ("src_embedding", "tgt_embedding", "generator.W")
"""The three matrices 3.4/weight-tying is about (``generator.W`` is stored ``[d_model, V]``)."""


def tied_pairs(clause: Check, model: nn.Module, env: Env, rng: torch.Generator) -> set[str]:
    """Which of the embedding matrices share their weights, told by behaviour, not by names.

    Loads *distinct* random values into ``src_embedding``, ``tgt_embedding`` and ``generator.W``
    (with every other parameter as read) and reads them back: tied names read back one and the
    same matrix (whichever was written last), untied ones their own value. Returns a subset of
    ``{"src-tgt", "tgt-generator", "src-generator"}``. The model's parameters are changed:
    re-randomize it before using it for numbers.
    """
    read = clause.require("parameters")
    params = dict(read(model))
    # an implementation without a decoder has no target embedding: the other two are judged
    names = [n for n in EMBEDDING_NAMES if n != "tgt_embedding" or clause.has("embed_target")]
    missing = [n for n in names if n not in params]
    if missing:
        clause.not_provided("parameters", f"no canonical {', '.join(missing)}")
    fresh = dict(params)
    for name in names:
        fresh[name] = draw(name, params[name].shape, rng).to(env.device, env.dtype)
    clause.require("load_parameters")(model, fresh)
    back = {n: read(model)[n].detach().to("cpu", torch.float64) for n in names}
    back["generator.W"] = back["generator.W"].T
    short = {"src_embedding": "src", "tgt_embedding": "tgt", "generator.W": "generator"}

    def same(a: Tensor, b: Tensor) -> bool:
        return a.shape == b.shape and bool(torch.equal(a, b))

    return {f"{short[a]}-{short[b]}" for i, a in enumerate(names) for b in names[i + 1:]
            if same(back[a], back[b])}


# -- 3.4, 3.5: what the embedding layers add, what project returns ----------------------------


def as_outputs(clause: Check, logits: Tensor) -> Tensor:
    """The oracle's ``logits`` as the adapter's ``project`` (and ``forward``) return them: the
    logits, or their log-softmax where the adapter declares ``outputs = "log-probs"``."""
    return logits.log_softmax(-1) if declared(clause.adapter, "outputs") == "log-probs" else logits


def embedding_norm(params: Mapping[str, Tensor], which: str) -> dict[str, Tensor] | None:
    """The exposed LayerNorm on the ``which`` (``src`` / ``tgt``) stack's sum of embeddings and
    positional encoding, ``gamma`` and ``beta`` (variant ``embedding-norm`` of 3.5/added), or
    None."""
    norm = sub(params, f"{which}_embedding_norm")
    return norm if {"gamma", "beta"} <= norm.keys() else None


def normed(
    norm: Mapping[str, Tensor] | None, actual: Tensor, sums: Tensor, tol: Tolerance
) -> tuple[Callable[[Tensor], Tensor], float | None]:
    """What the embedding layers make of sums the oracle computes (sqrt(d_model) E + PE, or a
    bug's), and the LayerNorm epsilon the correct ``sums`` show: the sums themselves (and None)
    without a ``norm``; with one, LN(x) with its gain and bias and the epsilon of
    :data:`READINGS` (1e-5, 1e-6, 1e-12) that brings LN(x) closest to ``actual`` (so a bug's
    sums are normalised with the epsilon that fits them too)."""
    if norm is None:
        return (lambda x: x), None
    epsilons = dict.fromkeys(r.eps for r in READINGS)

    def fits(x: Tensor) -> tuple[Tensor, float]:
        outs = {e: oracle.layer_norm(x, norm["gamma"], norm["beta"], e) for e in epsilons}
        eps = min(outs, key=lambda e: error_ratio(actual, outs[e], tol))
        return outs[eps], eps

    return (lambda x: fits(x)[0]), fits(sums)[1]


def unmoved(model: nn.Module, env: Env) -> dict[str, Tensor]:
    """The floating-point tensors that ``model``'s modules keep as plain attributes (neither
    parameter nor buffer) in another dtype or on another device than ``env``'s: those that
    ``model.to(env.device, env.dtype)`` did not convert."""
    return {
        f"{prefix}.{name}".lstrip("."): t
        for prefix, module in model.named_modules()
        for name, t in vars(module).items()
        if isinstance(t, Tensor) and t.is_floating_point()
        and (t.dtype != env.dtype or t.device.type != env.device.type)
    }


def not_buffer(
    clause: Check, model: nn.Module, env: Env, d_model: int, added: Tensor | None = None
) -> None:
    """Deviate (``positions-not-buffer``) if ``model`` keeps a table ``[n, d_model]`` as a plain
    attribute that ``.to()`` left in another dtype or on another device (:func:`unmoved`);
    given ``added`` ``[B, L, d_model]`` (what the model adds to the embeddings), only if the
    table's first L rows are what it adds."""
    for name, t in unmoved(model, env).items():
        rows = t.detach().to("cpu", torch.float64)
        if t.dim() != 2 or t.shape[1] != d_model:
            continue
        if added is not None and (rows.shape[0] < added.shape[-2] or not close(
                added, rows[: added.shape[-2]].expand_as(added), tolerance("cpu", torch.float64))):
            continue
        clause.deviates(
            f"the positional table does not follow .to(): {name} is a plain attribute, not a "
            f"registered buffer ({t.dtype} on {t.device.type} in a model moved to {env.dtype} on "
            f"{env.device.type})", explain("positions-not-buffer"))


def embedded(
    clause: Check, method: str, model: nn.Module, ids: Tensor, env: Env,
    d_model: int = SMALL.d_model,
) -> Tensor:
    """``method`` (``embed_source`` / ``embed_target``) of ``ids`` on ``env``'s device. When the
    call fails (an output in another dtype, tensors on two devices) and the model keeps a table
    apart from ``.to()`` (:func:`not_buffer`), the deviation names it instead of the symptom."""
    try:
        return clause.require(method)(model, ids.to(env.device))
    except (Deviation, RuntimeError):
        not_buffer(clause, model, env, d_model)
        raise


# -- Stacks: how a model wraps its sub-layers, oracle stacks with more knobs, influence --------
# (shared by the 3.1, 3.2.2, 3.2.3 and 3.3 modules)

Stack = Literal["encoder", "decoder"]
ENCODER_ORDER: tuple[str, ...] = ("self_attn", "ffn")
"""The sub-layers of an encoder layer, in the paper's order (3.1/encoder-layer)."""
DECODER_ORDER: tuple[str, ...] = ("self_attn", "cross_attn", "ffn")
"""The sub-layers of a decoder layer, in the paper's order (3.1/decoder-layer)."""
_NORM_OF = {"self_attn": "norm_1", "cross_attn": "norm_2", "ffn": "norm_3"}


@dataclasses.dataclass(frozen=True)
class Reading:
    """How a model reads what the paper leaves open around its sub-layers, found on the model
    itself by :func:`match_reading`.

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
"""Every reading :func:`match_reading` recognises, the paper's first: post- or pre-norm;
LayerNorm epsilon 1e-5 (PyTorch), 1e-6 (tensor2tensor, the Annotated Transformer) or 1e-12
(BERT); biased or unbiased variance (``torch.std``); epsilon inside or outside the square root;
ReLU or GELU; with or without an unexposed LayerNorm after the stack."""


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
        norm_params["beta"],
        reading.eps,
        unbiased=reading.unbiased,
        eps_inside_sqrt=reading.eps_inside_sqrt,
    )


def _attention_mask(
    src_mask: Tensor | None, causal: Tensor | None, device: torch.device
) -> Tensor | None:
    """Padding ``[B, S]`` (True = real) and/or causal ``[L_q, S]`` -> a mask for multi_head."""
    mask = None if src_mask is None else oracle.padding_mask(src_mask.to(device))
    if causal is not None:
        causal = causal.to(device)
        mask = causal if mask is None else mask & causal
    return mask


def _final(
    x: Tensor, params: Mapping[str, Tensor], stack: Stack, reading: Reading, final_norm: bool | None
) -> Tensor:
    if final_norm is None:
        final_norm = f"{stack}.norm.gamma" in params
    if final_norm:
        x = layer_norm(x, sub(params, f"{stack}.norm"), reading)
    return _hidden(x, reading)


def _hidden(x: Tensor, reading: Reading) -> Tensor:
    """The unexposed LayerNorm of ``reading.hidden_norm`` (gain 1, bias 0), if any."""
    if not reading.hidden_norm:
        return x
    ones = torch.ones(x.shape[-1], dtype=x.dtype, device=x.device)
    return layer_norm(x, {"gamma": ones, "beta": 0 * ones}, reading)


def encoder(
    x: Tensor,
    params: Mapping[str, Tensor],
    config: Config,
    src_mask: Tensor | None = None,
    reading: Reading = PAPER,
    *,
    norm: oracle.Norm | None = None,
    bug: str | None = None,
    causal: bool = False,
    order: tuple[str, ...] = ENCODER_ORDER,
    activation: oracle.Activation | None = None,
    final_norm: bool | None = None,
) -> Tensor:
    """:func:`spec.oracle.encoder` in ``reading``, with the knobs the oracle lacks.

    Without knobs, and with a standard LayerNorm, this *is* ``oracle.encoder``; otherwise the
    same equations are composed here from the oracle's parts. ``norm`` overrides
    ``reading.norm`` (also the bugs ``no-residual``, ``no-norm``); ``bug``: one of
    :data:`spec.oracle.MULTI_HEAD_BUGS`; ``causal``: the self-attention is causally masked
    (bug ``encoder-causal``); ``order``: the sub-layers applied, by name (bugs
    ``sublayer-order``, ``missing-sublayer``); ``activation`` overrides the reading's FFN
    activation (``"none"``: bug ``no-relu``); ``final_norm`` as in the oracle (default: when
    ``encoder.norm.*`` is present).
    """
    how: oracle.Norm = norm or reading.norm
    act: oracle.Activation = activation or reading.activation
    if reading.standard_layer_norm and not causal and order == ENCODER_ORDER and act == "relu":
        return _hidden(oracle.encoder(
            x, params, config.n_layers, config.h, src_mask,
            norm=how, eps=reading.eps, bug=bug, final_norm=final_norm,
        ), reading)
    x = x.to(torch.float64)
    length = x.shape[-2]
    mask = _attention_mask(src_mask, oracle.causal_mask(length) if causal else None, x.device)
    sublayers: dict[str, Callable[[Tensor, Mapping[str, Tensor]], Tensor]] = {
        "self_attn": lambda t, a: oracle.multi_head(t, t, t, a, mask, bug=bug),
        "ffn": lambda t, f: oracle.feed_forward(t, f, activation=act),
    }
    for i in range(config.n_layers):
        x = _layer(x, params, f"encoder.{i}", reading, how, order, sublayers)
    return _final(x, params, "encoder", reading, final_norm)


def _layer(
    x: Tensor,
    params: Mapping[str, Tensor],
    prefix: str,
    reading: Reading,
    norm: oracle.Norm,
    order: tuple[str, ...],
    sublayers: Mapping[str, Callable[[Tensor, Mapping[str, Tensor]], Tensor]],
) -> Tensor:
    """One layer: the named sub-layers in ``order``, each wrapped with its own norm."""
    norms = dict(_NORM_OF)
    if "cross_attn" not in sublayers:  # encoder: norm_1 after self-attention, norm_2 after FFN
        norms["ffn"] = "norm_2"
    for name in order:
        weights = sub(params, f"{prefix}.{name}")

        def sublayer(t: Tensor, name: str = name, weights: dict[str, Tensor] = weights) -> Tensor:
            return sublayers[name](t, weights)

        x = oracle.residual(
            x, sublayer, sub(params, f"{prefix}.{norms[name]}"), norm, reading.eps,
            unbiased=reading.unbiased, eps_inside_sqrt=reading.eps_inside_sqrt,
        )
    return x


def decoder(
    y: Tensor,
    memory: Tensor,
    params: Mapping[str, Tensor],
    config: Config,
    src_mask: Tensor | None = None,
    reading: Reading = PAPER,
    *,
    norm: oracle.Norm | None = None,
    bug: str | None = None,
    self_offset: int | None = 0,
    cross_causal: bool = False,
    cross_to_self: bool = False,
    order: tuple[str, ...] = DECODER_ORDER,
    activation: oracle.Activation | None = None,
    final_norm: bool | None = None,
) -> Tensor:
    """:func:`spec.oracle.decoder` in ``reading``, with the knobs the oracle lacks.

    Knobs as in :func:`encoder`, and: ``self_offset``: the causal mask's offset (``None``: no
    causal mask, bug ``decoder-not-causal``; ``±1``: the off-by-one bugs); ``cross_causal``:
    the encoder-decoder attention is causally masked too (bug ``cross-attention-causal``);
    ``cross_to_self``: the encoder-decoder attention attends over its own input instead of
    ``memory`` (bug ``cross-attention-self``, unmasked).
    """
    how: oracle.Norm = norm or reading.norm
    act: oracle.Activation = activation or reading.activation
    plain = not cross_causal and not cross_to_self and order == DECODER_ORDER and act == "relu"
    if reading.standard_layer_norm and self_offset is not None and plain:
        return _hidden(oracle.decoder(
            y, memory, params, config.n_layers, config.h, src_mask,
            norm=how, causal_offset=self_offset, eps=reading.eps, bug=bug, final_norm=final_norm,
        ), reading)
    y, memory = y.to(torch.float64), memory.to(torch.float64)
    t, s = y.shape[-2], memory.shape[-2]
    causal = None if self_offset is None else oracle.causal_mask(t, self_offset).to(y.device)
    cross = _attention_mask(
        src_mask, torch.ones(t, s, dtype=torch.bool).tril() if cross_causal else None, y.device
    )

    def cross_attention(q: Tensor, a: Mapping[str, Tensor]) -> Tensor:
        if cross_to_self:
            return oracle.multi_head(q, q, q, a, None, bug=bug)
        return oracle.multi_head(q, memory, memory, a, cross, bug=bug)

    sublayers: dict[str, Callable[[Tensor, Mapping[str, Tensor]], Tensor]] = {
        "self_attn": lambda q, a: oracle.multi_head(q, q, q, a, causal, bug=bug),
        "cross_attn": cross_attention,
        "ffn": lambda q, f: oracle.feed_forward(q, f, activation=act),
    }
    for i in range(config.n_layers):
        y = _layer(y, params, f"decoder.{i}", reading, how, order, sublayers)
    return _final(y, params, "decoder", reading, final_norm)


def wrap_bugs(run: Callable[..., Tensor], reading: Reading = PAPER) -> dict[str, Tensor]:
    """The oracle's outputs under the known bugs of the wrapping, and the FFN without its
    activation, for diagnosis: ``run(norm=..., activation=...)`` computes the oracle with
    those knobs."""
    bugs = {} if reading.norm == "pre" else {"pre-norm": run(norm="pre")}
    bugs["no-residual"] = run(norm="no-residual")
    bugs["no-norm"] = run(norm="no-norm")
    bugs["no-relu"] = run(activation="none")
    return bugs


def multi_head_bugs(run: Callable[..., Tensor]) -> dict[str, Tensor]:
    """The oracle's outputs under every :data:`spec.oracle.MULTI_HEAD_BUGS` (``run(bug=...)``)."""
    return {name: run(bug=name) for name in oracle.MULTI_HEAD_BUGS}


LAYER_BUGS: dict[Stack, dict[str, dict[str, Any]]] = {
    "encoder": {
        "sublayer-order": {"order": ("ffn", "self_attn")},
        "missing-sublayer": {"order": ("self_attn",)},
        "encoder-causal": {"causal": True},
    },
    "decoder": {
        "sublayer-order": {"order": ("cross_attn", "self_attn", "ffn")},
        "missing-sublayer": {"order": ("self_attn", "ffn")},
        "decoder-not-causal": {"self_offset": None},
        "causal-off-by-one-future": {"self_offset": 1},
        "causal-off-by-one-self": {"self_offset": -1},
        "cross-attention-causal": {"cross_causal": True},
        "cross-attention-self": {"cross_to_self": True},
    },
}
"""Known bugs of a layer's structure and masks -> the knobs of :func:`encoder` /
:func:`decoder` that reproduce them."""


def stack_bugs(
    run: Callable[..., Tensor], reading: Reading, stack: Stack, *, heads: bool = True
) -> dict[str, Tensor]:
    """The oracle's outputs under the known bugs of a stack, for diagnosis: the wrapping bugs,
    :data:`LAYER_BUGS` and, with ``heads``, the multi-head bugs. ``run(**knobs)`` is
    :func:`encoder` or :func:`decoder` on fixed inputs, in ``reading``."""
    bugs = {
        **wrap_bugs(run, reading),
        **{bug: run(**knobs) for bug, knobs in LAYER_BUGS[stack].items()},
    }
    return {**bugs, **multi_head_bugs(run)} if heads else bugs


def diagnosis(
    actual: Tensor, expected: Tensor, bugs: Mapping[str, Tensor], tol: Tolerance
) -> str | None:
    """``name: meaning`` of the known bug among ``bugs`` that ``actual`` reproduces, if any."""
    return explain(diagnose(actual, expected, bugs, tol))


def probe(
    clause: Check,
    env: Env,
    rng: torch.Generator,
    model: nn.Module,
    params: Mapping[str, Tensor],
    config: Config,
    stack: Stack,
) -> tuple[Tensor, Callable[..., Tensor]]:
    """One-position sequences through ``stack``: the model's output, and the oracle's as a
    function ``run(reading, **knobs)`` of the reading and of :func:`encoder` /
    :func:`decoder`'s knobs.

    With a single position (source and target) every attention weight is 1, whatever the scale,
    the softmax axis or a causal mask (unless it hides the position from itself): the output
    depends only on the projections, the FFN, the norms and how the sub-layers are wrapped. So a
    probe judges the wrapping (3.1/residual-norm) without being disturbed by most bugs of
    attention.
    """
    b, d = 3, config.d_model
    x = env.randn(b, 1, d, generator=rng)
    mask = torch.ones(b, 1, dtype=torch.bool, device=env.device)
    if stack == "encoder":
        actual = clause.require("encode")(model, x, mask)

        def run_encoder(reading: Reading = PAPER, **knobs: Any) -> Tensor:
            return encoder(x, params, config, mask, reading, **knobs)

        return actual, run_encoder
    memory = env.randn(b, 1, d, generator=rng)
    actual = clause.require("decode")(model, x, memory, mask)

    def run_decoder(reading: Reading = PAPER, **knobs: Any) -> Tensor:
        return decoder(x, memory, params, config, mask, reading, **knobs)

    return actual, run_decoder


def match_reading(
    actual: Tensor, run: Callable[..., Tensor], tol: Tolerance, **knobs: Any
) -> Reading | None:
    """The reading of :data:`READINGS` whose oracle output ``run(reading, **knobs)`` matches
    ``actual``, if one matches within ``tol``; ``None`` otherwise.

    The paper's reading when it matches to a tenth of the tolerance (then nothing else is
    computed). Otherwise the first reading that matches about as well as the best one (within
    a factor 2): in low precision several epsilons can match, and rounding noise must not pick
    a later one over the first.
    """
    if error_ratio(actual, run(PAPER, **knobs), tol) <= 0.1:
        return PAPER
    ratios = [error_ratio(actual, run(r, **knobs), tol) for r in READINGS]
    best = min(ratios)
    if best > 1.0:
        return None
    return next(r for r, ratio in zip(READINGS, ratios, strict=True) if ratio <= 2 * best)


def reading_of(
    clause: Check,
    env: Env,
    rng: torch.Generator,
    model: nn.Module,
    params: Mapping[str, Tensor],
    config: Config,
    stack: Stack,
) -> Reading:
    """The reading that ``model``'s ``stack`` follows, found with a :func:`probe`; the paper's
    when none fits (the clause that uses it then deviates, and 3.1/residual-norm says why)."""
    actual, run = probe(clause, env, rng, model, params, config, stack)
    return match_reading(actual, run, env.tol) or PAPER


def influence(
    fn: Callable[[Tensor], Tensor],
    x: Tensor,
    env: Env,
    rng: torch.Generator,
    scale: float = 3.0,
) -> Tensor:
    """Bool ``[L_out, L_in]``: whether output position i moves (by more than ``env.tol``) when
    input position j alone is redrawn. ``x`` ``[B, L_in, ...]``; ``fn(x)`` ``[B, L_out, ...]``.

    The new values are ``scale`` times standard normal, so a real dependency moves the output
    far more than rounding, in every dtype.
    """
    base = fn(x).detach()
    columns = []
    for j in range(x.shape[1]):
        moved = x.clone()
        moved[:, j] = env.randn(*moved[:, j].shape, generator=rng, scale=scale)
        out = fn(moved).detach()
        rows = [error_ratio(out[:, i], base[:, i], env.tol) > 1.0 for i in range(out.shape[1])]
        columns.append(torch.tensor(rows, dtype=torch.bool))
    return torch.stack(columns, dim=1)


def build_stacks(
    clause: Check, env: Env, rng: torch.Generator, config: Config = SMALL
) -> tuple[nn.Module, dict[str, Tensor]]:
    """:func:`build`, and deviate unless each stack whose parameters the adapter exposes has
    exactly ``config.n_layers`` layers (3.1/encoder-stack: N is configurable), so that a model
    that ignores N deviates instead of failing the oracle with a missing parameter."""
    model, params = build(clause, env, rng, config)
    for stack in ("encoder", "decoder"):
        found = list(layers(params, stack))
        clause.expect(
            not found or found == list(range(config.n_layers)),
            f"built with N={config.n_layers}, the model has {stack} layers {found}",
        )
    return model, params


def judge(
    clause: Check,
    actual: Tensor,
    expected: Tensor,
    what: str,
    tol: Tolerance,
    bugs: Callable[[], Mapping[str, Tensor]],
) -> None:
    """:meth:`Check.close`, computing the bug candidates (``bugs()``) only when ``actual`` does
    not match: a conforming implementation does not pay for the diagnosis."""
    if not isinstance(actual, Tensor) or error_ratio(actual, expected, tol) > 1.0:
        clause.close(actual, expected, what, tol, bugs())
