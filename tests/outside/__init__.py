"""The outside corpus: Transformers written from scratch, the way other people write them, each
with its adapter and the verdict a careful reader of the paper gives every clause.

Nothing here imports :mod:`transformer` or the mutant corpus: each implementation is cut
differently from the reference (per-head modules, fused Add & Norm, additive masks, unbatched
loops, encoder-only, extra parameters, other losses), so that the suite is tested on code that
does not share the reference's shape. ``tests/test_outside.py`` pins every verdict.
"""
