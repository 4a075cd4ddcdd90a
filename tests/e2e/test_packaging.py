"""What `pip install changewatch` puts into someone else's environment.

The producer installs without the worker's weight (no torch, torchvision, OpenCV,
Flower), everything lands under the one name ``changewatch`` (PyPI's ``schema`` library
keeps its name), and an installed producer enqueues a job a real worker analyzes. Builds
the wheel and installs it, with PyPI's ``schema``, into a fresh venv (needs the package
index).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from bench.harness.services import ROOT
from changewatch.producer import Producer
from tests.helpers import T0, Uploader, series_sessions


@pytest.fixture(scope="module")
def thin_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with PyPI's ``schema`` library, then the changewatch wheel, no extras."""
    root = tmp_path_factory.mktemp("thin")
    wheels = root / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
        check=True,
        timeout=600,
    )
    (wheel,) = wheels.glob("changewatch-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "schema>=0.7"], check=True, timeout=600)
    subprocess.run([*pip, str(wheel)], check=True, timeout=900)
    return venv / "bin" / "python"


def _run(python: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # Outside the checkout, so nothing is imported from the repository by accident.
    return subprocess.run(
        [str(python), *args],
        cwd=python.parent,
        env={**os.environ, **env, "PYTHONPATH": ""},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_thin_install_has_no_model_and_keeps_pypis_schema(thin_venv: Path) -> None:
    probe = (
        "import importlib.util as u, json, schema, changewatch.producer;"
        "print(json.dumps({m: u.find_spec(m) is not None for m in"
        " ('torch', 'torchvision', 'cv2', 'flower', 'PIL', 'worker', 'producer',"
        " 'celeryconfig', 'bench', 'scripts')}"
        " | {'schema_is_pypis': hasattr(schema, 'Schema')"
        " and 'changewatch' not in schema.__file__}))"
    )
    proc = _run(thin_venv, "-c", probe)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    assert found.pop("schema_is_pypis") is True
    assert not any(found.values()), found  # no model, no top-level names but changewatch
    # The worker's code ships too (one wheel); its dependencies come with [worker].
    proc = _run(thin_venv, "-c", "import changewatch.worker.tasks")
    assert proc.returncode != 0 and "No module named" in proc.stderr


@pytest.mark.usefixtures("worker")
def test_an_installed_producer_enqueues_a_job_a_real_worker_analyzes(
    thin_venv: Path, photos: Path, uploader: Uploader, producer: Producer
) -> None:
    user, session = uuid.uuid4(), uuid.uuid4()
    images = uploader.session(user, series_sessions(photos)[0])
    args = ["--user-id", str(user), "--session-id", str(session)]
    args += ["--captured-at", T0.isoformat()]
    for angle, uri in images.items():
        args += ["--image", f"{angle}={uri}"]
    proc = _run(
        thin_venv,
        "-m",
        "changewatch.producer",
        "analyze",
        *args,
        "--wait",
        DATABASE_URL=producer.dsn,
        CELERY_BROKER_URL=producer.celery.conf.broker_url,
        CELERY_RESULT_BACKEND=str(producer.celery.conf.result_backend),
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["session_id"] == str(session) and result["is_first_session"] is True
