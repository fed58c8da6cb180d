"""3.5 Positional encoding: PE(pos, 2i) = sin(pos / 10000^(2i/d_model)),
PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model)), added to the embeddings of both stacks."""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

from spec import oracle
from spec.check import Check, Env
from spec.strategies import settings
from spec.suite.helpers import (
    SMALL,
    build,
    embedded,
    embedding_norm,
    normed,
    not_buffer,
    tokens,
    twin,
)
from spec.tolerances import TOLERANCES, Tolerance, close, tolerance

Layout = Literal["interleaved", "concatenated"]
Exponent = Literal["2i", "t2t"]


@dataclasses.dataclass(frozen=True)
class Reading:
    """One reading of 3.5/formula that the paper allows (see 3.5/formula's variants)."""

    layout: Layout = "interleaved"
    exponent: Exponent = "2i"
    start: int = 0

    def table(self, length: int, d_model: int) -> Tensor:
        return oracle.positional_encoding(
            length, d_model, layout=self.layout, exponent=self.exponent, start=self.start
        )

    def variants(self) -> list[tuple[str, str]]:
        out = []
        if self.layout == "concatenated":
            out.append(("concatenated-sin-cos", "sines and cosines are laid out as two halves"))
        if self.exponent == "t2t":
            out.append(("timescale-denominator", "frequencies 10000^(-i/(d_model/2 - 1)), as "
                        "in tensor2tensor"))
        if self.start:
            out.append(("one-based-positions", "positions are counted from 1"))
        return out


PAPER = Reading()
READINGS = [
    Reading(layout, exponent, start)
    for layout in ("interleaved", "concatenated")
    for exponent in ("2i", "t2t")
    for start in (0, 1)
]


def _tol(t: Tensor) -> Tolerance:
    """The tolerance for a table in ``t``'s dtype (float32's for dtypes without a CPU row)."""
    key = (t.device.type, t.dtype)
    return TOLERANCES[key] if key in TOLERANCES else tolerance("cpu", torch.float32)


def _formula_bugs(length: int, d_model: int) -> dict[str, Tensor]:
    return {
        "sin-cos-swapped": oracle.positional_encoding(length, d_model, swap_sin_cos=True),
        "exponent-i": oracle.positional_encoding(length, d_model, exponent="i"),
        "exponent-column": oracle.positional_encoding(length, d_model, exponent="column"),
        "wrong-base": oracle.positional_encoding(length, d_model, base=1000.0),
    }


def _reading(pe: Tensor, d_model: int) -> Reading | None:
    """The allowed reading whose table ``pe`` ``[L, d_model]`` matches, if any."""
    for reading in READINGS:
        if close(pe, reading.table(pe.shape[0], d_model), _tol(pe)):
            return reading
    return None


def _learned_positions(clause: Check) -> bool:
    """Whether the model has learned positional embeddings (``src_positions`` /
    ``tgt_positions`` among its canonical parameters): variant ``learned-positions``."""
    if not (clause.has("model") and clause.has("parameters")):
        return False
    names = clause.require("parameters")(clause.require("model")(SMALL))
    if {"src_positions", "tgt_positions"} & set(names):
        clause.variant("learned-positions", "learned positional embeddings (src_positions / "
                       "tgt_positions) instead of the sinusoids")
        return True
    return False


def _table(clause: Check, length: int, d_model: int) -> Tensor:
    pe = clause.require("positional_encoding")(length, d_model)
    clause.expect(
        isinstance(pe, Tensor) and tuple(pe.shape) == (length, d_model),
        f"positional_encoding({length}, {d_model}) returned "
        f"{list(pe.shape) if isinstance(pe, Tensor) else type(pe).__name__}, "
        f"expected [{length}, {d_model}]",
    )
    clause.expect(bool(torch.isfinite(pe).all()), f"positional_encoding({length}, {d_model}) "
                  "holds NaN or Inf")
    return pe.detach().cpu()


