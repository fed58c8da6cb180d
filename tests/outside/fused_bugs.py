"""Bugs in :mod:`tests.outside.fused`, each a small subclass of its model, with its own adapter.

* ``cache_position``: the cached decoding step embeds the newest token without its offset, so
  every token fed through the cache gets position 0. The full pass, ``decode_incremental``
  (which is fed embeddings that already hold their positions) and the beam search (which
  recomputes the prefix) are right: only the implementation's own cached loop (greedy,
  ``incremental_logits``) shows it.
* ``hardcoded_pad``: ``nn.Embedding(vocab, d_model, padding_idx=1)`` hard-coded while the
  configuration's padding id is 0. Outputs are unchanged for given weights, but the lookups of
  token 1 (here the start symbol) never send a gradient to its embedding row: the gradient of
  the shared matrix is not the loss's gradient.
* ``plain_attribute_pe``: the sinusoid table is a plain tensor attribute, not a buffer, so it
  does not follow ``.to(dtype / device)``: in a float64 model it stays float32 and the sum
  mixes dtypes (type promotion hides it on the CPU); on CUDA the table stays on the CPU and
  the embedding layer fails, in float16 / bfloat16 it promotes the activations to float32.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from tests.outside.fused import VERDICTS, Cache, FusedAdapter, Transformer, sinusoid_table


class CachePosition(Transformer):
    def step(self, tokens: Tensor, memory: Tensor, src_mask: Tensor, cache: Cache) -> Tensor:
        y = self.embed(tokens)  # BUG: no offset=cache.length, every cached step is position 0
        return self.generator(self.decode(y, memory, src_mask, cache))


class HardcodedPad(Transformer):
    def make_embedding(self, vocab: int, d_model: int) -> nn.Embedding:
        return nn.Embedding(vocab, d_model, padding_idx=1)  # BUG: the config's pad id is 0


class PlainAttributePE(Transformer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        del self.pe  # drop the buffer registered by the base class
        d_model, max_len = self.hparams["d_model"], self.hparams["max_len"]
        self.pe = sinusoid_table(max_len, d_model)  # BUG: a plain attribute, .to() skips it


def _adapter(bug: str, model_class: type[Transformer]) -> FusedAdapter:
    adapter = FusedAdapter()
    adapter.name = f"outside-fused-{bug}"
    adapter.model_class = model_class
    return adapter


adapter_cache_position = _adapter("cache_position", CachePosition)
VERDICTS_cache_position: dict[str, tuple[str, str]] = {
    **VERDICTS,
    "practice/incremental-decoding": (
        "DEVIATES unknown",
        "greedy (and incremental_logits) decode with the cache, where every token sits at "
        "position 0; decode_incremental alone is right",
    ),
}
"""What a careful reader of the paper says of every clause that does not simply CONFORM."""

adapter_hardcoded_pad = _adapter("hardcoded_pad", HardcodedPad)
VERDICTS_hardcoded_pad: dict[str, tuple[str, str]] = {
    **VERDICTS,
    "practice/gradients": (
        "DEVIATES padding-id-hard-coded",
        "padding_idx=1: the lookups of token 1 send no gradient to its row of the shared "
        "embedding matrix (only the pre-softmax use does)",
    ),
}
"""What a careful reader of the paper says of every clause that does not simply CONFORM."""

adapter_plain_attribute_pe = _adapter("plain_attribute_pe", PlainAttributePE)
VERDICTS_plain_attribute_pe: dict[str, tuple[str, str]] = {
    **VERDICTS,
    "3.5/added": (
        "DEVIATES positions-not-buffer",
        "the table is a plain attribute: in a float64 model a float32 table is added (type "
        "promotion hides it on the CPU); on CUDA the sum mixes devices and fails, which "
        "practice/devices-dtypes would show too",
    ),
}
"""What a careful reader of the paper says of every clause that does not simply CONFORM."""
