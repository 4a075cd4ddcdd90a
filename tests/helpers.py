"""What the tests share besides fixtures (those are in tests/conftest.py): settings of the
test session, running a module as a user does, skip-or-fail, uploading photos, and the
real-photo sessions and CLI calls several unit, integration and e2e modules use."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
import redis

from bench.harness.services import ROOT, SERIES_PHOTOS

if TYPE_CHECKING:
    from changewatch.producer import Producer

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
BUCKET = "changewatch-test"
# Small enough to test the limit without huge uploads, above every real photo (<= 3.1 MB).
MAX_IMAGE_BYTES = 8_000_000
ARTIFACTS = ROOT / "artifacts"
WORKER_LOGIN = "changewatch_test_worker"
# The test worker's notification queue and delete secret (tests/e2e/test_wire.py).
NOTIFY_QUEUE = "changewatch.test.notify"
DELETE_SECRET = "test-only-delete-secret"  # a test worker's, no real one


def run_module(
    module: str, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m MODULE ARGS`` from the repo root, as a user or a deployment runs it."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def query(dsn: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Every row of one query, read on a connection of its own, as tuples."""
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()


def require(ok: bool, why: str) -> None:
    """Skip on a developer machine, fail in CI: CI must never pass by skipping."""
    if not ok:
        if IN_CI:
            pytest.fail(why)
        pytest.skip(why)


def _redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(os.environ["CELERY_BROKER_URL"]).ping())
    except redis.RedisError:
        return False


def _postgres_up() -> bool:
    try:
        admin = psycopg.conninfo.make_conninfo(os.environ["DATABASE_URL"], dbname="postgres")
        with psycopg.connect(admin, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


class Uploader:
    """Puts photos where a job may read them: s3://BUCKET/<user_id>/..."""

    def __init__(self, client: object) -> None:
        self.client = client

    def put(self, user_id: uuid.UUID, name: str, data: bytes) -> str:
        key = f"{user_id}/{uuid.uuid4().hex[:8]}-{name}"
        self.client.put_object(Bucket=BUCKET, Key=key, Body=data)  # type: ignore[attr-defined]
        return f"s3://{BUCKET}/{key}"

    def session(self, user_id: uuid.UUID, files: dict[str, Path]) -> dict[str, str]:
        return {
            angle: self.put(user_id, path.name, path.read_bytes()) for angle, path in files.items()
        }


# --- one person's real photo sessions -------------------------------------------------

T0 = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)

SERIES = list(SERIES_PHOTOS)
ANGLES6 = ["front", "left", "right", "up", "down", "raised"]


def series_sessions(photos: Path) -> list[dict[str, Path]]:
    """Three sessions of one person's 'photos': real Nikon shots, shifted per session."""
    series = [photos / "series" / n for n in SERIES]
    return [
        dict(zip(["front", "left", "right", "up"], series[i : i + 4], strict=True))
        for i in (0, 2, 5)
    ]


def six(photos: Path, shift: int = 0) -> dict[str, Path]:
    """One photo per angle, the same photo for an angle in every session (shift 0)."""
    series = [photos / "series" / n for n in SERIES]
    return {a: series[(i + shift) % len(series)] for i, a in enumerate(ANGLES6)}


def scores_of(
    producer: Producer, ids: dict[int, uuid.UUID]
) -> list[tuple[float, int, list[float]]]:
    """(change score, baseline count, per-angle scores) of each session, by index."""
    out = []
    for i in sorted(ids):
        r = producer.result(ids[i])
        out.append(
            (
                r["change_score"],
                r["baseline_session_count"],
                [a["change_score"] for a in r["per_angle"]],
            )
        )
    return out


# --- the producer's command line ------------------------------------------------------


def cli(*args: str, timeout: float = 240) -> tuple[int, dict[str, Any] | None, str]:
    """Run ``python -m changewatch.producer`` as a user would: (exit code, JSON on stdout,
    stderr)."""
    proc = subprocess.run(
        [sys.executable, "-m", "changewatch.producer", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    out = json.loads(proc.stdout) if proc.stdout.strip() else None
    return proc.returncode, out, proc.stderr


def analyze_args(
    user: uuid.UUID | str, session: uuid.UUID, at: datetime | str, images: dict[str, str]
) -> list[str]:
    when = at if isinstance(at, str) else at.isoformat()
    args = ["analyze", "--user-id", str(user), "--session-id", str(session), "--captured-at", when]
    for angle, uri in images.items():
        args += ["--image", f"{angle}={uri}"]
    return args


# --- neutral wording: no medical or risk word where a person reads ---------------------

WORDS = (
    "risk", "risky", "cancer", "cancerous", "tumor", "tumour", "malignant", "benign",
    "abnormal", "abnormality", "suspicious", "concerning", "diagnosis", "diagnose",
    "diagnosed", "diagnostic", "disease", "lesion", "lesions", "patient", "patients",
    "melanoma", "carcinoma", "symptom", "symptoms", "pathology", "pathological",
    "dangerous", "alarming", "worrying", "clinical",
)  # fmt: skip
PATTERN = re.compile(r"\b(" + "|".join(WORDS) + r")\b", re.IGNORECASE)


def found(text: str) -> list[str]:
    return sorted({m.group(0).lower() for m in PATTERN.finditer(text)})
