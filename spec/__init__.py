"""An executable specification of "Attention Is All You Need" (Vaswani et al., 2017).

The suite judges an implementation, through an adapter (:mod:`spec.adapter`), clause by clause
(:mod:`spec.clauses`) against a literal float64 oracle of the paper's equations
(:mod:`spec.oracle`). Run it with ``python -m spec --impl reference`` or as a pytest plugin.
"""

__version__ = "0.1.0"
