"""Diagnosis: a deviation is named only when one bug model matches it, with a margin."""

from __future__ import annotations

import torch

from spec.diagnosis import DIAGNOSIS_MARGIN, diagnose, matches
from spec.tolerances import Tolerance, error_ratio

TOL = Tolerance(rtol=1e-3, atol=1e-4, why="test")


def test_diagnosis_names_the_matching_bug_only_with_margin() -> None:
    correct = torch.zeros(4, dtype=torch.float64)
    candidates = {
        "no-scale": torch.full((4,), 0.5, dtype=torch.float64),
        "pre-norm": torch.full((4,), 0.2, dtype=torch.float64),
    }
    assert diagnose(torch.full((4,), 0.5), correct, candidates, TOL) == "no-scale"
    assert diagnose(torch.full((4,), 0.3), correct, candidates, TOL) is None
    # A bug that barely changes the output cannot be told from rounding: not named.
    tiny = {"tiny": torch.full((4,), 2e-4, dtype=torch.float64)}
    assert error_ratio(tiny["tiny"], correct, TOL) < DIAGNOSIS_MARGIN
    assert diagnose(tiny["tiny"], correct, tiny, TOL) is None
    # Several within tolerance: the closest wins.
    near = {
        "a": torch.full((4,), 0.5 + 0.5e-3, dtype=torch.float64),
        "b": torch.full((4,), 0.5, dtype=torch.float64),
    }
    assert diagnose(torch.full((4,), 0.5), correct, near, TOL) == "b"
    assert matches(near["a"], near["b"], correct, TOL)
