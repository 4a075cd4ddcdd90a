"""The README's main command does what it promises on generated photos."""

from __future__ import annotations

import os
import subprocess
import sys

from scripts.localstack import ROOT


def test_demo_prints_analyses_and_a_comparison(broker: str, database_url: str) -> None:
    """First session 0.0, later sessions above 0, then a comparison, exit 0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CELERY_"))}
    env["CHANGEWATCH_MODEL_WEIGHTS"] = "random"
    env["CHANGEWATCH_METRICS_PORT"] = "0"
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.demo", "--fresh"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "Session 1 of 4" in out and "Session 4 of 4" in out
    assert "is_first_session        true" in out
    scores = [
        float(line.split()[1])
        for line in out.splitlines()
        if line.strip().startswith("change_score")
    ]
    assert scores[0] == 0.0 and all(s > 0 for s in scores[1:4])
    assert "comparison_method   embedding" in out
