"""Section 3.2.3, applications of attention in the model: the masks of the decoder's
self-attention and of the padded source keys (checked by
:mod:`spec.suite.test_3_2_3_applications`; padding also by practice/padding in
:mod:`spec.suite.test_practice`).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "causal_mask",
    "padding_mask",
]


def causal_mask(length: int, offset: int = 0) -> Tensor:
    """Boolean ``[length, length]``: query i may attend to key j iff ``j <= i + offset``.

    ``offset=0`` is the paper's mask (3.2.3/decoder-self, 3.1/decoder-causal). ``offset=1`` is
    the off-by-one bug that lets position i see token i + 1; ``offset=-1`` the one that hides
    position i from itself (and leaves row 0 fully masked).
    """
    i = torch.arange(length).unsqueeze(1)
    j = torch.arange(length).unsqueeze(0)
    return j <= i + offset


def padding_mask(valid: Tensor) -> Tensor:
    """``[B, L]`` bool (True = real token) -> ``[B, 1, L]``: every query may see real keys only.

    Implements practice/padding: keys at padding positions are masked.
    """
    if valid.dtype != torch.bool:
        raise TypeError(f"padding mask must be bool (True = real token), got {valid.dtype}")
    return valid.unsqueeze(-2)
