"""Measuring dropout (5.4): what training mode does to one sub-layer's output.

A probe (:func:`probe`) builds a one-layer encoder whose sub-layer outputs are readable from
the encoder's output (:func:`probe_params`, :func:`read`), and compares training mode with
evaluation mode: the factors by which training mode scales each entry. Their pattern
(:func:`pattern_of`, :func:`lattice`) tells where dropout acts; their share of zeros and scale
(:class:`Rate`, :func:`residual_rate`) give its rate, which :func:`judge_rates` judges.
With every sub-layer output dropped (P_drop = 1), a post-norm stack is a chain of its
LayerNorms (:func:`norm_chain`, :func:`final_norms`), in the LayerNorms a model may use
(:func:`norms_to_try`). Used by ``spec/suite/test_5_training.py``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Literal

import torch
from torch import Tensor, nn

from spec.adapter import Config
from spec.check import Check, Env
from spec.diagnosis import explain
from spec.oracle import sub
from spec.tolerances import Tolerance, error_ratio

from .models import SMALL, build
from .readings import Reading, layer_norm
from .stacks import reading_of


def with_dropout(config: Config, p: float, **changes: int) -> Config:
    """``config`` with P_drop = ``p`` (and other ``changes``)."""
    return dataclasses.replace(config, dropout=p, **changes)  # type: ignore[arg-type]


SITES = ("attention", "ffn")
"""The sub-layers of an encoder layer that a dropout probe looks at, in that order."""
PROBE = (8, 7)
"""A dropout probe's batch: 8 sequences of 7 identical positions (so 7 keys for each query)."""
CARRY = 8
"""A probed sub-layer's output is non-zero in the first CARRY features only."""
RATE = 0.3
"""The P_drop, besides 0, at which the effective dropout rates are measured."""
Z = 5.0
"""How many binomial standard deviations a measured drop share may miss its rate by."""


def factor_delta(tol: Tolerance) -> float:
    """How far (relative) two measured dropout factors may differ and count as equal: many
    times the rounding of the dtype, at most 0.1 (the factors compared differ by 1/7 or more)."""
    return min(0.1, 20 * (tol.rtol + tol.atol))


