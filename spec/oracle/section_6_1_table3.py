"""Section 6.1 and Table 3: beam search with length penalty, and the parameter counts of the
model variants (checked by :mod:`spec.suite.test_6_1_table3`).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from ._common import _f64

__all__ = [
    "beam_search",
    "length_penalty",
    "param_count",
    "pool_search",
]


def length_penalty(length: int, alpha: float = 0.6) -> float:
    """lp(Y) = ((5 + |Y|) / 6)^alpha, Wu et al. (2016), as used in 6.1/beam-search."""
    return float(((5 + length) / 6) ** alpha)


def beam_search(
    step_log_probs: Callable[[list[list[int]]], Tensor],
    bos: int,
    eos: int,
    max_len: int,
    beam_size: int = 4,
    alpha: float = 0.6,
    *,
    fixed_width: bool = False,
) -> list[int]:
    """Beam search with length penalty (6.1/beam-search), written for reading, not speed.

    Exact semantics (those of the reference implementation, ``transformer.decoding``; the paper
    gives only beam size, alpha and the length limit):

    1. The beam starts as the single live prefix ``[bos]`` with log-probability 0; no
       hypothesis has ended.
    2. At each step, ``step_log_probs(prefixes)`` gives next-token log-probabilities
       ``[n_live, V]`` for the live prefixes (each starting with ``bos``). Every live prefix is
       extended by every token; the candidates are ranked by their summed log-probability
       (all have the same length, so this is also the ranking by normalised score), ties
       broken by live-prefix order and then by token id, and the best ``k`` are kept, where
       ``k = beam_size - (number of hypotheses ended so far)``: every ended hypothesis takes
       one place of the beam for good.
    3. A kept candidate that ends in ``eos`` has ended: it is set aside with the score
       ``log P(Y) / lp(|Y|)``, where ``|Y|`` counts the generated tokens including ``eos``
       (not ``bos``); the others are the live prefixes of the next step.
    4. The search stops early when a step leaves no live prefix (then ``beam_size``
       hypotheses have ended, or fewer if there were fewer than ``k`` candidates), or after
       ``max_len`` steps; then the live prefixes join the ended ones, unended, with their
       normalised scores.
    5. The result is the hypothesis with the best normalised score (the earliest set aside
       on ties), without ``bos``, with ``eos`` if it generated one.

    With ``beam_size=1`` this is greedy decoding that stops at ``eos``. The paper uses
    ``beam_size=4``, ``alpha=0.6`` and ``max_len`` = input length + 50.

    Bug knob (for diagnosis): ``fixed_width=True`` keeps ``beam_size`` candidates at every
    step however many hypotheses have ended, so the search goes on until one step's kept
    candidates all end (in practice, nearly always to ``max_len``).

    The other reading, with a pool of ended hypotheses (variant ``finished-pool``), is
    :func:`pool_search`.
    """
    live: list[tuple[list[int], float]] = [([bos], 0.0)]
    ended: list[tuple[list[int], float]] = []  # (tokens without bos, normalised score)
    for _ in range(max_len):
        k = beam_size if fixed_width else beam_size - len(ended)
        log_probs = _f64(step_log_probs([prefix for prefix, _ in live]))
        if log_probs.dim() != 2 or log_probs.shape[0] != len(live):
            raise ValueError(
                f"step_log_probs must return [n_prefixes={len(live)}, V], got "
                f"{tuple(log_probs.shape)}"
            )
        candidates: list[tuple[float, list[int]]] = []
        for (prefix, score), row in zip(live, log_probs.tolist(), strict=True):
            for token, lp in enumerate(row):
                candidates.append((score + lp, [*prefix, token]))
        candidates.sort(key=lambda c: -c[0])  # stable: ties keep prefix, then token order
        live = []
        for score, seq in candidates[:k]:
            if seq[-1] == eos:
                ended.append((seq[1:], score / length_penalty(len(seq) - 1, alpha)))
            else:
                live.append((seq, score))
        if not live:
            break
    for seq, score in live:
        ended.append((seq[1:], score / length_penalty(len(seq) - 1, alpha)))
    return _best(ended)


def pool_search(
    step_log_probs: Callable[[list[list[int]]], Tensor],
    bos: int,
    eos: int,
    max_len: int,
    beam_size: int = 4,
    alpha: float = 0.6,
    *,
    stop: str = "count",
) -> list[int]:
    """Beam search that keeps ``beam_size`` live hypotheses at every step while the ended
    ones wait in a pool of their own: the other reading of 6.1/beam-search (variant
    ``finished-pool``), that of tensor2tensor (the paper's code), fairseq and Hugging Face.

    At each step the candidates are ranked as in :func:`beam_search` and the best
    ``2 * beam_size`` are read in order: one ending in ``eos`` joins the pool with the score
    ``log P(Y) / lp(|Y|)``, the others are the next live prefixes until ``beam_size`` are
    found. What ends the search is ``stop``:

    * ``"count"`` (Hugging Face's with ``early_stopping=True``; fairseq's, which forces ``eos``
      at the limit instead): an ended candidate joins the pool only if it ranks among the best
      ``beam_size``; the search stops once the pool holds ``beam_size`` hypotheses, or after
      ``max_len`` steps, when the live prefixes join the pool unended. The result is the
      pool's best (the earliest on ties).
    * ``"bound"`` (tensor2tensor): every ended candidate of the ``2 * beam_size`` joins the
      pool, which keeps its best ``beam_size`` (the earlier on ties); the search stops when the
      pool is full and the best live prefix, normalised by the length penalty of ``max_len``
      tokens (the most it could still gain), scores below the pool's worst, or after
      ``max_len`` steps. The result is the pool's best, or the best live prefix if the pool is
      empty.
    """
    if stop not in ("count", "bound"):
        raise ValueError(f"stop must be 'count' or 'bound', got {stop!r}")
    live: list[tuple[list[int], float]] = [([bos], 0.0)]
    ended: list[tuple[list[int], float]] = []  # (tokens without bos, normalised score)
    for _ in range(max_len):
        log_probs = _f64(step_log_probs([prefix for prefix, _ in live]))
        candidates = [(score + lp, i, token) for i, ((_, score), row)
                      in enumerate(zip(live, log_probs.tolist(), strict=True))
                      for token, lp in enumerate(row)]
        candidates.sort(key=lambda c: -c[0])  # stable: ties keep prefix, then token order
        next_live: list[tuple[list[int], float]] = []
        for rank, (score, i, token) in enumerate(candidates[: 2 * beam_size]):
            seq = [*live[i][0], token]
            if token != eos:
                if len(next_live) < beam_size:
                    next_live.append((seq, score))
            elif stop == "bound" or rank < beam_size:
                ended.append((seq[1:], score / length_penalty(len(seq) - 1, alpha)))
        if stop == "bound":
            ended = sorted(ended, key=lambda e: -e[1])[:beam_size]  # stable
        live = next_live
        if stop == "count" and len(ended) >= beam_size:
            break
        if (stop == "bound" and len(ended) == beam_size
                and live[0][1] / length_penalty(max_len, alpha) < ended[-1][1]):
            break
    else:
        if stop == "count":
            ended += [(seq[1:], score / length_penalty(len(seq) - 1, alpha))
                      for seq, score in live]
    if not ended:
        return live[0][0][1:]
    return _best(ended)


def _best(ended: list[tuple[list[int], float]]) -> list[int]:
    """The tokens of the best-scoring hypothesis, the earliest on ties."""
    best_tokens, best_score = ended[0]
    for tokens, score in ended[1:]:
        if score > best_score:
            best_tokens, best_score = tokens, score
    return best_tokens


def param_count(
    d_model: int, d_ff: int, n_layers: int, vocab: int, *, tied: bool = True
) -> dict[str, int]:
    """Parameter counts per component (table3/param-formula), biases and LayerNorms counted.

    attention = 4 d^2 + 4 d (four projections with biases), ffn = 2 d d_ff + d_ff + d,
    layer_norm = 2 d, encoder_layer = attention + ffn + 2 layer_norm, decoder_layer =
    2 attention + ffn + 3 layer_norm, encoder / decoder = N layers, stacks = both,
    embeddings = V d tied (one matrix) or 3 V d untied, total = stacks + embeddings.
    Base (d=512, d_ff=2048, N=6, V=37000): total 63,082,496; big: 214,245,376.
    """
    d = d_model
    attention_block = 4 * d * d + 4 * d
    ffn = 2 * d * d_ff + d_ff + d
    norm = 2 * d
    enc_layer = attention_block + ffn + 2 * norm
    dec_layer = 2 * attention_block + ffn + 3 * norm
    embeddings = vocab * d * (1 if tied else 3)
    stacks = n_layers * (enc_layer + dec_layer)
    return {
        "attention": attention_block,
        "ffn": ffn,
        "layer_norm": norm,
        "encoder_layer": enc_layer,
        "decoder_layer": dec_layer,
        "encoder": n_layers * enc_layer,
        "decoder": n_layers * dec_layer,
        "stacks": stacks,
        "embeddings": embeddings,
        "total": stacks + embeddings,
    }
