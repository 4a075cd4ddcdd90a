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


def test_worker_refuses_int8_for_a_model_it_is_refused_for(tmp_path: Path) -> None:
    """CHANGEWATCH_PRECISION=int8 with Lite0 (its INT8 scores failed the validity set):
    the worker stops before registering a model id, and says why, instead of running."""
    env = {
        **os.environ,
        "CHANGEWATCH_MODEL": "efficientnet_lite0",
        "CHANGEWATCH_PRECISION": "int8",
        "CHANGEWATCH_MODEL_CACHE": str(tmp_path),
        "CHANGEWATCH_METRICS_PORT": "0",
    }
    proc = run_module("celery", "-A", "changewatch.worker", "worker", "-n", "doomed@%h", env=env)
    output = proc.stderr + proc.stdout
    assert proc.returncode != 0
    assert "refused for efficientnet_lite0" in output
    assert "ready." not in output
    assert not any(tmp_path.iterdir())
