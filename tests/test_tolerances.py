"""The tolerance table and the comparison helpers (spec/tolerances.py)."""

from __future__ import annotations

import math

import pytest
import torch

from spec import tolerances
from spec.tolerances import TOLERANCES, Tolerance

REQUIRED = [
    ("cpu", torch.float64),
    ("cpu", torch.float32),
    ("cuda", torch.float32),
    ("cuda", torch.bfloat16),
    ("cuda", torch.float16),
]
TOL = Tolerance(rtol=1e-3, atol=1e-4, why="test")


@pytest.mark.parametrize(("device", "dtype"), REQUIRED)
def test_table_has_the_required_rows(device: str, dtype: torch.dtype) -> None:
    tol = tolerances.tolerance(device, dtype)
    assert tol is TOLERANCES[(device, dtype)]
    assert tol.why.strip()
    u = torch.finfo(dtype).eps / 2
    # Never tighter than the dtype's unit roundoff allows, never loose enough to hide a bug.
    assert u < tol.atol < 0.2 and u < tol.rtol < 0.1


def test_looser_for_lower_precision() -> None:
    order = [torch.float32, torch.float16, torch.bfloat16]
    atols = [TOLERANCES[("cuda", d)].atol for d in order]
    assert atols == sorted(atols)
    assert TOLERANCES[("cpu", torch.float64)].atol < TOLERANCES[("cpu", torch.float32)].atol


def test_tolerance_lookup() -> None:
    assert (
        tolerances.tolerance(torch.device("cuda:1"), torch.float16)
        is TOLERANCES[("cuda", torch.float16)]
    )
    with pytest.raises(KeyError, match=r"\(cpu, torch\.float16\)"):
        tolerances.tolerance("cpu", torch.float16)


def test_close_is_the_isclose_rule() -> None:
    e = torch.tensor([0.0, 1.0, -100.0], dtype=torch.float64)
    inside = e + torch.tensor([0.9e-4, 1.0e-3, -0.9e-1], dtype=torch.float64)
    outside = e + torch.tensor([1.1e-4, 0.0, 0.0], dtype=torch.float64)
    assert tolerances.close(inside.float(), e, TOL)
    assert torch.isclose(inside, e, rtol=TOL.rtol, atol=TOL.atol).all()
    assert not tolerances.close(outside, e, TOL)
    assert tolerances.error_ratio(outside, e, TOL) == pytest.approx(1.1)


def test_nan_inf_shape_and_empty() -> None:
    e = torch.tensor([1.0, math.inf])
    assert tolerances.close(e.clone(), e, TOL)
    assert tolerances.max_error(e.clone(), e) == 0.0
    nan = torch.tensor([math.nan, math.inf])
    assert not tolerances.close(nan, e, TOL)
    assert tolerances.max_error(nan, e) == math.inf
    assert tolerances.error_ratio(nan, e, TOL) == math.inf
    assert not tolerances.close(torch.ones(3), torch.ones(2), TOL)
    assert tolerances.max_error(torch.ones(3), torch.ones(2)) == math.inf
    assert tolerances.error_ratio(torch.ones(3), torch.ones(2), TOL) == math.inf
    assert tolerances.close(torch.ones(0), torch.ones(0), TOL)
    assert tolerances.max_error(torch.ones(0), torch.ones(0)) == 0.0


def test_max_error() -> None:
    a = torch.tensor([1.0, 2.0, 3.0], dtype=torch.bfloat16, requires_grad=True)
    assert tolerances.max_error(a, torch.tensor([1.0, 2.5, 2.0])) == 1.0
