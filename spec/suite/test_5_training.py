"""5.3 Optimizer and 5.4 Regularization: Adam(0.9, 0.98, 1e-9), the Eq. 3 schedule, residual
and embedding dropout (and nowhere else), no dropout in evaluation, label smoothing 0.1."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Literal

import pytest
import torch
from torch import Tensor, nn

from spec import oracle
from spec.adapter import Config
from spec.check import Check, Env
from spec.diagnosis import explain
from spec.oracle import Spread
from spec.suite import helpers as H
from spec.suite.helpers import SMALL, build, cpu_float64, tokens
from spec.tolerances import Tolerance, error_ratio, tolerance

F64 = cpu_float64()

# -- 5.3 ----------------------------------------------------------------------------------------


def _adam(grads: list[Tensor], x0: Tensor, lr: float, betas: tuple[float, float], eps: float,
          weight_decay: float = 0.0) -> Tensor:
    """Adam (Kingma and Ba, Algorithm 1) in float64, one update per gradient; ``weight_decay``
    is AdamW's decoupled decay."""
    b1, b2 = betas
    x, m, v = x0.clone(), torch.zeros_like(x0), torch.zeros_like(x0)
    for t, g in enumerate(grads, 1):
        x = x * (1 - lr * weight_decay)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        x = x - lr * m_hat / (v_hat.sqrt() + eps)
    return x


@pytest.mark.clause("5.3/adam")
def test_adam(clause: Check, rng: torch.Generator) -> None:
    """The optimizer's updates are Adam's with beta1 = 0.9, beta2 = 0.98, eps = 1e-9.

    Told by behaviour, in float64: 12 updates with gradients that grow over time (so beta2
    matters) and whose entries span 1e-10 to 1 (so eps matters), compared with Adam computed
    literally, at the learning rate the optimizer's first parameter group states.
    """
    x0 = torch.randn(64, generator=rng, dtype=torch.float64)
    scales = 10.0 ** torch.linspace(-10, 0, 64, dtype=torch.float64)
    grads = [torch.randn(64, generator=rng, dtype=torch.float64) * scales * (1 + t)
             for t in range(12)]
    param = nn.Parameter(x0.clone())
    optimizer = clause.require("optimizer")([param])
    groups = getattr(optimizer, "param_groups", None)
    clause.expect(bool(groups), "the optimizer has no param_groups to read its learning rate")
    lr = float(optimizer.param_groups[0]["lr"])
    for g in grads:
        optimizer.zero_grad()
        param.grad = g.clone()
        optimizer.step()
    bugs = {
        "adam-beta2-0.999": _adam(grads, x0, lr, (0.9, 0.999), 1e-9),
        "adam-eps-1e-8": _adam(grads, x0, lr, (0.9, 0.98), 1e-8),
        "adam-defaults": _adam(grads, x0, lr, (0.9, 0.999), 1e-8),
        "adamw-weight-decay": _adam(grads, x0, lr, (0.9, 0.98), 1e-9, weight_decay=0.01),
    }
    clause.close(param.detach(), _adam(grads, x0, lr, (0.9, 0.98), 1e-9),
                 f"the parameter after 12 updates at lr = {lr:g}", F64.tol, bugs)


STEPS = (1, 2, 3, 10, 100, 1000, 3999, 4000, 4001, 8000, 16000, 100000)


