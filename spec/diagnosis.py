"""Diagnosis: name the known bug whose output an implementation reproduces.

When a clause fails, its test computes, with the oracle's knobs, what the output would be under
each known bug that could explain the failure; :func:`diagnose` names the one that matches and
:func:`explain` says what the name means (:data:`KNOWN_BUGS`).

A bug candidate *matches* only when the implementation is within tolerance of it **and** the
correct oracle output is not: the correct output must miss by more than
:data:`DIAGNOSIS_MARGIN` times the tolerance (:mod:`spec.tolerances`). The margin keeps a bug
that barely changes the output on the given inputs (and so cannot be told apart from rounding)
from being named.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from .tolerances import Tolerance, error_ratio

__all__ = ["DIAGNOSIS_MARGIN", "KNOWN_BUGS", "diagnose", "explain", "matches"]

DIAGNOSIS_MARGIN: float = 10.0
"""A bug is named only if the correct output misses by more than this many tolerances."""

KNOWN_BUGS: dict[str, str] = {
    "no-scale": "the scores are not divided by sqrt(d_k)",
    "scale-dk": "the scores are divided by d_k instead of sqrt(d_k)",
    "scale-dmodel": "the scores are divided by sqrt(d_model) instead of sqrt(d_k)",
    "softmax-over-queries": "the softmax runs over the query axis instead of the key axis",
    "mask-inverted": "the mask is inverted: allowed connections are masked and illegal ones kept",
    "mask-ignored": "the mask is not applied",
    "causal-off-by-one-future": "the causal mask lets position i see position i+1",
    "causal-off-by-one-self": "the causal mask hides position i from itself",
    "slice-input": "each head sees a slice of the input instead of projecting the whole input",
    "no-output-projection": "the heads are concatenated without the output projection W^O",
    "concat-without-transpose": "the heads are concatenated by a reshape without moving the head axis",
    "pre-norm": "the norm is applied before the sub-layer (x + Sublayer(LayerNorm(x)))",
    "no-residual": "the residual connection is missing (LayerNorm(Sublayer(x)))",
    "no-relu": "the feed-forward network has no ReLU between its two linear maps",
    "sin-cos-swapped": "sin and cos are swapped (cos on even dimensions, sin on odd)",
    "exponent-i": "the exponent uses i/d_model instead of 2i/d_model",
    "wrong-base": "the frequency base is not 10000",
    "no-embedding-scale": "the embeddings are not multiplied by sqrt(d_model)",
    "embedding-scale-dmodel": "the embeddings are multiplied by d_model instead of sqrt(d_model)",
    "no-positional-encoding": "the positional encoding is not added",
    "positional-encoding-twice": "the positional encoding is added twice",
    "positions-not-buffer": "the positional table is a plain attribute, not a registered "
    "buffer: it does not follow .to() (the model adds it in another dtype or on another device)",
    "encoder-causal": "the encoder self-attention is causally masked",
    "cross-attention-causal": "the encoder-decoder attention is causally masked",
    "decoder-not-causal": "the decoder self-attention is not causally masked",
    # 3.4, 3.5
    "pre-softmax-scale": "the pre-softmax logits are multiplied by sqrt(d_model) as well",
    "pre-softmax-inverse-scale": "the pre-softmax logits are divided by sqrt(d_model)",
    "exponent-column": "the exponent uses the column index c/d_model instead of 2i/d_model "
    "(the cosine of a pair gets a different frequency than its sine)",
    # 5.3
    "adam-beta2-0.999": "Adam's beta2 is 0.999 (PyTorch's default) instead of 0.98",
    "adam-eps-1e-8": "Adam's epsilon is 1e-8 (PyTorch's default) instead of 1e-9",
    "adam-defaults": "Adam runs with PyTorch's defaults: beta2 = 0.999 and epsilon = 1e-8",
    "adamw-weight-decay": "the optimizer is AdamW with weight decay 0.01 (PyTorch's default)",
    "schedule-off-by-one": "the schedule is evaluated at step + 1 (steps counted from 0)",
    "schedule-no-dmodel-factor": "the schedule lacks the d_model^-0.5 factor",
    "schedule-fixed-warmup": "the schedule ignores its warmup argument (always 4000)",
    # 5.4
    "no-residual-dropout": "no dropout on the sub-layer outputs",
    "dropout-after-residual": "dropout is applied to x + Sublayer(x), after the residual "
    "addition, instead of to Sublayer(x)",
    "no-embedding-dropout": "no dropout on the sum of embeddings and positional encodings",
    "dropout-before-positions": "dropout is applied to the embeddings before the positional "
    "encoding is added, not to their sum",
    "dropout-in-eval": "dropout stays active in evaluation mode",
    "double-dropout": "dropout is applied twice (effective rate 1 - (1 - P_drop)^2, kept entries "
    "scaled by 1 / (1 - P_drop)^2)",
    "dropout-rate-ignored": "dropout runs at a fixed rate whatever P_drop the configuration "
    "gives",
    "no-label-smoothing": "the loss is plain cross-entropy (eps_ls = 0)",
    "label-smoothing-0.2": "label smoothing with eps_ls = 0.2 instead of 0.1",
    "padding-in-loss": "positions whose target is padding contribute to the loss",
    # 6.1
    "beam-no-length-penalty": "hypotheses are ranked by raw log-probability (alpha = 0)",
    "beam-alpha-1": "the length penalty uses alpha = 1 (plain per-token average) instead of 0.6",
    "beam-greedy": "decoding is greedy (beam size 1)",
    "beam-size-2": "the beam holds 2 hypotheses instead of 4",
    "beam-size-8": "the beam holds 8 hypotheses instead of 4",
    "beam-max-len-50": "the output is limited to 50 tokens, not input length + 50",
    "beam-max-len-100": "the output is limited to 100 tokens, not input length + 50",
    "beam-fixed-width": "the beam keeps beam_size candidates at every step instead of giving "
    "each ended hypothesis's place up (so it does not stop early)",
    # practice
    "mask-ignored-in-encoder": "the encoder ignores the padding mask",
    "cache-ignored": "incremental decoding ignores the cached prefix: each step attends to "
    "itself only",
    "checkpoint-dtype-lost": "load returns the model in another dtype than the one saved",
    "padding-id-hard-coded": "the embedding treats a real token as padding (its row gets no "
    "gradient): a padding id hard-coded to another value than the configured one",
    # 3.1, 3.3
    "no-norm": "the LayerNorm around the sub-layers is missing (x + Sublayer(x))",
    "shared-layers": "the layers of a stack share one set of parameters",
    "shared-norms": "one LayerNorm (gain and bias) serves several sub-layers of a layer",
    "norm-without-bias": "the LayerNorms have a gain but no bias (beta): LayerNorm(x) = gamma * "
    "(x - mean) / std",
    "shared-projections": "projections the paper keeps apart share their weights (W^K and "
    "W^V, or the heads of one projection)",
    "sublayer-order": "the sub-layers of a layer are applied in the wrong order",
    "missing-sublayer": "a layer lacks one of its sub-layers",
    "hidden-final-norm": "an extra LayerNorm after the stack that the adapter does not expose",
    "memory-not-shared": "a decoder layer does not attend to the final encoder output",
    "cross-attention-self": "the encoder-decoder attention attends to the decoder's own states",
    "not-shifted": "the decoder input is the target itself, not shifted right",
    "ffn-mixes-positions": "the feed-forward network mixes positions (not position-wise)",
}
"""Every bug the suite can name, with what it means."""


def explain(name: str | None) -> str | None:
    """``name: what it means`` for a known bug, the name alone for another, ``None`` for none."""
    if name is None:
        return None
    return f"{name}: {KNOWN_BUGS[name]}" if name in KNOWN_BUGS else name


def matches(actual: Tensor, candidate: Tensor, correct: Tensor, tol: Tolerance) -> bool:
    """Whether ``actual`` is explained by the bug output ``candidate`` (see the module doc).

    True when ``actual`` is within tolerance of ``candidate`` and misses ``correct`` by more
    than :data:`DIAGNOSIS_MARGIN` tolerances.
    """
    return (
        error_ratio(actual, candidate, tol) <= 1.0
        and error_ratio(actual, correct, tol) > DIAGNOSIS_MARGIN
    )


def diagnose(
    actual: Tensor, correct: Tensor, candidates: Mapping[str, Tensor], tol: Tolerance
) -> str | None:
    """The name of the known bug whose output ``actual`` matches, or None.

    ``candidates`` maps bug names (e.g. ``"no-scale"``) to the oracle's output with that bug.
    Among the matching candidates the closest wins (the first given, on ties).
    """
    best: tuple[float, str] | None = None
    for name, candidate in candidates.items():
        if matches(actual, candidate, correct, tol):
            ratio = error_ratio(actual, candidate, tol)
            if best is None or ratio < best[0]:
                best = (ratio, name)
    return None if best is None else best[1]
