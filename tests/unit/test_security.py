"""Secrets never reach error messages; the static security check is part of CI (the broker's
password, with a real database, is in tests/integration/test_security.py)."""

from __future__ import annotations

import os
import subprocess
import tomllib
import uuid

from bench.harness.services import ROOT
from tests.helpers import run_module

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


def test_ruff_security_rules_are_on_and_pass() -> None:
    """The bandit-derived S rules are selected for the whole tree, and it is clean."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "S" in config["tool"]["ruff"]["lint"]["select"]
    proc = run_module("ruff", "check", ".")
    assert proc.returncode == 0, proc.stdout
