"""Benchmarks: ``python -m bench`` and ``python -m bench.soak``; results in docs/benchmarks.md."""
