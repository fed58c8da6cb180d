"""5.3 Optimizer and 5.4 Regularization: Adam(0.9, 0.98, 1e-9), the Eq. 3 schedule, residual
and embedding dropout (and nowhere else), no dropout in evaluation, label smoothing 0.1."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from spec import oracle
from spec.check import Check, Env
from spec.diagnosis import explain
from spec.oracle import Spread
from spec.suite import helpers as H
from spec.suite.helpers import SMALL, build, cpu_float64, dropout, tokens
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
    literally, at the learning rate the optimizer's first parameter group states. A rate that
    is not positive (a scheduler attached to the optimizer may have set it to 0 for step 0) is
    replaced by 1 in every group: at rate 0 no update moves, and any betas and eps would pass.
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
    if not lr > 0:  # also NaN
        clause.note(f"the optimizer's learning rate is {lr:g}, at which no update would show "
                    "Adam's betas and eps: judged at rate 1, set in every parameter group")
        lr = 1.0
        for group in optimizer.param_groups:
            group["lr"] = lr
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


@pytest.mark.clause("5.4/residual-dropout")
def test_residual_dropout(clause: Check, env: Env, rng: torch.Generator) -> None:
    """LayerNorm(x + Dropout(Sublayer(x))): with P_drop = 1, in training mode, every wrapped
    sub-layer reduces to LayerNorm(x), so the encoder maps x to LayerNorm_2(LayerNorm_1(x)) per
    layer and the decoder y to LayerNorm_3(LayerNorm_2(LayerNorm_1(y))).

    Pre-norm (x + Dropout(Sublayer(LayerNorm(x)))) reduces to the identity: variant
    ``pre-norm``. Dropout inside the sub-layers cannot change this outcome (the sub-layer output
    is dropped whole); 5.4/dropout-elsewhere tells those apart. First, though, the rate: the
    share of the sub-layer output's entries that training mode drops, and the scale of the
    kept ones, must be P_drop and 1 / (1 - P_drop), for P_drop = 0 (training mode then changes
    nothing) and 0.3 (:func:`dropout.probe`, :func:`dropout.judge_rates`); this part is not checked
    where the probe cannot read the rate (dropout on the residual stream, which the P_drop = 1
    part diagnoses).
    """
    delta = dropout.factor_delta(env.tol)
    with clause.part("the dropout rate on sub-layer outputs"):
        rates: dict[str, dict[float, dropout.Rate]] = {site: {} for site in dropout.SITES}
        for p in (dropout.RATE, 0.0):
            for site, f in dropout.probe(clause, env, rng, p).items():
                rate = None if f is None else dropout.residual_rate(f, delta)
                if rate is None:
                    clause.not_provided(f"the {site} output's dropout rate", "its probe shows "
                                        "dropout that is not on sub-layer outputs "
                                        "(5.4/dropout-elsewhere)")
                rates[site][p] = rate
        for site, measured in rates.items():
            dropout.judge_rates(clause, f"the {site} sub-layer's output", measured, delta,
                                "no-residual-dropout")
    with clause.part("the sub-layer outputs with P_drop = 1"):
        _residual_all_dropped(clause, env, rng)
    clause.parts_done()


def _residual_all_dropped(clause: Check, env: Env, rng: torch.Generator) -> None:
    """The P_drop = 1 part of :func:`test_residual_dropout`."""
    config = dropout.with_dropout(SMALL, 1.0)
    model, params = build(clause, env, rng, config)
    params = dropout.with_ffn_biases(params)
    lns, reading = dropout.norms_to_try(clause, env, model, params, config)
    own, hidden = dropout.norm_of(reading), reading.hidden_norm
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
        paper = {name: dropout.final_norms(dropout.norm_chain(x, params, names, ln), params,
                                           stack, ln, hidden)
                 for name, ln in lns.items()}
        if dropout.first_close(actual, paper, env.tol):
            continue
        pre = dropout.final_norms(x, params, stack, own, hidden)
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
            # the last norm's bias (zeros without one)
            "dropout-after-residual": dropout.final_norms(
                params.get(f"{last}.beta", torch.zeros(x.shape[-1])).double().expand_as(x),
                params, stack, own, hidden),
        }
        clause.close(actual, paper["eps=1e-05"], f"{stack} output with P_drop = 1 (train mode)",
                     env.tol, bugs)


@pytest.mark.clause("5.4/embedding-dropout")
def test_embedding_dropout(clause: Check, env: Env, rng: torch.Generator) -> None:
    """Dropout(sqrt(d_model) E[t] + PE), in both stacks (each judged where it exists), at the
    configured rate.

    With P_drop = 0.3 in training mode every output entry must be 0 or c times the
    evaluation-mode output (the same sum; c = 1 / (1 - P_drop) for the usual inverted
    dropout), with P_drop = 0 equal to it. Dropout on the embedding alone, before the encoding
    is added, leaves entries equal to PE or c sqrt(d_model) E + PE; no dropout leaves no zero.
    Then the rate: the share of dropped entries and c must be P_drop and 1 / (1 - P_drop)
    (:func:`dropout.judge_rates`), so that dropout applied twice or at a fixed rate shows.
    """
    ids, _ = tokens(rng, SMALL, 4, 12)
    ids = ids.to(env.device)
    pe = oracle.positional_encoding(12, SMALL.d_model).unsqueeze(0)
    models = {p: build(clause, env, rng, dropout.with_dropout(SMALL, p))[0]
              for p in (dropout.RATE, 0.0)}
    for method in ("embed_source", "embed_target"):  # each judged where it exists
        with clause.part(method):
            embed = clause.require(method)
            rates: dict[float, dropout.Rate] = {}
            for p, model in models.items():
                model.eval()
                whole = embed(model, ids).detach().to("cpu", torch.float64)
                model.train()
                dropped = embed(model, ids).detach().to("cpu", torch.float64)
                model.eval()
                big = whole.abs() > 0.1  # entries where 0 and c * whole are far apart
                zero = dropped.abs() <= env.tol.atol
                share = float((zero & big).sum()) / float(big.sum())
                if p > 0 and share == 0.0:
                    clause.deviates(f"{method}: no entry is dropped in training mode with "
                                    f"P_drop = {p:g}", explain("no-embedding-dropout"))
                kept = big & ~zero
                c = float((dropped[kept] / whole[kept]).median())
                expected = torch.where(zero, 0.0, c * whole)  # the nearer of the allowed values
                one, other = pe.expand_as(whole), (whole - pe) / (1 - p) + pe
                before = torch.where((dropped - one).abs() < (dropped - other).abs(), one, other)
                clause.close(dropped[big], expected[big], f"{method} in training mode, P_drop "
                             f"= {p:g}: 0 or {c:.3g} x the evaluation-mode output", env.tol,
                             {"dropout-before-positions": before[big]} if p > 0 else {})
                rates[p] = dropout.Rate(share, int(big.sum()), c)
            dropout.judge_rates(clause, method, rates, dropout.factor_delta(env.tol),
                                "no-embedding-dropout")
    clause.parts_done()


@pytest.mark.clause("5.4/dropout-elsewhere")
def test_dropout_elsewhere(clause: Check, env: Env, rng: torch.Generator) -> None:
    """Dropout only on sub-layer outputs (and embedding sums): none on the attention weights,
    none inside the FFN.

    A one-layer encoder in training mode with P_drop = 0.5, probed one sub-layer at a time
    (:func:`dropout.probe`): the factors by which training mode scales the entries of the
    sub-layer's output, at 56 positions with equal inputs. Dropout on the sub-layer output
    drops entries one by one and scales the kept ones alike (5.4/residual-dropout judges the
    rate). Anything else is dropout elsewhere, a variant only where its model matches:

    * ``attention-dropout``: every query attends uniformly to 7 equal values and W^O reads one
      head, so dropped weights scale the whole output of a position by m / (7 (1 - q)) for the
      m kept weights (times the residual's scale): one factor per position, on that lattice;
    * ``ffn-dropout``: every hidden unit is active and W_2 has rank one, so dropped hidden
      units scale the whole output of a position by one factor.

    Any other rescaling (e.g. dropout on the heads' outputs ahead of W^O: one factor per
    position, off the lattice) deviates, cause unknown. 28 informative positions make missing a
    present dropout unlikely.
    """
    delta = dropout.factor_delta(env.tol)
    for site, f in dropout.probe(clause, env, rng, 0.5).items():
        if f is None:
            clause.deviates(f"{site} probe: training mode changes the features to which the "
                            "sub-layer adds nothing: dropout acts on the residual stream or the "
                            "normalised output, not only on sub-layer outputs")
        pattern, _ = dropout.pattern_of(f, delta)
        if pattern == "entrywise":
            continue
        if pattern == "per-position" and site == "ffn":
            clause.variant("ffn-dropout", "in training mode the FFN output is rescaled at "
                           "random, by one factor per position, with every hidden unit active: "
                           "dropout acts inside the FFN")
            continue
        kept = f[(f.abs() > delta).any(-1)]
        u = (None if pattern == "unexplained"
             else dropout.lattice(kept.abs().amax(-1), dropout.PROBE[1], delta))
        if u is not None:
            clause.variant("attention-dropout", "in training mode the attention output is "
                           "rescaled at random although its values are all equal, by whole "
                           f"multiples of {u:.3g}, the share of one of the {dropout.PROBE[1]} "
                           "equal attention weights of a query once dropout has scaled it: the "
                           "attention weights are dropped")
            continue
        clause.deviates(f"in training mode the {site} sub-layer's output is rescaled in a way "
                        "that neither dropout on its output nor a named variant (attention-"
                        "weight or FFN hidden-unit dropout) explains: dropout elsewhere "
                        f"(factors seen: {sorted({round(float(x), 3) for x in f.flatten()})[:8]})")


@pytest.mark.clause("5.4/eval-deterministic")
def test_eval_deterministic(clause: Check, env: Env, rng: torch.Generator) -> None:
    """In evaluation mode (after training mode) a model built with P_drop = 0.5 gives the same
    output on every call, equal to that of the same weights built with P_drop = 0: the logits,
    or the decoder output for adapters without embeddings, or the encoder output for an
    implementation without a decoder."""
    model, params = build(clause, env, rng, dropout.with_dropout(SMALL, 0.5))
    plain = H.twin(clause, model, SMALL, env, params)
    batch = H.Batch.draw(rng, [8, 6, 3])

    def encoder(m: nn.Module) -> Tensor:
        x = batch.x.to(env.device, env.dtype)
        return clause.require("encode")(m, x, batch.src_mask.to(env.device))

    runs = (("the model's output", lambda m: batch.run(clause, m, env)),
            ("the encoder's output", encoder))
    for what, run in runs:  # the first that the implementation has
        with clause.part(what):
            model.train()
            run(model)  # a training-mode pass first: switching back must work
            model.eval()
            first, second = run(model), run(model)
            clause.expect(bool(torch.equal(first, second)), f"{what}: two evaluation-mode "
                          "calls differ", explain("dropout-in-eval"))
            clause.close(first, run(plain), f"{what} in evaluation mode, P_drop = 0.5 vs the "
                         "same weights with P_drop = 0", env.tol)
            break
    clause.parts_done()



@pytest.mark.clause("5.4/label-smoothing")
def test_label_smoothing(clause: Check, env: Env, rng: torch.Generator) -> None:
    """The training target is 1 - 0.1 on the true token and 0.1 spread uniformly.

    The target distribution is read off the gradient: for cross-entropy (or KL, the same
    gradient) against targets q, d loss / d logits = (softmax(logits) - q) / N, where N is the
    loss's normaliser, any positive constant (:func:`_read_off` finds it). q must be
    oracle.smoothed_targets with eps = 0.1 spread over all V tokens (Szegedy et al., whom the
    paper cites) or the V - 1 other tokens (the authors' code): both CONFORM; over the V - 2
    that are neither true nor padding is variant ``spread-excluding-true-and-pad``
    (:data:`SPREAD_VARIANTS`). N is the number of non-padding positions (CONFORMS) or one of
    :data:`NORMALISERS` (variants), or another constant (variant ``other-normaliser``); a
    normaliser that differs between positions deviates. Padding positions get no gradient
    (``padding-in-loss`` only when the gradient is that of padding read as a target). Then the
    loss value must be the cross-entropy (or the KL divergence: variant ``kl-loss``) against q,
    divided by N. A loss or gradient that is not finite deviates.
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
    clause.expect(z.grad is not None, "the loss does not depend on the logits (no gradient)")
    assert z.grad is not None
    grad = z.grad.to("cpu", torch.float64)
    finite = bool(torch.isfinite(loss.detach()).all()) and bool(torch.isfinite(grad).all())
    clause.expect(finite, f"the loss is not finite (loss {float(loss.detach()):g}, "
                  f"{int((~torch.isfinite(grad)).sum())} non-finite gradient entries)")
    # judged in the precision the loss is delivered in (a float32 loss of float64 logits is
    # judged as float32: practice/devices-dtypes is about dtypes)
    tol = tolerance(env.device, loss.dtype) if loss.dtype.itemsize < env.dtype.itemsize else env.tol
    probs = z.detach().to("cpu", torch.float64).softmax(-1)
    n, (b, t) = int(valid.sum()), target.shape
    if bool((grad[~valid] != 0).any()):  # the bug's model: padding read as an ordinary target
        model = any(_read_off(probs.flatten(0, 1), grad.flatten(0, 1), target.flatten(), eps,
                              (float(b * t), float(n)), tol, SPREADS[:2], None)
                    for eps in (0.1, 0.0))
        clause.deviates("padding positions receive a gradient from the loss",
                        explain("padding-in-loss") if model else None)
    real = target[valid]
    normalisers = {float(n): None, **{m(b, t): name for name, m in NORMALISERS.items()}}
    found = _read_off(probs[valid], grad[valid], real, 0.1, tuple(normalisers), tol)
    if found is None:
        what = "target distributions read off the gradient"
        paper = oracle.smoothed_targets(real, V, 0.1, pad, spread="excluding-true")
        for bug, eps in (("no-label-smoothing", 0.0), ("label-smoothing-0.2", 0.2)):
            fit = _read_off(probs[valid], grad[valid], real, eps, tuple(normalisers), tol)
            if fit is not None:
                clause.close(probs[valid] - fit[1] * grad[valid], paper, what, tol,
                             {bug: oracle.smoothed_targets(real, V, eps, pad, spread=fit[0])})
        clause.close(probs[valid] - n * grad[valid], paper, f"{what} (normaliser: the {n} "
                     "non-padding positions)", tol)
        return
    spread, norm = found
    named = SPREAD_VARIANTS[spread]
    if named:
        clause.variant(named, "eps_ls is spread over the V - 2 tokens that are neither true "
                       "nor padding")
    name = normalisers.get(norm, "other-normaliser")
    if name:
        clause.variant(name, f"the loss is divided by N = {norm:g} ({n} non-padding of {b} x "
                       f"{t} target positions)")
    value = {kl: oracle.label_smoothed_loss(z.detach(), target, 0.1, pad, spread=spread, kl=kl,
                                            reduction="sum") / norm for kl in (False, True)}
    if error_ratio(loss.detach(), value[True], tol) <= 1.0:
        clause.variant("kl-loss", "the loss is the KL divergence to the smoothed targets")
        return
    clause.close(loss.detach(), value[False], "the loss value (cross-entropy)", tol)


SPREADS: tuple[Spread, ...] = ("excluding-true", "all", "excluding-true-and-pad")
"""How eps_ls may be spread, the conforming readings first."""
SPREAD_VARIANTS: dict[Spread, str | None] = {
    "excluding-true": None, "all": None, "excluding-true-and-pad": "spread-excluding-true-and-pad",
}
"""The variant each spread is reported as (None: it conforms). Over all V tokens is the
definition of Szegedy et al., whom the paper cites; over the V - 1 others is the authors'
tensor2tensor code; over the V - 2 that are neither true nor padding (the Annotated
Transformer's) is a named variant."""
NORMALISERS: dict[str, Callable[[int, int], float]] = {
    "summed-loss": lambda b, t: 1.0,
    "mean-over-all-positions": lambda b, t: float(b * t),
    "mean-over-sentences": lambda b, t: float(b),
}
"""Loss normalisers N other than the number of non-padding positions that keep the targets
right, by variant name, as functions of the batch size B and the target length T: none (a
sum), B x T (all positions, padding included: KL with ``reduction='batchmean'`` over B x T
rows), B (KL with 'batchmean' over [B, T, V])."""


def _read_off(
    probs: Tensor, grad: Tensor, target: Tensor, eps: float, normalisers: tuple[float, ...],
    tol: Tolerance, spreads: tuple[Spread, ...] = SPREADS, pad: int | None = SMALL.pad_id,
) -> tuple[Spread, float] | None:
    """(spread, N) such that the smoothed targets q (``eps``, ``spread``) are
    probs - N grad within ``tol``, if any: N is the first of ``normalisers`` that fits, or else
    the least-squares N if it is positive and fits."""
    for spread in spreads:
        q = oracle.smoothed_targets(target, probs.shape[-1], eps, pad, spread=spread)
        for norm in normalisers:
            if error_ratio(probs - norm * grad, q, tol) <= 1.0:
                return spread, norm
        energy = float((grad * grad).sum())
        norm = float(((probs - q) * grad).sum()) / energy if energy else 0.0
        if norm > 0 and error_ratio(probs - norm * grad, q, tol) <= 1.0:
            return spread, norm
    return None
