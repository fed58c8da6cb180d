"""Hypothesis strategies (small, well-conditioned shapes and masks) and the suite's profiles.

Profiles: ``ci`` (the default: derandomised, 25 examples, no deadline) and ``thorough``
(random, 200 examples, no deadline). Choose with ``--spec-profile`` or
``$TRANSFORMER_SPEC_PROFILE``. Property tests take their settings from :func:`settings`, so the
profile applies to the suite's tests only, never to a user's own tests.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

PROFILES: dict[str, dict[str, Any]] = {
    "ci": {"max_examples": 25, "derandomize": True, "deadline": None, "database": None},
    "thorough": {"max_examples": 200, "derandomize": False, "deadline": None},
}
_active = "ci"


def select_profile(name: str | None) -> None:
    """Make ``name`` (or ``$TRANSFORMER_SPEC_PROFILE``, or ``ci``) the active profile."""
    global _active
    source = "--spec-profile" if name else "$TRANSFORMER_SPEC_PROFILE"
    name = name or os.environ.get("TRANSFORMER_SPEC_PROFILE") or "ci"
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r} ({source}); choose from {sorted(PROFILES)}")
    _active = name


def active_profile() -> str:
    """The name of the active profile."""
    return _active


def settings() -> hypothesis_settings:
    """The active profile as a hypothesis ``settings`` decorator for a property test.

    The plugin selects the profile when pytest configures, before test modules are imported.
    """
    return hypothesis_settings(
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        **PROFILES[_active],
    )


@st.composite
def attention_shapes(draw: st.DrawFn) -> tuple[int, int, int, int, int]:
    """(batch, L_q, L_k, d_k, d_v), each small; d_v may differ from d_k (3.2.1/eq1)."""
    return (
        draw(st.integers(1, 3)),
        draw(st.integers(1, 7)),
        draw(st.integers(1, 7)),
        draw(st.integers(1, 16)),
        draw(st.integers(1, 16)),
    )


@st.composite
def key_masks(draw: st.DrawFn, batch: int, queries: int, keys: int) -> torch.Tensor:
    """A boolean mask ``[batch, L_q, L_k]`` (True = may attend) with every row non-empty."""
    bits = draw(
        st.lists(st.booleans(), min_size=batch * queries * keys, max_size=batch * queries * keys)
    )
    mask = torch.tensor(bits, dtype=torch.bool).view(batch, queries, keys)
    keep = draw(st.integers(0, keys - 1))
    mask[..., keep] = True
    return mask
