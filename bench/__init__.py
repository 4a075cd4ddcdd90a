"""Benchmarks: ``python -m bench`` (see README, "Benchmarks")."""
