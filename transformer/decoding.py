"""Greedy decoding and beam search, both with a key/value cache.

Implements: 6.1/beam-search, practice/incremental-decoding.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .masks import padding_mask
from .model import Transformer


def length_penalty(length: int, alpha: float = 0.6) -> float:
    r"""Wu et al. (2016): $lp(Y) = ((5 + |Y|) / 6)^\alpha$ (6.1/beam-search)."""
    return float(((5 + length) / 6) ** alpha)


def _max_len(model: Transformer, src: Tensor, max_len: int | None) -> int:
    """The number of tokens to decode at most, checked against the model before any work.

    Decoding ``n`` tokens feeds the decoder positions ``0 .. n - 1``, so ``n`` may not exceed
    the positional-encoding table's ``max_len``.
    """
    if src.dim() != 2:
        raise ValueError(f"src must be [batch, S] token ids, got shape {list(src.shape)}")
    n = src.size(1) + 50 if max_len is None else max_len  # 6.1: input length + 50
    table = model.config.max_len
    if n > table:
        default = "" if max_len is not None else f" (the default: source length {src.size(1)} + 50)"
        raise ValueError(
            f"decoding {n} tokens{default} needs {n} positions, more than max_len={table} of "
            f"the model's positional-encoding table; pass max_len <= {table}"
        )
    return n


def greedy_decode(
    model: Transformer, src: Tensor, max_len: int | None = None, *, use_cache: bool = True
) -> Tensor:
    """Pick the most probable token at every step, for a batch ``src`` ``[B, S]``.

    Returns ``[B, L]`` generated token ids (``torch.long``, no start symbol), ``L <= max_len``
    (default: source length + 50; at most the model's ``config.max_len``, checked before
    decoding). A sequence that has produced ``eos`` is padded with ``pad_id`` afterwards;
    decoding stops once every sequence has ended. ``use_cache=False`` recomputes the whole
    prefix at every step (same result, slower).
    """
    c = model.config
    steps = _max_len(model, src, max_len)
    if steps < 0:
        raise ValueError(f"max_len must be >= 0, got {steps}")
    with torch.no_grad():
        memory = model.encode(src)  # checks the ids; masks the padding
        src_mask = padding_mask(src, c.pad_id)
        tokens = src.new_full((src.size(0), 1), c.bos_id, dtype=torch.long)
        done = src.new_zeros(src.size(0), dtype=torch.bool)
        state = model.new_state() if use_cache else None
        for _ in range(steps):
            step_in = tokens[:, -1:] if state is not None else tokens
            hidden = model.decode(step_in, memory, src_mask, state)[:, -1]
            next_token = model.generator(hidden).argmax(1).masked_fill(done, c.pad_id)
            tokens = torch.cat([tokens, next_token.unsqueeze(1)], dim=1)
            done |= next_token == c.eos_id
            if bool(done.all()):
                break
        return tokens[:, 1:]


def beam_search(
    model: Transformer,
    src: Tensor,
    beam_size: int = 4,
    alpha: float = 0.6,
    max_len: int | None = None,
) -> list[int]:
    """Beam search for one source sentence ``src`` ``[1, S]`` (section 6.1).

    At every step the ``k`` most probable expansions of the live hypotheses are kept (by total
    log-probability), where ``k`` is ``beam_size`` minus the number of hypotheses already ended.
    An expansion ending in ``eos`` is set aside as ended. Search stops when ``beam_size``
    hypotheses have ended (early stop) or after ``max_len`` tokens (default: source length + 50;
    at most the model's ``config.max_len``, checked before decoding), when the live ones join
    the ended. The result is the hypothesis with the best ``log P(Y) / lp(Y)``
    (:func:`length_penalty`), without the start symbol, ``eos`` included.
    """
    if src.dim() != 2 or src.size(0) != 1:
        raise ValueError(f"beam_search decodes one sentence [1, S], got shape {list(src.shape)}")
    steps = _max_len(model, src, max_len)
    if beam_size < 1 or steps < 1:
        raise ValueError(f"beam_size and max_len must be >= 1, got {beam_size} and {max_len}")
    c = model.config
    with torch.no_grad():
        memory = model.encode(src)
        src_mask = padding_mask(src, c.pad_id)  # [1, 1, S]: broadcasts over the hypotheses
        state = model.new_state()
        live: list[tuple[float, list[int]]] = [(0.0, [])]  # (log P(Y), Y) of each live one
        last = src.new_full((1, 1), c.bos_id)  # the last token of each live hypothesis
        ended: list[tuple[float, list[int]]] = []  # (log P(Y) / lp(Y), Y)
        for _ in range(steps):
            n = len(live)
            hidden = model.decode(last, memory.expand(n, -1, -1), src_mask, state)[:, -1]
            logp = model.generator(hidden).double().log_softmax(1)
            totals = logp + logp.new_tensor([score for score, _ in live]).unsqueeze(1)
            k = min(beam_size - len(ended), totals.numel())  # the beam shrinks as hyps end
            top_scores, top = totals.flatten().topk(k)
            next_live, parents = [], []
            for score, flat in zip(top_scores.tolist(), top.tolist(), strict=True):
                parent, word = divmod(flat, totals.size(1))
                hyp = [*live[parent][1], word]
                if word == c.eos_id:
                    ended.append((score / length_penalty(len(hyp), alpha), hyp))
                else:
                    next_live.append((score, hyp))
                    parents.append(parent)
            if not next_live:  # early stop: beam_size hypotheses have ended
                break
            state.reorder(src.new_tensor(parents))
            live = next_live
            last = src.new_tensor([hyp[-1:] for _, hyp in live])
        else:  # max_len reached: the live hypotheses compete with the ended ones
            ended += [(score / length_penalty(len(hyp), alpha), hyp) for score, hyp in live]
        return max(ended, key=lambda e: e[0])[1]
