"""The project's benchmarks: ``benchmarks/bench.py`` runs :mod:`benchmarks.refbench`."""
