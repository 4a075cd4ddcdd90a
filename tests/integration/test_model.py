"""A worker process whose model weights cannot be loaded exits with the reason instead of
consuming jobs (the model holder itself is tested in tests/unit/test_model.py)."""

from __future__ import annotations

import os
from pathlib import Path

from tests.helpers import run_module


def test_worker_refuses_to_start_without_its_weights(tmp_path: Path) -> None:
    """A worker that cannot load its model exits non-zero instead of consuming jobs."""
    env = {
        **os.environ,
        "CHANGEWATCH_MODEL_WEIGHTS": str(tmp_path / "missing.pth"),
        "CHANGEWATCH_METRICS_PORT": "0",
    }
    proc = run_module("celery", "-A", "changewatch.worker", "worker", "-n", "doomed@%h", env=env)
    assert proc.returncode != 0
    assert "missing.pth" in proc.stderr + proc.stdout
    assert "ready." not in proc.stderr + proc.stdout