@pytest.mark.clause("5.3/eq3")
def test_eq3(clause: Check) -> None:
    """lrate = d_model^-0.5 min(step^-0.5, step warmup^-1.5), checked at steps across warmup
    for (d_model, warmup) = (512, 4000), (1024, 4000), (16, 10); the peak is at step = warmup.
    At step 0 Eq. 3 is undefined: raising is the paper, a value is variant ``step-zero``."""
    schedule_of = clause.require("lr_schedule")
    for d_model, warmup in ((512, 4000), (1024, 4000), (16, 10)):
        steps = STEPS if warmup == 4000 else tuple(range(1, 41))
        schedule = schedule_of(d_model, warmup)
        actual = torch.tensor([float(schedule(s)) for s in steps], dtype=torch.float64)

        def eq3(shift: int = 0, d: int = d_model, w: int = warmup,
                steps: tuple[int, ...] = steps) -> Tensor:
            return torch.tensor([oracle.noam_lr(s + shift, d, w) for s in steps],
                                dtype=torch.float64)

        bugs = {
            "schedule-off-by-one": eq3(shift=1),
            "schedule-no-dmodel-factor": eq3() * math.sqrt(d_model),
            "schedule-fixed-warmup": eq3(w=4000),
        }
        clause.close(actual, eq3(), f"lrate(step) for d_model={d_model}, warmup={warmup}",
                     F64.tol, bugs)
        peak = steps[int(actual.argmax())]
        clause.expect(peak == warmup, f"the peak is at step {peak}, not at warmup={warmup}")
    try:
        at_zero = schedule_of(512, 4000)(0)
    except (ArithmeticError, ValueError):
        return
    clause.variant("step-zero", f"lrate(0) = {float(at_zero):g}, where Eq. 3 is undefined")


# -- 5.4 ----------------------------------------------------------------------------------------


def _with_dropout(config: Config, p: float, **changes: int) -> Config:
    return dataclasses.replace(config, dropout=p, **changes)  # type: ignore[arg-type]


def _norms(x: Tensor, params: dict[str, Tensor], names: Iterable[str], ln: H.Reading) -> Tensor:
    """LayerNorm after LayerNorm: what a stack of wrapped sub-layers whose outputs all vanish
    computes (post-norm), with the LayerNorm of ``ln``."""
    for name in names:
        x = H.layer_norm(x, H.sub(params, name), ln)
    return x


def _final(x: Tensor, params: dict[str, Tensor], stack: str, ln: H.Reading) -> Tensor:
    """The stack's extra final LayerNorm, if it has one (variant ``final-norm`` of 3.1)."""
    if f"{stack}.norm.gamma" not in params:
        return x.double()
    return H.layer_norm(x, H.sub(params, f"{stack}.norm"), ln)


def _first_close(actual: Tensor, candidates: dict[str, Tensor], tol: Tolerance) -> str | None:
    for name, candidate in candidates.items():
        if error_ratio(actual, candidate, tol) <= 1.0:
            return name
    return None


EPS = (1e-5, 1e-6)
"""LayerNorm epsilons tried where a test needs one (3.1/residual-norm judges which is used)."""


def _reading(clause: Check, env: Env, model: nn.Module, params: dict[str, Tensor],
             config: Config) -> tuple[dict[str, H.Reading], H.Reading]:
    """The LayerNorms to try, by name: PyTorch's with each of :data:`EPS`, and the model's own
    (its epsilon, variance and place of epsilon, variants of 3.1/residual-norm, which judges
    them); and the model's whole reading (found on the model in evaluation mode with a probe
    drawn from a generator of its own, so that the test's random inputs stay the same)."""
    found = H.reading_of(clause, env, torch.Generator().manual_seed(0), model, params, config,
                         "encoder")
    norms = {f"eps={eps:g}": H.Reading(eps=eps) for eps in EPS}
    if _layer_norm(found) not in norms.values():
        norms["the model's LayerNorm"] = _layer_norm(found)
    return norms, found


def _layer_norm(reading: H.Reading) -> H.Reading:
    """Only the LayerNorm of ``reading`` (post-norm, ReLU)."""
    return H.Reading(eps=reading.eps, unbiased=reading.unbiased,
                     eps_inside_sqrt=reading.eps_inside_sqrt)


