"""``python -m benchmarks.refbench``, from the checkout: the same as ``benchmarks/bench.py``."""

from .cli import main

raise SystemExit(main())
