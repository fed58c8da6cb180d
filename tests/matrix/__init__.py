"""The conformance matrix's pinned verdicts: one module per library adapter (issue 13).

Each module ``tests/matrix/<adapter>.py`` holds ``PINS``: every clause whose verdict on that
library is not CONFORMS, with the variant names or the diagnosed bug and a justification that
points at the library's source (``path/to/module.py, Class.function`` at the pinned version);
every other clause must CONFORM. ``ABOUT`` says in a line what the library is and how the
adapter builds it. ``tests/test_matrix.py`` checks the suite against the pins, and the docs build
turns them into each library's "what differs from the paper" page.

The adapters' modules are imported here, once, so that a missing library is known before any
test runs (and so that pytester, which snapshots ``sys.modules``, never unloads a library).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

from spec.adapter import SHIPPED, AdapterError

Pin = tuple[str, str | None, str]
"""(verdict, the variant names of a VARIANT or the diagnosed bug of a DEVIATES (None for "cause
unknown" or NOT PROVIDED), justification: where the library's source shows it)."""

LIBRARIES = ["hf-marian", "hf-fsmt", "hf-bart", "x-transformers"]
"""The adapters of the matrix's libraries (``--impl`` names), in the order the matrix shows them.
Each needs the extra ``matrix``."""

MISSING: dict[str, str] = {}
"""Adapter -> the one-line error loading it gave (its library is not installed)."""

for _impl in LIBRARIES:
    try:
        importlib.import_module(SHIPPED[_impl].partition(":")[0])
    except AdapterError as _exc:
        MISSING[_impl] = str(_exc)


def module(impl: str) -> ModuleType:
    """The pins module of ``impl`` (``tests.matrix.hf_marian`` for ``hf-marian``)."""
    return importlib.import_module(f"tests.matrix.{impl.replace('-', '_')}")


def pins(impl: str) -> dict[str, Pin]:
    """Every clause of ``impl`` that does not simply CONFORM, with its pin."""
    found: dict[str, Pin] = module(impl).PINS
    return found


def need(impl: str) -> None:
    """Skip when ``impl``'s library is missing, or fail where ``$CI`` is set (CI installs the
    extra, so the matrix tests must run there)."""
    missing = MISSING.get(impl)
    if not missing:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{missing}; CI is set, so the matrix tests must run")
    pytest.skip(missing)