@pytest.mark.clause("5.4/residual-dropout")
def test_residual_dropout(clause: Check, env: Env, rng: torch.Generator) -> None:
    """LayerNorm(x + Dropout(Sublayer(x))): with P_drop = 1, in training mode, every wrapped
    sub-layer reduces to LayerNorm(x), so the encoder maps x to LayerNorm_2(LayerNorm_1(x)) per
    layer and the decoder y to LayerNorm_3(LayerNorm_2(LayerNorm_1(y))).

    Pre-norm (x + Dropout(Sublayer(LayerNorm(x)))) reduces to the identity: variant
    ``pre-norm``. Dropout inside the sub-layers cannot change this outcome (the sub-layer output
    is dropped whole); 5.4/dropout-elsewhere tells those apart.
    """
    config = _with_dropout(SMALL, 1.0)
    model, params = build(clause, env, rng, config)
    lns, reading = _reading(clause, env, model, params, config)
    own = _layer_norm(reading)
    model.train()
    n = config.n_layers
    x = env.randn(2, 6, config.d_model, generator=rng)
    memory = env.randn(2, 5, config.d_model, generator=rng)
    src_mask = torch.ones(2, 5, dtype=torch.bool, device=env.device)
    x_mask = torch.ones(2, 6, dtype=torch.bool, device=env.device)
    runs = (
        ("encoder", clause.require("encode")(model, x, x_mask), ("norm_1", "norm_2")),
        ("decoder", clause.require("decode")(model, x, memory, src_mask),
         ("norm_1", "norm_2", "norm_3")),
    )
    for stack, actual, norms in runs:
        names = [f"{stack}.{i}.{k}" for i in range(n) for k in norms]
        paper = {name: _final(_norms(x, params, names, ln), params, stack, ln)
                 for name, ln in lns.items()}
        if _first_close(actual, paper, env.tol):
            continue
        pre = _final(x, params, stack, own)
        if error_ratio(actual, pre, env.tol) <= 1.0:
            clause.variant("pre-norm", f"with P_drop = 1 the {stack} is the identity (up to its "
                           "final norm): x + Dropout(Sublayer(LayerNorm(x)))")
            continue
        last = f"{stack}.{n - 1}.{norms[-1]}"
        if stack == "encoder":
            intact = oracle.encoder(x, params, n, config.h, x_mask)
        else:
            intact = oracle.decoder(x, memory, params, n, config.h, src_mask)
        bugs = {
            "no-residual-dropout": intact,
            "dropout-after-residual": _final(
                params[f"{last}.beta"].double().expand_as(x), params, stack, own),
        }
        clause.close(actual, paper["eps=1e-05"], f"{stack} output with P_drop = 1 (train mode)",
                     env.tol, bugs)


@pytest.mark.clause("5.4/embedding-dropout")
def test_embedding_dropout(clause: Check, env: Env, rng: torch.Generator) -> None:
    """Dropout(sqrt(d_model) E[t] + PE), in both stacks.

    With P_drop = 0.5 in training mode every output entry must be 0 or c times the
    evaluation-mode output (the same sum; c = 1 / (1 - P_drop) = 2 for the usual inverted
    dropout), and about half of them 0. Dropout on the embedding alone, before the encoding is
    added, leaves entries equal to PE or c sqrt(d_model) E + PE; no dropout leaves no zero.
    """
    model, _ = build(clause, env, rng, _with_dropout(SMALL, 0.5))
    ids, _ = tokens(rng, SMALL, 4, 12)
    ids = ids.to(env.device)
    pe = oracle.positional_encoding(12, SMALL.d_model).unsqueeze(0)
    for method in ("embed_source", "embed_target"):
        embed = clause.require(method)
        model.eval()
        whole = embed(model, ids).detach().to("cpu", torch.float64)
        model.train()
        dropped = embed(model, ids).detach().to("cpu", torch.float64)
        big = whole.abs() > 0.1  # entries where 0 and c * whole are far apart
        zero = dropped.abs() <= env.tol.atol
        share = float((zero & big).sum()) / float(big.sum())
        if share == 0.0:
            clause.deviates(f"{method}: no entry is dropped in training mode with P_drop = 0.5",
                            explain("no-embedding-dropout"))
        kept = big & ~zero
        c = float((dropped[kept] / whole[kept]).median())
        expected = torch.where(zero, 0.0, c * whole)  # the nearer of the two allowed values
        one, other = pe.expand_as(whole), 2 * (whole - pe) + pe
        before = torch.where((dropped - one).abs() < (dropped - other).abs(), one, other)
        clause.close(dropped[big], expected[big], f"{method} in training mode: 0 or {c:.3g} x "
                     "the evaluation-mode output", env.tol,
                     {"dropout-before-positions": before[big]})
        clause.expect(0.3 <= share <= 0.7, f"{method}: {share:.0%} of the entries are dropped "
                      "with P_drop = 0.5")


