"""Secrets never reach error messages; the static security check is part of CI."""

from __future__ import annotations

import os
import subprocess
import tomllib
import uuid

from scripts.localstack import ROOT
from tests.conftest import run_module

SECRET = "s3cr3t-Pa55word"


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_module("changewatch.producer", *args, env={**os.environ, **env})


def test_database_password_is_not_in_the_error() -> None:
    """An unreachable database is reported by host, never with its password."""
    proc = _cli(
        {"DATABASE_URL": f"postgresql://app:{SECRET}@127.0.0.1:1/changewatch"},
        "status",
        str(uuid.uuid4()),
    )
    assert proc.returncode == 3
    assert "unavailable" in proc.stderr and SECRET not in proc.stderr + proc.stdout


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


def test_ruff_security_rules_are_on_and_pass() -> None:
    """The bandit-derived S rules are selected for the whole tree, and it is clean."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "S" in config["tool"]["ruff"]["lint"]["select"]
    proc = run_module("ruff", "check", ".")
    assert proc.returncode == 0, proc.stdout
