"""Secrets never reach error messages: an unreachable broker fails the enqueue against the
tests' real database, and what is recorded and printed carries no password."""

from __future__ import annotations

import os
import subprocess
import uuid

from tests.helpers import run_module

SECRET = "s3cr3t-Pa55word"


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_module("changewatch.producer", *args, env={**os.environ, **env})


def test_broker_password_is_not_in_the_error(database_url: str) -> None:
    """An unreachable broker fails the enqueue, recorded without the password."""
    user = uuid.uuid4()
    proc = _cli(
        {"CELERY_BROKER_URL": f"redis://:{SECRET}@127.0.0.1:1/0", "DATABASE_URL": database_url},
        "analyze",
        "--user-id",
        str(user),
        "--session-id",
        str(uuid.uuid4()),
        "--captured-at",
        "2026-01-05T09:30:00Z",
        *[f"--image={a}=s3://b/{user}/{a}.jpg" for a in ("front", "left", "right")],
    )
    assert proc.returncode == 3, proc.stderr
    assert SECRET not in proc.stderr + proc.stdout