def _unexplained(actual: Tensor, candidates: list[Tensor], tol: Tolerance) -> int:
    """How many positions of ``actual`` ``[B, L, d]`` match none of the candidates."""
    a = actual.detach().to("cpu", torch.float64)
    worst = []
    for e in candidates:
        e = e.to("cpu", torch.float64)
        ratio = (a - e).abs() / (tol.atol + tol.rtol * e.abs())
        worst.append(ratio.amax(dim=-1))
    return int((torch.stack(worst).amin(dim=0) > 1.0).sum())


def _scaled(params: dict[str, Tensor], name: str, k: float) -> dict[str, Tensor]:
    return {**params, name: params[name] * k}


@pytest.mark.clause("5.4/dropout-elsewhere")
def test_dropout_elsewhere(clause: Check, env: Env, rng: torch.Generator) -> None:
    """Dropout only on sub-layer outputs (and embedding sums): none on the attention weights,
    none inside the FFN.

    A one-layer encoder in training mode with P_drop = 0.5, weights chosen so that a sub-layer's
    output s is non-zero in feature 0 only. Residual dropout then leaves x + k s with
    k in {0, 1 / (1 - P_drop)} at every position (k = 1 also accepted: 5.4/residual-dropout
    judges that), so the output is one of a few oracle outputs, post- or pre-norm, with the
    model's LayerNorm and FFN activation (variants of 3.1/residual-norm and 3.3/eq2, judged
    there).

    * attention-weight dropout: all positions get the same input, so the attention weights are
      uniform and the attention output is v W^O whatever the weights are, unless some of them
      are dropped: s is then scaled by a random factor, and positions match no candidate;
    * FFN dropout: every hidden unit is active and feeds feature 0, so dropping some of them
      scales s by a random factor.

    Each is a variant; 56 positions make missing a present dropout unlikely (below 2^-50).
    First, with every sub-layer output zero, training mode must change nothing: dropout on the
    residual stream (e.g. LayerNorm(Dropout(x + Sublayer(x)))) is dropout elsewhere that is no
    named variant, and would make the two probes meaningless.
    """
    p = 0.5
    config = _with_dropout(SMALL, p, n_layers=1)
    model, params = build(clause, env, rng, config)
    params = {name: t.clone() for name, t in params.items()}  # not views of the live weights
    lns, reading = _reading(clause, env, model, params, config)
    model.train()
    d, d_ff = config.d_model, config.d_ff

    def candidates(x: Tensor, q: dict[str, Tensor], name: str) -> list[Tensor]:
        return [H.encoder(x, _scaled(q, name, k), config, reading=dataclasses.replace(
                    ln, norm=norm, activation=reading.activation))
                for k in (0.0, 1.0, 1 / (1 - p)) for norm in ("post", "pre") for ln in lns.values()]

    def load(q: dict[str, Tensor]) -> dict[str, Tensor]:
        """Load ``q`` and return what the adapter reads back (what the oracle uses)."""
        clause.require("load_parameters")(model, q)
        return {n: t.detach().clone() for n, t in clause.require("parameters")(model).items()}

    unit = {n: torch.ones_like(t) if n.endswith("gamma") else torch.zeros_like(t)
            for n, t in params.items() if ".norm_" in n}
    zero = {n: torch.zeros_like(params[n]) for n in ("encoder.0.self_attn.b_O",) if n in params}
    found = []

    mask = torch.ones(8, 7, dtype=torch.bool, device=env.device)
    no_ffn = {f"encoder.0.ffn.{n}": torch.zeros_like(params[f"encoder.0.ffn.{n}"])
              for n in ("W_1", "b_1", "W_2", "b_2")}
    w_o = torch.zeros_like(params["encoder.0.self_attn.W_O"])

    # first, every sub-layer output zero: dropout must then change nothing
    q = load({**params, **unit, **zero, **no_ffn, "encoder.0.self_attn.W_O": w_o})
    x = env.randn(8, 7, d, generator=rng)
    out = clause.require("encode")(model, x, mask)
    if _unexplained(out, candidates(x, q, "encoder.0.self_attn.W_O"), env.tol):
        clause.deviates("with every sub-layer output zero, training mode (P_drop = 0.5) still "
                        "changes the encoder output: dropout acts on the residual stream or the "
                        "normalised output, not only on sub-layer outputs")

    # attention: identical positions, W^O feeding feature 0 only, FFN off
    w_o[:, 0] = 3 * params["encoder.0.self_attn.W_O"][:, 0]
    q = load({**params, **unit, **zero, **no_ffn, "encoder.0.self_attn.W_O": w_o})
    x = env.randn(8, 1, d, generator=rng).expand(8, 7, d).contiguous()
    out = clause.require("encode")(model, x, mask)
    if _unexplained(out, candidates(x, q, "encoder.0.self_attn.W_O"), env.tol):
        found.append("attention-dropout")

    # FFN: attention off, every hidden unit active and feeding feature 0
    g = torch.Generator().manual_seed(0)
    w_1 = torch.randn(d, d_ff, generator=g, dtype=torch.float64) * 0.1 / math.sqrt(d)
    b_1 = 1.0 + torch.rand(d_ff, generator=g, dtype=torch.float64)
    w_2 = torch.zeros(d_ff, d, dtype=torch.float64)
    w_2[:, 0] = (0.5 + torch.rand(d_ff, generator=g, dtype=torch.float64)) * 2.0 / float(b_1.sum())
    ffn = {"W_1": w_1, "b_1": b_1, "W_2": w_2, "b_2": torch.zeros(d, dtype=torch.float64)}
    q = {**params, **unit, **zero,
         "encoder.0.self_attn.W_O": torch.zeros_like(params["encoder.0.self_attn.W_O"]),
         **{f"encoder.0.ffn.{n}": t.to(env.device, env.dtype) for n, t in ffn.items()}}
    q = load(q)
    x = env.randn(8, 7, d, generator=rng)
    out = clause.require("encode")(model, x, mask)
    if _unexplained(out, candidates(x, q, "encoder.0.ffn.W_2"), env.tol):
        found.append("ffn-dropout")

    reasons = {"attention-dropout": "in training mode the attention output is rescaled at "
               "random although its values are all equal: the attention weights are dropped",
               "ffn-dropout": "in training mode the FFN output is rescaled at random with every "
               "hidden unit active: dropout acts inside the FFN"}
    for name in found:
        clause.variant(name, reasons[name])


