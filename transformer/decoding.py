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


def _max_len(src: Tensor, max_len: int | None) -> int:
    return src.size(1) + 50 if max_len is None else max_len  # 6.1: input length + 50


@torch.no_grad()
def greedy_decode(
    model: Transformer, src: Tensor, max_len: int | None = None, *, use_cache: bool = True
) -> Tensor:
    """Pick the most probable token at every step, for a batch ``src`` ``[B, S]``.

    Returns ``[B, L]`` generated tokens (no start symbol), ``L <= max_len`` (default: source
    length + 50). A sequence that has produced ``eos`` is padded with ``pad_id`` afterwards;
    decoding stops once every sequence has ended. ``use_cache=False`` recomputes the whole
    prefix at every step (same result, slower).
    """
    c = model.config
    src_mask = padding_mask(src, c.pad_id)
    memory = model.encode(src, src_mask)
    batch = src.size(0)
    tokens = torch.full((batch, 1), c.bos_id, dtype=torch.long, device=src.device)
    done = torch.zeros(batch, dtype=torch.bool, device=src.device)
    state = model.new_state() if use_cache else None
    for _ in range(_max_len(src, max_len)):
        step_in = tokens[:, -1:] if state is not None else tokens
        hidden = model.decode(step_in, memory, src_mask, state)[:, -1]
        next_token = model.generator(hidden).argmax(-1)
        next_token = next_token.masked_fill(done, c.pad_id)
        tokens = torch.cat([tokens, next_token.unsqueeze(1)], dim=1)
        done |= next_token == c.eos_id
        if bool(done.all()):
            break
    return tokens[:, 1:]


@torch.no_grad()
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
    hypotheses have ended (early stop) or after ``max_len`` tokens (default: source length + 50),
    when the live ones join the ended. The result is the hypothesis with the best
    ``log P(Y) / lp(Y)`` (:func:`length_penalty`), without the start symbol, ``eos`` included.
    """
    if src.dim() != 2 or src.size(0) != 1:
        raise ValueError(f"beam_search decodes one sentence [1, S], got shape {list(src.shape)}")
    if beam_size < 1 or _max_len(src, max_len) < 1:
        raise ValueError(f"beam_size and max_len must be >= 1, got {beam_size} and {max_len}")
    c = model.config
    src_mask = padding_mask(src, c.pad_id)
    memory = model.encode(src, src_mask)
    state = model.new_state()
    live: list[list[int]] = [[]]
    scores = torch.zeros(1, device=src.device, dtype=torch.float64)
    last = torch.full((1, 1), c.bos_id, dtype=torch.long, device=src.device)
    ended: list[tuple[float, list[int]]] = []
    for _ in range(_max_len(src, max_len)):
        k = beam_size - len(ended)
        if k == 0:  # early stop: beam_size hypotheses have ended
            break
        n = len(live)
        hidden = model.decode(last, memory.expand(n, -1, -1), src_mask.expand(n, -1, -1), state)
        logp = model.generator(hidden[:, -1]).double().log_softmax(-1)
        vocab = logp.size(1)
        top_scores, top = (scores.unsqueeze(1) + logp).flatten().topk(min(k, n * vocab))
        next_live, parents, next_scores = [], [], []
        for score, flat in zip(top_scores.tolist(), top.tolist(), strict=True):
            parent, word = divmod(flat, vocab)
            hyp = [*live[parent], word]
            if word == c.eos_id:
                ended.append((score / length_penalty(len(hyp), alpha), hyp))
            else:
                next_live.append(hyp)
                parents.append(parent)
                next_scores.append(score)
        if not next_live:
            break
        state.reorder(torch.tensor(parents, device=src.device))
        live = next_live
        scores = torch.tensor(next_scores, dtype=torch.float64, device=src.device)
        last = torch.tensor([[hyp[-1]] for hyp in live], device=src.device)
    else:  # max_len reached: the live hypotheses compete with the ended ones
        for score, hyp in zip(scores.tolist(), live, strict=True):
            ended.append((score / length_penalty(len(hyp), alpha), hyp))
    return max(ended, key=lambda e: e[0])[1]
