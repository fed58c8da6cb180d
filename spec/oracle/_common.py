"""What the oracle's modules share: the parameter mapping and the conversion to float64."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

Params = Mapping[str, Tensor]


def _f64(x: Tensor) -> Tensor:
    return x.to(dtype=torch.float64)
