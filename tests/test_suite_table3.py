"""The Table 3 clause test on implementations that cut the model differently.

``table3/param-formula`` counts the base model's 63M parameters on a model built on the meta
device (shapes without values) where the implementation builds there; an implementation whose
build needs values is built as usual and counted the same.
"""

from __future__ import annotations

import math
from pathlib import Path

from torch import nn

from tests.mutants import impl
from tests.mutants.kit import Implementation
from tests.suite_run import run_suite


class ChecksItsInitialWeights(Implementation):
    """The model checks its initial weights with ``.item()``: values, which a model built on
    the meta device does not have (``.item()`` raises there)."""

    def patch(self, model: nn.Module) -> nn.Module:  # type: ignore[override]
        for p in model.parameters():
            if not math.isfinite(p.abs().max().item()):
                raise ValueError("non-finite initial weights")
        return model


def test_a_model_that_needs_values_to_build_is_counted_as_built(tmp_path: Path) -> None:
    report = run_suite(tmp_path, impl(ChecksItsInitialWeights), ["spec.suite.test_6_1_table3"],
                       "-k", "param_formula")
    entry = report["table3/param-formula"]
    assert entry["verdict"] == "CONFORMS", entry["reason"]
