"""Scripts and helpers that run a local changewatch stack (tests, demo, benchmarks)."""
