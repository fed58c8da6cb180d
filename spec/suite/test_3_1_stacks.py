"""3.1 Encoder and decoder stacks: N layers with their own parameters, the sub-layers of each
layer, LayerNorm(x + Sublayer(x)), d_model everywhere, the causal decoder, the shifted-right
decoder input, and one encoder output shared by every decoder layer.

Model-level checks compute the oracle in the model's own reading (post- or pre-norm, its
LayerNorm, its FFN activation; see :class:`helpers.Reading`), found by :func:`helpers.reading_of`,
so that only the clause under test is judged; 3.1/residual-norm says which reading that is.
Failures are diagnosed against the oracle under the known bugs of :func:`helpers.stack_bugs`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NoReturn

import pytest
import torch
from torch import Tensor

from spec.adapter import Config, declared
from spec.check import Check, Env
from spec.diagnosis import explain
from spec.suite import helpers as H
from spec.suite.helpers import SMALL
from spec.tolerances import error_ratio

ONE_LAYER = dataclasses.replace(SMALL, n_layers=1)


def _real(env: Env, batch: int, length: int) -> Tensor:
    """A padding mask with every position real."""
    return torch.ones(batch, length, dtype=torch.bool, device=env.device)


def _stacks(clause: Check) -> list[H.Stack]:
    """The encoder (required) and the decoder, when the adapter can run it."""
    clause.require("encode")
    return ["encoder", "decoder"] if clause.has("decode") else ["encoder"]


def _wrapping(
    actual: Tensor, run: Callable[..., Tensor], stack: H.Stack, env: Env, **knobs: Any
) -> tuple[H.Reading | None, Callable[..., Tensor]]:
    """The reading of a :func:`helpers.probe`, and ``run`` for the layer it was found with:
    the paper's layer first; if no reading fits, a layer with one of :data:`helpers.LAYER_BUGS`
    (sub-layers in another order or missing, a mask that hides a position from itself, ...),
    so that the wrapping is still judged (those are other clauses' bugs; they report them)."""
    for bug in (None, *H.LAYER_BUGS[stack].values()):
        structured = run if bug is None else functools.partial(run, **bug)
        reading = H.match_reading(actual, structured, env.tol, **knobs)
        if reading is not None:
            return reading, structured
    return None, run


@pytest.mark.clause("3.1/encoder-stack")
def test_encoder_stack(clause: Check, env: Env, rng: torch.Generator) -> None:
    """N is configurable (N = 1 and 3); the layers have one structure but their own parameters;
    the stack is the N layers applied in turn (oracle with the per-layer parameters)."""
    encode = clause.require("encode")
    for n in (1, 3):
        config = dataclasses.replace(SMALL, n_layers=n)
        model, params = H.build_stacks(clause, env, rng, config)
        layers = H.layers(params, "encoder")
        clause.expect(bool(layers), "the adapter exposes no encoder layer parameters")
        shapes = [{k: tuple(t.shape) for k, t in layer.items()} for layer in layers.values()]
        clause.expect(
            all(s == shapes[0] for s in shapes),
            f"the encoder layers are not identical in structure: {shapes}",
        )
        if clause.has("load_parameters"):  # distinct random values were loaded into each layer
            for i in range(1, n):
                same = sorted(k for k, t in layers[i].items() if torch.equal(t, layers[0][k]))
                clause.expect(
                    not same,
                    f"encoder layers 0 and {i} read back the same values for {same} after "
                    "different values were loaded: they share parameters",
                    explain("shared-layers"),
                )
        x, mask = env.randn(2, 5, config.d_model, generator=rng), _real(env, 2, 5)
        reading = H.reading_of(clause, env, rng, model, params, config, "encoder")
        run = functools.partial(H.encoder, x, params, config, mask, reading)
        H.judge(clause, encode(model, x, mask), run(), f"encoder output (N={n})", env.tol,
                functools.partial(H.stack_bugs, run, reading, "encoder"))


@pytest.mark.clause("3.1/encoder-layer")
def test_encoder_layer(clause: Check, env: Env, rng: torch.Generator) -> None:
    """One encoder layer is self-attention, then the FFN, each wrapped (N = 1, oracle)."""
    encode = clause.require("encode")
    model, params = H.build_stacks(clause, env, rng, ONE_LAYER)
    reading = H.reading_of(clause, env, rng, model, params, ONE_LAYER, "encoder")
    x, mask = env.randn(2, 5, ONE_LAYER.d_model, generator=rng), _real(env, 2, 5)
    run = functools.partial(H.encoder, x, params, ONE_LAYER, mask, reading)

    H.judge(clause, encode(model, x, mask), run(), "encoder layer output", env.tol,
            functools.partial(H.stack_bugs, run, reading, "encoder"))


@pytest.mark.clause("3.1/residual-norm")
def test_residual_norm(clause: Check, env: Env, rng: torch.Generator) -> None:
    """Every sub-layer of both stacks is LayerNorm(x + Sublayer(x)).

    Judged on one-position sequences (:func:`helpers.probe`), where every attention weight is 1,
    so that only the wrapping is judged. Pre-norm and the LayerNorm readings (epsilon, unbiased
    variance, epsilon outside the square root) are named variants.
    """
    model, params = H.build_stacks(clause, env, rng)
    for stack in _stacks(clause):
        if clause.has("load_parameters"):  # distinct values were loaded into every norm
            for i, layer in H.layers(params, stack).items():
                norms = sorted(n for n in layer if n.startswith("norm_"))
                shared = H.aliases(layer, norms)
                clause.expect(not shared, f"{stack} layer {i}: "
                              f"{', '.join(f'{a} = {b}' for a, b in shared)} read back the same "
                              "values after distinct ones were loaded: one LayerNorm serves "
                              "several sub-layers", explain("shared-norms"))
        for i, layer in H.layers(params, stack).items():
            norms = sorted({n.split(".")[0] for n in layer if n.startswith("norm_")})
            unbiased = [n for n in norms if f"{n}.beta" not in layer]
            clause.expect(not unbiased, f"{stack} layer {i}: {', '.join(unbiased)} "
                          "have no bias (beta)", explain("norm-without-bias"))
        actual, run = H.probe(clause, env, rng, model, params, SMALL, stack)
        reading, _ = _wrapping(actual, run, stack, env)
        if reading is None:
            clause.close(actual, run(), f"{stack} output", env.tol,
                         H.stack_bugs(run, H.PAPER, stack))
            continue  # pragma: no cover - close() raised: no reading fits
        for name, reason in reading.variants():
            clause.variant(name, reason)


@pytest.mark.clause("3.1/no-final-norm")
def test_no_final_norm(clause: Check, env: Env, rng: torch.Generator) -> None:
    """Each stack's output is its last layer's output: no LayerNorm after the stack. An extra
    LayerNorm exposed as ``encoder.norm.*`` / ``decoder.norm.*`` is the variant ``final-norm``
    (and must then be exactly a LayerNorm of the last layer's output); one the adapter hides
    deviates. Judged on one-position sequences, like 3.1/residual-norm."""
    model, params = H.build_stacks(clause, env, rng)
    normed = []  # the stacks followed by an exposed LayerNorm
    for stack in _stacks(clause):
        actual, run = H.probe(clause, env, rng, model, params, SMALL, stack)
        exposed = f"{stack}.norm.gamma" in params
        reading, run = _wrapping(actual, run, stack, env, final_norm=exposed)
        if reading is not None and reading.hidden_norm:
            clause.deviates(
                f"the {stack} output is normalised once more after the last layer, by a "
                f"LayerNorm the adapter does not expose as {stack}.norm.*",
                explain("hidden-final-norm"),
            )
        what = f"{stack} output" + (" with its final LayerNorm" if exposed else "")
        expected = functools.partial(run, reading or H.PAPER, final_norm=exposed)
        H.judge(clause, actual, expected(), what, env.tol,
                functools.partial(H.stack_bugs, expected, reading or H.PAPER, stack))
        if exposed:
            normed.append(stack)
    if normed:
        clause.variant("final-norm", " and ".join(f"a LayerNorm ({stack}.norm) follows the "
                                                  f"{stack} stack" for stack in normed))


@pytest.mark.clause("3.1/width")
def test_width(clause: Check, env: Env, rng: torch.Generator) -> None:
    """Embeddings, both stacks and every sub-layer output d_model features (d_model = 24,
    d_ff = 40, so that neither is mistaken for the other)."""
    config = Config(d_model=24, h=4, d_ff=40)
    d = config.d_model
    checked: list[str] = []

    def width(what: str, out: object, batch: int, length: int) -> None:
        shape = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
        clause.expect(shape == [batch, length, d],
                      f"{what} has shape {shape}, expected [{batch}, {length}, d_model={d}]")
        checked.append(what)

    if clause.has("multi_head") and clause.has("multi_head_forward"):
        module = clause.require("multi_head")(d, config.h).to(env.device, env.dtype).eval()
        x, memory = env.randn(2, 5, d, generator=rng), env.randn(2, 3, d, generator=rng)
        forward = clause.require("multi_head_forward")
        width("multi-head self-attention", forward(module, x, None, None), 2, 5)
        with clause.part("multi-head attention over a memory"):  # self-attention-only modules
            width("multi-head attention over a memory", forward(module, x, memory, None), 2, 5)
    if clause.has("feed_forward") and clause.has("feed_forward_forward"):
        ffn = clause.require("feed_forward")(d, config.d_ff).to(env.device, env.dtype).eval()
        x = env.randn(2, 5, d, generator=rng)
        width("the feed-forward network", clause.require("feed_forward_forward")(ffn, x), 2, 5)
    if clause.has("model"):
        model = clause.require("model")(config).to(env.device, env.dtype).eval()
        src, src_mask = H.tokens(rng, config, 2, 5)
        tgt, _ = H.tokens(rng, config, 2, 4, vocab=config.tgt_vocab)
        src_mask = src_mask.to(env.device)
        if clause.has("embed_source"):
            width("the source embedding", clause.require("embed_source")(model, src.to(env.device)),
                  2, 5)
        if clause.has("embed_target"):
            width("the target embedding", clause.require("embed_target")(model, tgt.to(env.device)),
                  2, 4)
        memory = env.randn(2, 5, d, generator=rng)
        if clause.has("encode"):
            width("the encoder", clause.require("encode")(model, memory, src_mask), 2, 5)
        if clause.has("decode"):
            y = env.randn(2, 4, d, generator=rng)
            width("the decoder", clause.require("decode")(model, y, memory, src_mask), 2, 4)
        if clause.has("parameters"):  # the output side of every sub-layer and norm
            for name, t in clause.require("parameters")(model).items():
                leaf = name.rsplit(".", 1)[-1]
                if leaf in ("W_O", "b_O", "W_2", "b_2", "gamma", "beta") or "embedding" in leaf:
                    clause.expect(t.shape[-1] == d,
                                  f"{name} has shape {list(t.shape)}: its outputs are not d_model "
                                  f"= {d} wide")
            checked.append("parameters")
    if not checked:
        clause.not_provided("encode", "nothing that outputs d_model features is exposed")


@pytest.mark.clause("3.1/decoder-layer")
def test_decoder_layer(clause: Check, env: Env, rng: torch.Generator) -> None:
    """One decoder layer is masked self-attention, attention over the encoder output, then the
    FFN, each wrapped (N = 1, oracle); the two attention sub-layers have their own parameters."""
    decode = clause.require("decode")
    model, params = H.build_stacks(clause, env, rng, ONE_LAYER)
    if clause.has("load_parameters"):  # distinct random values were loaded into each sub-layer
        mine, cross = H.sub(params, "decoder.0.self_attn"), H.sub(params, "decoder.0.cross_attn")
        same = sorted(k for k, t in mine.items() if k in cross and torch.equal(t, cross[k]))
        clause.expect(not same, f"the self-attention and the encoder-decoder attention read back "
                      f"the same values for {same} after different values were loaded: one "
                      "module serves both")
    reading = H.reading_of(clause, env, rng, model, params, ONE_LAYER, "decoder")
    d = ONE_LAYER.d_model
    y, memory = env.randn(2, 4, d, generator=rng), env.randn(2, 6, d, generator=rng)
    mask = _real(env, 2, 6)
    run = functools.partial(H.decoder, y, memory, params, ONE_LAYER, mask, reading)

    H.judge(clause, decode(model, y, memory, mask), run(), "decoder layer output", env.tol,
            functools.partial(H.stack_bugs, run, reading, "decoder"))


@pytest.mark.clause("3.1/decoder-causal")
def test_decoder_causal(clause: Check, env: Env, rng: torch.Generator) -> None:
    """Changing decoder inputs at positions > i leaves the outputs at positions <= i unchanged,
    and the gradients of output i with respect to inputs j > i are exactly zero."""
    decode = clause.require("decode")
    model, params = H.build_stacks(clause, env, rng)
    t, s, d = 6, 5, SMALL.d_model
    y, memory = env.randn(2, t, d, generator=rng), env.randn(2, s, d, generator=rng)
    mask = _real(env, 2, s)
    out = decode(model, y, memory, mask).detach()

    def fail(summary: str) -> NoReturn:
        reading = H.reading_of(clause, env, rng, model, params, SMALL, "decoder")
        run = functools.partial(H.decoder, y, memory, params, SMALL, mask, reading)
        clause.deviates(summary, H.diagnosis(out, run(), H.stack_bugs(run, reading, "decoder"),
                                             env.tol))

    leaks = []
    for i in range(t - 1):
        changed = y.clone()
        changed[:, i + 1 :] = env.randn(2, t - i - 1, d, generator=rng, scale=3.0)
        after = decode(model, changed, memory, mask).detach()
        if error_ratio(after[:, : i + 1], out[:, : i + 1], env.tol) > 1.0:
            leaks.append(i)
    if leaks:
        fail(f"changing the decoder inputs after position i changes the outputs at positions "
             f"<= i, for i in {leaks}")

    y_grad = y.clone().requires_grad_(True)
    out_grad = decode(model, y_grad, memory, mask)
    if out_grad.grad_fn is None:
        return  # the implementation does not differentiate: the perturbations have judged it
    weights = env.randn(*out_grad.shape, generator=rng)
    pairs = []
    for i in range(t - 1):
        (grad,) = torch.autograd.grad((out_grad[:, i] * weights[:, i]).sum(), y_grad,
                                      retain_graph=True)
        pairs += [(i, j) for j in range(i + 1, t) if bool(grad[:, j].ne(0).any())]
    if pairs:
        fail(f"the gradient of output i with respect to input j > i is not zero for (i, j) in "
             f"{pairs}")


@pytest.mark.clause("3.1/shifted-right")
def test_shifted_right(clause: Check, env: Env, rng: torch.Generator) -> None:
    """The decoder input is the start symbol, then the target without its last token."""
    decoder_input = clause.require("decoder_input")
    bos = SMALL.bos_id
    for batch, length, lengths in ((3, 6, [6, 4, 1]), (1, 1, None)):
        tgt, _ = H.tokens(rng, SMALL, batch, length, vocab=SMALL.tgt_vocab, lengths=lengths)
        expected = torch.cat([torch.full_like(tgt[:, :1], bos), tgt[:, :-1]], dim=1)
        actual = decoder_input(tgt.to(env.device), bos)
        clause.expect(isinstance(actual, Tensor) and list(actual.shape) == [batch, length],
                      f"the decoder input for a [{batch}, {length}] target has shape "
                      f"{list(getattr(actual, 'shape', []))}")
        actual = actual.cpu()
        if torch.equal(actual, expected):
            continue
        if torch.equal(actual, tgt):
            clause.deviates("the decoder input is the target itself", explain("not-shifted"))
        if torch.equal(actual[:, 1:], expected[:, 1:]):
            clause.deviates(f"the decoder input starts with {actual[:, 0].tolist()}, not the "
                            f"start symbol {bos}")
        clause.deviates(f"decoder input {actual.tolist()} for the target {tgt.tolist()}; "
                        f"expected {expected.tolist()}")


@pytest.mark.clause("3.1/shared-memory")
def test_shared_memory(clause: Check, env: Env, rng: torch.Generator) -> None:
    """Every decoder layer attends to the same memory: the output depends on the encoder output
    even when the encoder-decoder attention of all layers but one is silenced (W^O = 0), for
    each layer in turn; and it matches the oracle in which every layer reads the same memory,
    also when that memory is the encoder's own output (a decoder that reads the encoder's layers
    one by one, layer i the output of encoder layer i, is told apart only then)."""
    decode = clause.require("decode")
    config = dataclasses.replace(SMALL, n_layers=3)
    model, params = H.build_stacks(clause, env, rng, config)
    params = {name: t.clone() for name, t in params.items()}  # not views of the live weights
    reading = H.reading_of(clause, env, rng, model, params, config, "decoder")
    d = config.d_model
    y, mask = env.randn(2, 4, d, generator=rng), _real(env, 2, 5)
    memory, other = env.randn(2, 5, d, generator=rng), env.randn(2, 5, d, generator=rng)

    def reads_memory(p: dict[str, Tensor], summary: str) -> None:
        """Deviate unless the output changes with the memory; name the bug that explains it."""
        now = decode(model, y, memory, mask)
        if error_ratio(decode(model, y, other, mask), now, env.tol) > 1.0:
            return
        run = functools.partial(H.decoder, y, memory, p, config, mask, reading)
        found = H.diagnosis(now, run(), H.stack_bugs(run, reading, "decoder"), env.tol)
        clause.deviates(summary, found or explain("memory-not-shared"))

    out = decode(model, y, memory, mask)
    from_encoder = None  # (the encoder's output, the decoder output for it)
    if clause.has("encode"):
        encoded = clause.require("encode")(model, env.randn(2, 5, d, generator=rng), mask)
        from_encoder = encoded, decode(model, y, encoded, mask)
    reads_memory(params, "the decoder output does not change when the encoder output changes")
    if clause.has("load_parameters"):
        load, read = clause.require("load_parameters"), clause.require("parameters")
        cross = [f"decoder.{i}.cross_attn.W_O" for i in range(config.n_layers)]
        for k in range(config.n_layers):
            load(model, {n: params[n] if i == k else 0 * params[n] for i, n in enumerate(cross)})
            back = {name: t.detach().clone() for name, t in read(model).items()}
            clause.expect(
                all(bool(back[n].eq(0).all()) == (i != k) for i, n in enumerate(cross)),
                f"silencing the encoder-decoder attention of every decoder layer but {k} "
                "silences other layers too (or none): the layers share their parameters",
                explain("shared-layers"),
            )
            reads_memory(
                back,
                f"decoder layer {k} does not read the encoder output: with the encoder-decoder "
                "attention of the other layers silenced, changing the encoder output leaves the "
                "decoder output unchanged",
            )
    run = functools.partial(H.decoder, y, memory, params, config, mask, reading)
    H.judge(clause, out, run(), "decoder output", env.tol,
            functools.partial(H.stack_bugs, run, reading, "decoder"))
    if clause.has("forward"):
        with clause.part("forward"):
            _forward_is_pieces(clause, env, rng, model, config)
    if from_encoder is not None:
        encoded, actual = from_encoder
        clause.expect(
            error_ratio(actual, H.decoder(y, encoded, params, config, mask, reading), env.tol)
            <= 1.0,
            "decoding the encoder's own output differs from the oracle given that output, while "
            "decoding another memory matches it: the decoder reads something other than the "
            "memory it is given (such as the outputs of the encoder's layers)",
            explain("memory-not-shared"),
        )


def _forward_is_pieces(
    clause: Check, env: Env, rng: torch.Generator, model: torch.nn.Module, config: Config
) -> None:
    """The whole model's ``forward`` (as its users call it) computes what its pieces compose:
    embed and encode the source, embed the target, decode it against that memory, project. A
    decoder that reads something other than the final encoder output only in ``forward`` shows
    here; the pieces are judged against the oracle by the other clauses."""
    src, src_mask = H.tokens(rng, config, 2, 6, lengths=[6, 4])
    tgt_in, _ = H.tokens(rng, config, 2, 5, vocab=config.tgt_vocab)
    src, src_mask, tgt_in = src.to(env.device), src_mask.to(env.device), tgt_in.to(env.device)
    whole = clause.require("forward")(model, src, tgt_in, src_mask)
    composed = H.pieces(clause, model, src, src_mask, tgt_in)
    if declared(clause.adapter, "outputs") == "log-probs":
        whole, composed = whole.log_softmax(-1), composed.log_softmax(-1)
    clause.close(whole, composed, "forward(src, tgt_in) vs the pieces (encode, decode, project)",
                 env.tol)
