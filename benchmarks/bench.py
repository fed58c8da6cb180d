"""Benchmark the reference Transformer against ``torch.nn.Transformer``, in one run:
``python benchmarks/bench.py --help`` (or ``nox -s bench``).

This script is the entry point; the benchmark is the package ``benchmarks/refbench/`` (its
docstring says what is measured and how the package is laid out).
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout: the package and transformer/
    sys.path.insert(0, str(ROOT))

from benchmarks.refbench.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