def probe_params(clause: Check, params: dict[str, Tensor], site: str,
                  v: Tensor) -> dict[str, Tensor]:
    """Canonical parameters (float64, CPU) for a probe of ``site`` on the identical inputs ``v``
    (zero mean, unit variance) of a one-layer encoder.

    Every LayerNorm of the encoder gets gain 1 and bias 0, the output biases b^O and b_2 (and
    b_1) are zero where the model has them, and one sub-layer is off: zero W_2 (the FFN adds
    nothing, whatever its activation or gate) or zero W^O. The other sub-layer's output is
    non-zero in the first :data:`CARRY` features only (+-3 there) and factors as
    ``value x row``: for ``"attention"``, W^O reads only head 0's output (so dropping attention
    weights scales the whole output of a position by m / (7 (1 - q)) for m of 7 kept weights);
    for ``"ffn"``, W_1 gives every hidden unit the pre-activation 1 and W_2 = 1 row (so
    dropping hidden units scales the whole output of a position alike). Shapes (d_ff included)
    are the model's own.
    """
    a, f = "encoder.0.self_attn.", "encoder.0.ffn."
    missing = [n for n in (a + "W_V", a + "W_O", f + "W_1", f + "W_2") if n not in params]
    if missing:
        clause.not_provided("parameters", f"no canonical {', '.join(missing)}")
    q = {n: t.detach().to("cpu", torch.float64).clone() for n, t in params.items()}
    for name, t in q.items():
        if name.startswith("encoder.") and name.endswith((".gamma", ".beta")):
            t.fill_(1.0 if name.endswith(".gamma") else 0.0)
    for name in (a + "b_O", f + "b_1", f + "b_2"):
        if name in q:
            q[name].zero_()
    row = torch.tensor([3.0, -3.0], dtype=torch.float64).repeat(CARRY // 2)
    w_o, w_2 = torch.zeros_like(q[a + "W_O"]), torch.zeros_like(q[f + "W_2"])
    if site == "attention":  # uniform weights over equal values: head 0 outputs its value o
        o = v @ q[a + "W_V"][0] + (q[a + "b_V"][0] if a + "b_V" in q else 0.0)
        w_o[: o.numel(), :CARRY] = torch.outer(o / o.dot(o), row)
    else:  # LayerNorm(v) = v, so v . v / d_model = 1 for every hidden unit
        q[f + "W_1"] = (v / v.numel()).unsqueeze(1).expand_as(q[f + "W_1"]).clone()
        w_2[:, :CARRY] = row / w_2.shape[0]
    q[a + "W_O"], q[f + "W_2"] = w_o, w_2
    return q


def read(out: Tensor, x: Tensor, tol: Tolerance) -> tuple[Tensor, bool]:
    """The sub-layer output that an encoder output ``out`` ``[B, L, d]`` shows in the first
    :data:`CARRY` features, for inputs ``x`` whose other features get no sub-layer output.

    LayerNorms with gain 1 and bias 0 (whatever their epsilon or variance, pre- or post-norm,
    however many) map the sum z = x + s at a position to a z + b, with one a and b for all
    features; they are fitted on the features without output, and g = (out - b) / a - x is s
    there, up to a positive factor that depends on x only. Returns g ``[B L, CARRY]`` and
    whether the fit holds within ``tol`` (it fails when something else, dropout on the
    residual stream for one, acts on the features without output).
    """
    y = out.detach().to("cpu", torch.float64).flatten(0, 1)
    x = x.detach().to("cpu", torch.float64).flatten(0, 1)
    xs, ys = x[:, CARRY:], y[:, CARRY:]
    xc, yc = xs - xs.mean(-1, keepdim=True), ys - ys.mean(-1, keepdim=True)
    a = (xc * yc).sum(-1, keepdim=True) / (xc * xc).sum(-1, keepdim=True)
    b = ys.mean(-1, keepdim=True) - a * xs.mean(-1, keepdim=True)
    return (y[:, :CARRY] - b) / a - x[:, :CARRY], error_ratio(ys, a * xs + b, tol) <= 1.0


def probe(
    clause: Check, env: Env, rng: torch.Generator, p: float
) -> dict[str, Tensor | None]:
    """For each of :data:`SITES`, the factors ``[positions, CARRY]`` by which training mode
    scales the entries of that sub-layer's output (1: as in evaluation mode), in a one-layer
    encoder built with P_drop = ``p`` (:func:`probe_params`, :func:`read`); None where
    training mode also changes the features without sub-layer output (dropout on the residual
    stream).

    The factors are told from the model itself, in evaluation mode, so its LayerNorm, FFN
    activation, gating or hidden norms need no oracle. Premises: evaluation mode is
    deterministic (5.4/eval-deterministic) and shows the probed output; otherwise the probe is
    NOT PROVIDED, saying which.
    """
    config = with_dropout(SMALL, p, n_layers=1)
    model, params = build(clause, env, rng, config)
    v = torch.randn(config.d_model, generator=rng, dtype=torch.float64)
    v = (v - v.mean()) / v.std(unbiased=False)
    x = v.expand(*PROBE, -1).contiguous().to(env.device, env.dtype)
    mask = torch.ones(*PROBE, dtype=torch.bool, device=env.device)
    encode, load = clause.require("encode"), clause.require("load_parameters")
    factors: dict[str, Tensor | None] = {}
    for site in SITES:
        load(model, {n: t.to(env.device, env.dtype)
                     for n, t in probe_params(clause, params, site, v).items()})
        model.eval()
        whole, again = encode(model, x, mask), encode(model, x, mask)
        model.train()
        dropped = encode(model, x, mask)
        model.eval()
        if not torch.equal(whole, again):
            clause.not_provided("a dropout probe", "it compares training mode with evaluation "
                                "mode, and two evaluation-mode calls differ "
                                "(5.4/eval-deterministic)")
        g, fits = read(whole, x, env.tol)
        if not fits or bool((g.abs() < 0.3).any()):
            clause.not_provided("a dropout probe", f"in evaluation mode the encoder output does "
                                f"not show the {site} sub-layer's output (LayerNorms with gain 1 "
                                "and bias 0 should map x + Sublayer(x) affinely)")
        h, fits = read(dropped, x, env.tol)
        factors[site] = h / g if fits else None
    return factors


Pattern = Literal["entrywise", "per-position", "unexplained"]


def pattern_of(f: Tensor, delta: float) -> tuple[Pattern, float | None]:
    """How training mode scales a probed sub-layer output, from its factors ``f``:

    * ``"entrywise"``, K: every factor is 0, 1 or one constant K (None: no entry kept): entries
      are dropped one by one and the kept ones scaled by K, as dropout on the sub-layer output
      does (K = 1 / (1 - P_drop));
    * ``"per-position"``: the non-zero factors of a position are one value, which varies
      between positions: something before the sub-layer's last linear map scales the whole
      output of a position (dropout on attention weights or FFN hidden units);
    * ``"unexplained"``: neither.
    """
    kept = f.abs() > delta
    other = f[kept & ((f - 1).abs() > delta)]
    if not other.numel():
        return "entrywise", 1.0 if bool(kept.any()) else None
    k = float(other.median())
    if bool(((other - k).abs() <= delta * abs(k)).all()):
        return "entrywise", k
    top = torch.where(kept, f, -math.inf).amax(-1)
    low = torch.where(kept, f, math.inf).amin(-1)
    rows = kept.any(-1)
    if bool(((top - low)[rows] <= delta * top[rows].abs()).all()):
        return "per-position", None
    return "unexplained", None


def lattice(c: Tensor, n: int, delta: float) -> float | None:
    """The largest unit u >= 1/n of which every value of ``c`` (> 0) is a multiple m u with
    m <= n, if any: what dropout on the weights of a position that attends uniformly to n
    equal values gives (m of the n weights kept, each scaled by 1 / (1 - q): u = 1 / (n (1 -
    q)), times the scale of the residual dropout)."""
    for m in range(1, n + 1):
        u = float(c.min()) / m
        if u < (1 - delta) / n:
            break
        k = (c / u).round()
        if bool(((c - k * u).abs() <= delta * c).all()) and bool((k <= n).all()):
            return u
    return None


@dataclasses.dataclass(frozen=True)
class Rate:
    """A measured dropout: the share of ``n`` entries dropped, and the scale of the kept ones
    (None where it cannot be measured)."""

    share: float
    n: int
    scale: float | None

    def fits(self, p: float, delta: float) -> bool:
        """Whether this is inverted dropout at rate ``p``: the share within :data:`Z` binomial
        standard deviations of p (exactly 0 for p = 0), the scale 1 / (1 - p)."""
        margin = Z * math.sqrt(p * (1 - p) / self.n) + 0.5 / self.n
        scale = self.scale is None or abs(self.scale * (1 - p) - 1) <= delta
        return abs(self.share - p) <= margin and scale


def residual_rate(f: Tensor, delta: float) -> Rate | None:
    """The dropout of a sub-layer's output, from a probe's factors: the share of zero factors
    at the positions that keep any (a position whose whole output is scaled away, by dropout
    inside the sub-layer, says nothing about it), and the scale K of an entrywise pattern.
    None for an unexplained pattern."""
    pattern, k = pattern_of(f, delta)
    if pattern == "unexplained":
        return None
    rows = f[(f.abs() > delta).any(-1)]
    if not rows.numel():
        return Rate(1.0, f.numel(), k)
    return Rate(float((rows.abs() <= delta).sum()) / rows.numel(), rows.numel(),
                k if pattern == "entrywise" else None)


def judge_rates(
    clause: Check, what: str, rates: dict[float, Rate], delta: float, none: str
) -> None:
    """Deviate unless the dropout measured at each P_drop is inverted dropout at that rate.

    Diagnoses: ``double-dropout`` when a measurement is dropout at 1 - (1 - P_drop)^2 with
    the scale 1 / (1 - P_drop)^2; when the measurements at all the P_drop tried are one and
    the same dropout (rate 1 - 1 / scale), ``none`` (the bug of no dropout) for rate 0 and
    ``dropout-rate-ignored`` for another; none otherwise.
    """
    for p, rate in rates.items():
        if rate.fits(p, delta):
            continue
        bug = None
        if p > 0 and rate.scale is not None and rate.fits(1 - (1 - p) ** 2, delta):
            bug = "double-dropout"
        elif rate.scale and rate.scale >= 1 and all(r.fits(1 - 1 / rate.scale, delta)
                                                    for r in rates.values()):
            bug = none if rate.fits(0.0, delta) else "dropout-rate-ignored"
        scale = "" if rate.scale is None else f", the kept ones scaled by {rate.scale:.3g}"
        clause.deviates(f"{what}: with P_drop = {p:g}, training mode drops {rate.share:.1%} of "
                        f"{rate.n} entries{scale}; dropout at P_drop drops {p:.0%} (within "
                        f"{Z:g} binomial standard deviations) and scales by {1 / (1 - p):.3g}",
                        explain(bug))


# -- P_drop = 1: every sub-layer output dropped (5.4/residual-dropout) --------------------------


def norm_chain(x: Tensor, params: dict[str, Tensor], names: Iterable[str], ln: Reading) -> Tensor:
    """LayerNorm after LayerNorm: what a stack of wrapped sub-layers whose outputs all vanish
    computes (post-norm), with the LayerNorm of ``ln``."""
    for name in names:
        x = layer_norm(x, sub(params, name), ln)
    return x


def final_norms(x: Tensor, params: dict[str, Tensor], stack: str, ln: Reading,
                hidden: bool = False) -> Tensor:
    """The stack's extra final LayerNorm, if it has one (variant ``final-norm`` of 3.1), then,
    with ``hidden``, the unexposed one (gain 1, bias 0) of the model's reading (a deviation
    that 3.1/no-final-norm reports)."""
    if f"{stack}.norm.gamma" in params:
        x = layer_norm(x, sub(params, f"{stack}.norm"), ln)
    if hidden:
        ones = torch.ones(x.shape[-1], dtype=torch.float64, device=x.device)
        x = layer_norm(x, {"gamma": ones, "beta": 0 * ones}, ln)
    return x.double()


def first_close(actual: Tensor, candidates: dict[str, Tensor], tol: Tolerance) -> str | None:
    """The name of the first of ``candidates`` that ``actual`` matches within ``tol``."""
    for name, candidate in candidates.items():
        if error_ratio(actual, candidate, tol) <= 1.0:
            return name
    return None


EPS = (1e-5, 1e-6)
"""LayerNorm epsilons tried where a test needs one (3.1/residual-norm judges which is used)."""


def norms_to_try(clause: Check, env: Env, model: nn.Module, params: dict[str, Tensor],
                 config: Config) -> tuple[dict[str, Reading], Reading]:
    """The LayerNorms to try, by name: PyTorch's with each of :data:`EPS`, and the model's own
    (its epsilon, variance and place of epsilon, variants of 3.1/residual-norm, which judges
    them); and the model's whole reading (found on the model in evaluation mode with a probe
    drawn from a generator of its own, so that the test's random inputs stay the same)."""
    found = reading_of(clause, env, torch.Generator().manual_seed(0), model, params, config,
                       "encoder")
    norms = {f"eps={eps:g}": Reading(eps=eps) for eps in EPS}
    if norm_of(found) not in norms.values():
        norms["the model's LayerNorm"] = norm_of(found)
    return norms, found


def with_ffn_biases(params: dict[str, Tensor]) -> dict[str, Tensor]:
    """``params`` with zero FFN biases where the model has none (an FFN without biases is Eq. 2
    with b_1 = b_2 = 0), so that the oracle can run it."""
    out = dict(params)
    for name, w in params.items():
        if name.endswith((".ffn.W_1", ".ffn.W_2")):
            bias = name[: -len("W_1")] + ("b_1" if name.endswith("W_1") else "b_2")
            out.setdefault(bias, torch.zeros_like(w[0]))
    return out


def norm_of(reading: Reading) -> Reading:
    """Only the LayerNorm of ``reading`` (post-norm, ReLU)."""
    return Reading(eps=reading.eps, unbiased=reading.unbiased,
                   eps_inside_sqrt=reading.eps_inside_sqrt)
