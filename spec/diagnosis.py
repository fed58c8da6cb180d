"""Diagnosis: name the known bug whose output an implementation reproduces.

When a clause fails, its test computes, with the oracle, what the output would be under each
known bug that could explain the failure, and :func:`spec.tolerances.diagnose` names the one that matches;
this module says what each name means.
"""

from __future__ import annotations

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
    "encoder-causal": "the encoder self-attention is causally masked",
    "cross-attention-causal": "the encoder-decoder attention is causally masked",
    "decoder-not-causal": "the decoder self-attention is not causally masked",
}
"""Every bug the suite can name, with what it means."""


def explain(name: str | None) -> str | None:
    """``name: what it means`` for a known bug, the name alone for another, ``None`` for none."""
    if name is None:
        return None
    return f"{name}: {KNOWN_BUGS[name]}" if name in KNOWN_BUGS else name
