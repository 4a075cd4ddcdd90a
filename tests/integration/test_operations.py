"""The worker's health checks against the running stack: readiness names the dependency
that is down, and ``python -m changewatch.worker health`` exits as compose expects."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from bench.harness.services import ROOT, Worker
from changewatch.schema.routing import sending_app as celery_app
from changewatch.settings import Settings
from changewatch.worker.health import readiness

pytestmark = pytest.mark.usefixtures("worker")


def test_readiness_reports_each_dependency(worker: Worker) -> None:
    """Health says ready with a loaded model, and names the dependency that is down."""
    settings = Settings.from_env()
    app = celery_app(settings)
    port = int(worker.env["CHANGEWATCH_METRICS_PORT"])
    report = readiness(app, settings, port, node=None, timeout=3)
    assert report["ready"], report
    assert "random-seed0" in report["checks"]["model"]["detail"]

    broken = replace(settings, database_url="postgresql://postgres@127.0.0.1:1/nowhere")
    report = readiness(app, broken, port, node=None, timeout=3)
    assert not report["ready"]
    assert not report["checks"]["database"]["ok"] and report["checks"]["broker"]["ok"]


def test_health_command_exit_codes(worker: Worker) -> None:
    """Compose's healthcheck: exit 0 with a ready worker, 1 when its metrics are not there."""

    def health(port: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "changewatch.worker",
                "health",
                "--metrics-port",
                port,
                "--timeout",
                "3",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    ready = health(worker.env["CHANGEWATCH_METRICS_PORT"])
    assert ready.returncode == 0, ready.stdout + ready.stderr
    assert json.loads(ready.stdout)["ready"] is True
    down = health("1")
    assert down.returncode == 1
    assert json.loads(down.stdout)["checks"]["model"]["ok"] is False
