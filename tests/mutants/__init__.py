"""The mutant corpus: implementations that the conformance suite must judge correctly.

* **Mutants** (:class:`tests.mutants.kit.Mutant`): deliberately broken implementations, each
  one bug that real from-scratch implementations make. Each declares the clauses that must
  DEVIATE (``EXPECTED``) and the known bug the suite must name (``DIAGNOSIS``).
* **Variants** (:class:`tests.mutants.kit.Variant`): legitimate readings of the paper (pre-norm,
  learned positions, ...). Each declares the (clause, variant) pairs the suite must report
  (``VARIANTS``); no clause may deviate.

Each is the reference adapter (:mod:`spec.adapters.reference`) over the reference model with
one part replaced (:mod:`tests.mutants.kit`), and each can be run like any implementation::

    python -m spec --impl tests.mutants.attention:NoScale

``tests/test_mutants.py`` runs the suite against every one of them; ``python -m tests.mutants``
writes the detection table (``build/docs-data/detection.json``).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from tests.mutants.kit import Implementation, Mutant, Variant

MODULES = ("attention", "stacks", "embeddings", "training", "variants")
"""The corpus modules, in paper order (variants last)."""


def _defined(module: ModuleType, base: type[Implementation]) -> list[type[Implementation]]:
    """The concrete subclasses of ``base`` defined in ``module``, in definition order."""
    out = []
    for obj in vars(module).values():
        if isinstance(obj, type) and issubclass(obj, base) and obj.__module__ == module.__name__:
            concrete = obj.EXPECTED if issubclass(obj, Mutant) else not obj.__name__.startswith("_")
            if concrete:
                out.append(obj)
    return out


def _collect(base: type[Implementation]) -> list[type[Implementation]]:
    return [
        cls
        for name in MODULES
        for cls in _defined(importlib.import_module(f"tests.mutants.{name}"), base)
    ]


def all_mutants() -> list[type[Mutant]]:
    """Every broken implementation of the corpus."""
    return [cls for cls in _collect(Mutant) if issubclass(cls, Mutant)]


def all_variants() -> list[type[Variant]]:
    """Every legitimate variant of the corpus."""
    return [cls for cls in _collect(Variant) if issubclass(cls, Variant)]


def impl(cls: type[Implementation]) -> str:
    """The ``--impl`` argument that names ``cls``: ``tests.mutants.attention:NoScale``."""
    return f"{cls.__module__}:{cls.__qualname__}"