@pytest.mark.clause("5.4/eval-deterministic")
def test_eval_deterministic(clause: Check, env: Env, rng: torch.Generator) -> None:
    """In evaluation mode (after training mode) a model built with P_drop = 0.5 gives the same
    output on every call, equal to that of the same weights built with P_drop = 0: the logits,
    or the decoder output for adapters without embeddings."""
    model, params = build(clause, env, rng, _with_dropout(SMALL, 0.5))
    plain = clause.require("model")(SMALL).to(env.device, env.dtype).eval()
    clause.require("load_parameters")(plain, params)
    batch = H.Batch.draw(rng, [8, 6, 3])
    model.train()
    batch.run(clause, model, env)  # a training-mode pass first: switching back must work
    model.eval()
    first, second = batch.run(clause, model, env), batch.run(clause, model, env)
    clause.expect(bool(torch.equal(first, second)), "two evaluation-mode calls differ",
                  explain("dropout-in-eval"))
    clause.close(first, batch.run(clause, plain, env), "evaluation-mode output, P_drop = 0.5 "
                 "vs the same weights with P_drop = 0", env.tol)


@pytest.mark.clause("5.4/label-smoothing")
def test_label_smoothing(clause: Check, env: Env, rng: torch.Generator) -> None:
    """The training target is 1 - 0.1 on the true token and 0.1 spread uniformly.

    The target distribution is read off the gradient: for cross-entropy (or KL, the same
    gradient) against targets q, d loss / d logits = (softmax(logits) - q) / N for the N
    non-padding positions (N = 1 for a summed loss). q must be oracle.smoothed_targets with
    eps = 0.1 spread over the V - 1 other tokens or the V - 2 that are neither true nor padding
    (both CONFORM); over all V tokens is variant ``spread-over-all``. Padding positions get no
    gradient. Then the loss value must be the cross-entropy (or the KL divergence: variant
    ``kl-loss``) against q.
    """
    loss_fn = clause.require("loss")
    pad, V = SMALL.pad_id, SMALL.tgt_vocab
    target, valid = tokens(rng, SMALL, 3, 7, vocab=V, lengths=[7, 5, 2])
    target[0, 3] = 1  # the start and end ids are ordinary targets
    target[1, 1] = 2
    z = (env.randn(3, 7, V, generator=rng) * 2).requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(z, target.to(env.device), pad)
        loss.backward()
    assert z.grad is not None
    grad = z.grad.to("cpu", torch.float64)
    clause.expect(bool((grad[~valid] == 0).all()),
                  "padding positions receive a gradient from the loss",
                  "padding-in-loss: positions whose target is padding contribute to the loss")
    # judged in the precision the loss is delivered in (a float32 loss of float64 logits is
    # judged as float32: practice/devices-dtypes is about dtypes)
    tol = tolerance(env.device, loss.dtype) if loss.dtype.itemsize < env.dtype.itemsize else env.tol
    real = target[valid]
    n = int(valid.sum())
    probs = z.detach().to("cpu", torch.float64).softmax(-1)[valid]
    found = _spread(probs, grad[valid], real, n, tol)
    if found is None:
        bugs = {"no-label-smoothing": oracle.smoothed_targets(real, V, 0.0, pad),
                "label-smoothing-0.2": oracle.smoothed_targets(real, V, 0.2, pad)}
        clause.close(probs - n * grad[valid], oracle.smoothed_targets(real, V, 0.1, pad),
                     "target distributions read off the gradient", tol, bugs)
        return
    reduction, spread = found
    if spread == "all":
        clause.variant("spread-over-all", "eps_ls is spread over all V tokens, the true one too")
    if reduction == "sum":
        clause.variant("summed-loss", "the loss is summed over the tokens, not averaged")
    value = {kl: oracle.label_smoothed_loss(z.detach(), target, 0.1, pad, spread=spread, kl=kl,
                                            reduction=reduction) for kl in (False, True)}
    if error_ratio(loss.detach(), value[True], tol) <= 1.0:
        clause.variant("kl-loss", "the loss is the KL divergence to the smoothed targets")
        return
    clause.close(loss.detach(), value[False], "the loss value (cross-entropy)", tol)


SPREADS: tuple[Spread, ...] = ("excluding-true-and-pad", "excluding-true", "all")
REDUCTIONS: tuple[Literal["mean", "sum"], ...] = ("mean", "sum")


def _spread(
    probs: Tensor, grad: Tensor, target: Tensor, n: int, tol: Tolerance
) -> tuple[Literal["mean", "sum"], Spread] | None:
    """(reduction, spread) whose smoothed targets q = softmax - N grad reproduce, if any."""
    for reduction in REDUCTIONS:
        q = probs - (n if reduction == "mean" else 1) * grad
        for spread in SPREADS:
            expected = oracle.smoothed_targets(target, probs.shape[-1], 0.1, SMALL.pad_id,
                                               spread=spread)
            if error_ratio(q, expected, tol) <= 1.0:
                return reduction, spread
    return None