def _pairs(pe: Tensor) -> list[tuple[int, int]] | None:
    """The column pairs (a, b) that hold sin and cos of one frequency: a^2 + b^2 = 1 at every
    position. Interleaved (2i, 2i+1) or concatenated (i, i + d/2); None if neither."""
    d = pe.shape[1]
    tol = _tol(pe)
    pe = pe.double()
    for pairs in ([(2 * i, 2 * i + 1) for i in range(d // 2)],
                  [(i, i + d // 2) for i in range(d // 2)]):
        norms = torch.stack([pe[:, a] ** 2 + pe[:, b] ** 2 for a, b in pairs])
        if float((norms - 1).abs().max()) <= 10 * tol.atol:
            return pairs
    return None


def _angle(pe: Tensor, a: int, b: int, p: int, q: int) -> float:
    """The angle by which the 2-vector of columns (a, b) turns from position p to position q."""
    u, v = pe[p, [a, b]], pe[q, [a, b]]
    return math.atan2(float(u[0] * v[1] - u[1] * v[0]), float(u @ v))


@pytest.mark.clause("3.5/formula")
def test_formula(clause: Check) -> None:
    """The table equals sin/cos(pos / 10000^(2i/d_model)) in float64, or an allowed reading.

    Interleaved or concatenated halves, the paper's or tensor2tensor's frequency denominator,
    positions from 0 or 1: each non-paper choice is reported as a variant. Checked for
    d_model = 16 and 64, 64 positions, with the tolerance of the table's dtype.
    """
    if _learned_positions(clause):
        return
    found: set[Reading] = set()
    for d_model in (16, 64):
        pe = _table(clause, 64, d_model)
        if pe.dtype != torch.float64:
            clause.note(f"the table comes in {str(pe.dtype).removeprefix('torch.')}: judged at "
                        "that dtype's tolerance")
        reading = _reading(pe, d_model)
        if reading is None:
            clause.close(pe, PAPER.table(64, d_model), f"PE[64, {d_model}]", _tol(pe),
                         _formula_bugs(64, d_model))
        else:
            found.add(reading)
    clause.expect(len(found) == 1, f"the table follows different readings for different "
                  f"d_model: {sorted(map(str, found))}")
    for name, reason in found.pop().variants():
        clause.variant(name, reason)


def _positions(clause: Check, params: dict[str, Tensor], which: str, length: int) -> Tensor:
    """What should be added at the bottom of the ``which`` stack: the learned table (variant) or
    the sinusoids in the reading the adapter's ``positional_encoding`` follows (the paper's if
    it has none, or if it matches no allowed reading: 3.5/formula judges that)."""
    learned = f"{which}_positions"
    if learned in params:
        clause.variant("learned-positions", f"{learned} is a learned table")
        return params[learned].to("cpu", torch.float64)
    reading = PAPER
    if clause.has("positional_encoding"):
        reading = _reading(_table(clause, length, SMALL.d_model), SMALL.d_model) or PAPER
    return reading.table(length, SMALL.d_model)


def _float32_added(actual: Tensor, ids: Tensor, E: Tensor) -> Tensor | None:
    """What the model adds to c E[ids] ``[B, L, d_model]`` (c = sqrt(d_model), or the 1 or
    d_model of the scale bugs) when that is a float32 table: every entry a float32 number, to
    float64 tolerance (a float64 table misses its float32 rounding by about 1e-8 at most
    entries). None otherwise."""
    a, rows = actual.detach().to("cpu", torch.float64), E.to("cpu", torch.float64)[ids]
    d = E.shape[1]
    for c in (math.sqrt(d), 1.0, float(d)):
        added = a - c * rows
        if close(added, added.float().double(), tolerance("cpu", torch.float64)):
            return added
    return None


def _float32_table(tol: Tolerance, env: Env) -> Tolerance:
    """``tol`` widened, for the positional-encoding part of the sum, by the float32 tolerance
    (its atol + rtol |PE|, |PE| <= 1) that a table computed or stored in float32 is owed."""
    t32 = TOLERANCES.get((env.device.type, torch.float32), tolerance("cpu", torch.float32))
    return Tolerance(tol.rtol, tol.atol + t32.atol + t32.rtol,
                     f"{tol.why}; plus float32's atol + rtol for the float32 positional table")


def _added(clause: Check, env: Env, model: torch.nn.Module, params: dict[str, Tensor],
           ids: Tensor, method: str, which: str) -> bool:
    """Judge ``method``'s output as :func:`test_added` says; whether the table it adds is
    float32 (and was judged at float32 tolerance)."""
    clause.require(method)
    if f"{which}_embedding" not in params:
        clause.not_provided("parameters", f"no canonical {which}_embedding")
    actual = embedded(clause, method, model, ids, env)
    E, d = params[f"{which}_embedding"], SMALL.d_model
    P = _positions(clause, params, which, ids.shape[1])

    def emb(E: Tensor = E, positions: Tensor = P, scale: bool = True) -> Tensor:
        return oracle.embed(ids, E, positions=positions, scale=scale)

    norm = embedding_norm(params, which)
    out, eps = normed(norm, actual, emb(), env.tol)
    if eps is not None:
        clause.variant("embedding-norm", f"a LayerNorm (eps {eps:g}) on the sum of the "
                       "embeddings and the positional encoding, LN(sqrt(d_model) E + PE)")
    tol, float32 = env.tol, False
    if env.dtype == torch.float64 and norm is None and not close(actual, emb(), tol):
        added = _float32_added(actual, ids, E)
        if added is not None:
            not_buffer(clause, model, env, d, added)
            tol, float32 = _float32_table(tol, env), True
    bugs = {
        "no-positional-encoding": emb(positions=torch.zeros_like(P)),
        "positional-encoding-twice": emb(positions=2 * P),
        "no-embedding-scale": emb(scale=False),
        "embedding-scale-dmodel": emb(E * math.sqrt(d)),  # sqrt(d) E sqrt(d) = d E
    }
    if f"{which}_positions" not in params:
        for bug, table in _formula_bugs(ids.shape[1], d).items():
            bugs[bug] = emb(positions=table)
    clause.close(actual, out(emb()), f"{method}(ids)", tol,
                 {bug: out(x) for bug, x in bugs.items()})
    return float32


@pytest.mark.clause("3.5/added")
def test_added(clause: Check, env: Env, rng: torch.Generator) -> None:
    """Both stacks' inputs are sqrt(d_model) E[t] + PE(pos): the encoding is summed with the
    scaled embedding, in d_model dimensions, at every position. Each stack is judged on its own
    (a stack the adapter cannot embed is reported unchecked).

    * A LayerNorm on the sum whose gain and bias the adapter exposes (``src_embedding_norm``,
      ``tgt_embedding_norm``) is variant ``embedding-norm``: LN(sqrt(d_model) E + PE), with the
      epsilon (1e-5, 1e-6 or 1e-12) that fits.
    * A table the model adds in float32 (computed or stored so: every entry of what it adds is
      a float32 number) is judged in the float64 run too at the float32 tolerance for its part
      of the sum, and the report says so: the precision of a constant is not the paper's
      business. Unless the table is a plain attribute that ``.to()`` did not convert: then the
      float64 model adds a float32 table by mistake (``positions-not-buffer``).
    """
    model, params = build(clause, env, rng)
    ids, _ = tokens(rng, SMALL, 2, 11)
    float32 = False
    for method, which in (("embed_source", "src"), ("embed_target", "tgt")):
        with clause.part(method):
            float32 |= _added(clause, env, model, params, ids, method, which)
    clause.parts_done()
    if float32:
        clause.note("the positional table is float32: its part of the sum is judged at the "
                    "float32 tolerance")


def _frequencies(pe: Tensor, pairs: list[tuple[int, int]]) -> Tensor:
    """The angular frequency of each pair, measured from the table: a first estimate from one
    step, refined over the longest span that turns by at most about one radian."""
    omegas = []
    last = pe.shape[0] - 1
    for a, b in pairs:
        coarse = abs(_angle(pe, a, b, 0, 1))
        span = min(last, max(1, int(1.0 / coarse))) if coarse > 0 else last
        omegas.append(abs(_angle(pe, a, b, 0, span)) / span)
    return torch.tensor(omegas, dtype=torch.float64)


@pytest.mark.clause("3.5/wavelengths")
def test_wavelengths(clause: Check) -> None:
    """Wavelengths 2 pi / omega_i, measured from the table, go 2 pi, 2 pi r, 2 pi r^2, ... up to
    10000 * 2 pi.

    The paper's frequencies give r = 10000^(2/d_model) (the progression reaches 10000 * 2 pi
    one step after the last pair); tensor2tensor's denominator gives r = 10000^(1/(d_model/2 -
    1)) (the last pair is exactly 10000 * 2 pi): both are this clause. Measured on a 2048-row
    table, d_model = 16, with the relative tolerance of the table's dtype (the angle of each
    pair is read over a span of about one radian, so the measurement adds about one unit
    roundoff).
    """
    if _learned_positions(clause):
        return
    d = 16
    raw = _table(clause, 2048, d)
    pairs = _pairs(raw)
    if pairs is None:
        clause.deviates("the columns do not pair into the sine and cosine of one frequency, so "
                        "the wavelengths are not defined",
                        _diagnosis(_table(clause, 64, d), d))
    wavelengths = 2 * math.pi / _frequencies(raw.double(), pairs)
    i = torch.arange(d // 2, dtype=torch.float64)

    def progression(ratio: float) -> Tensor:
        return 2 * math.pi * ratio**i

    paper, t2t = progression(1e4 ** (2 / d)), progression(1e4 ** (1 / (d // 2 - 1)))
    tol = Tolerance(_tol(raw).rtol, 0.0, "relative, the rtol of the table's dtype")
    if close(wavelengths, t2t, tol):
        return
    bugs = {"exponent-i": progression(1e4 ** (1 / d)), "wrong-base": progression(1e3 ** (2 / d))}
    clause.close(wavelengths, paper, "wavelengths 2 pi / omega_i", tol, bugs)


def _diagnosis(pe: Tensor, d_model: int) -> str | None:
    """The known formula bug the table ``pe`` reproduces, if any."""
    from spec.diagnosis import diagnose, explain

    return explain(diagnose(pe, PAPER.table(pe.shape[0], d_model),
                            _formula_bugs(pe.shape[0], d_model), _tol(pe)))


@pytest.mark.clause("3.5/relative-linear")
def test_relative_linear(clause: Check) -> None:
    """For every offset k one rotation per (sin, cos) pair maps PE(pos) to PE(pos + k), the same
    rotation for every pos: z(pos + k) / z(pos) is one unit complex number per pair, with
    z = PE(pos, a) + i PE(pos, b) (which of a, b is the sine does not matter).
    """
    if _learned_positions(clause):  # asked once, not per example: it builds a model
        return
    clause.require("positional_encoding")  # NOT PROVIDED is decided here, before hypothesis runs

    @settings()
    @given(k=st.integers(1, 60), half=st.integers(2, 32))
    def check(k: int, half: int) -> None:
        d = 2 * half
        raw = _table(clause, 128, d)
        pairs = _pairs(raw)
        if pairs is None:
            clause.deviates("the columns do not pair into the sine and cosine of one frequency: "
                            "no rotation maps PE(pos) to PE(pos + k)", _diagnosis(raw[:64], d))
        pe = raw.double()
        z = torch.complex(pe[:, [a for a, _ in pairs]], pe[:, [b for _, b in pairs]])  # [L, d/2]
        ratio = z[k:] / z[:-k]  # |z| = 1 (checked by _pairs): well defined
        first = ratio[:1].expand_as(ratio)
        tol = _tol(raw)
        clause.close(torch.view_as_real(ratio), torch.view_as_real(first),
                     f"PE(pos + {k}) / PE(pos) per pair, for all pos", Tolerance(
                         0.0, 10 * tol.atol, "rotation of unit vectors: absolute"))

    check()


@pytest.mark.clause("3.5/extrapolation")
def test_extrapolation(clause: Check, env: Env, rng: torch.Generator) -> None:
    """The encoding is defined for any position, and nothing learned depends on position.

    * the table for 4096 positions is finite, bounded by 1, and its first 64 rows are the
      64-row table (an entry does not depend on how long the table is);
    * a model built for longer sequences (max_len 256 instead of 64) has exactly the same
      trainable parameters; with the same weights it embeds the first positions identically
      and embeds positions beyond 64.
    """
    if _learned_positions(clause):
        return
    d = SMALL.d_model
    if clause.has("positional_encoding"):
        long, short = _table(clause, 4096, d), _table(clause, 64, d)
        clause.expect(float(long.abs().max()) <= 1 + _tol(long).atol,
                      "the encoding of far positions leaves [-1, 1]")
        clause.close(long[:64], short, "the first 64 rows of a 4096-row table", _tol(short))
    model, params = build(clause, env, rng)
    longer = clause.require("model")(dataclasses.replace(SMALL, max_len=256))
    longer = longer.to(env.device, env.dtype).eval()
    n, n_long = (sum(p.numel() for p in m.parameters() if p.requires_grad)
                 for m in (model, longer))
    if n_long != n:
        clause.variant("learned-positions", f"the model has {n_long - n} more trainable "
                       "parameters when built for longer sequences: it learns something per "
                       "position")
        return
    longer = twin(clause, model, dataclasses.replace(SMALL, max_len=256), env, params)
    ids, _ = tokens(rng, SMALL, 2, 200)
    for method in ("embed_source", "embed_target"):
        with clause.part(method):  # a stack the implementation lacks is not checked
            far = embedded(clause, method, longer, ids, env)
            clause.expect(far.shape == (2, 200, d) and bool(torch.isfinite(far).all()),
                          f"{method} fails for positions beyond 64")
            clause.close(far[:, :40], embedded(clause, method, model, ids[:, :40], env),
                         f"{method} of the first 40 positions, max_len 256 vs 64", env.tol)
    clause.parts_done()
