"""changewatch reports change, never what it means: no medical or risk word in what a real
worker returns, in error messages, in CLI output or in the HTML report (the README, docs
and product source are scanned in tests/unit/test_words.py)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from changewatch.producer import Producer
from tests.e2e.test_evidence import person  # noqa: F401  # the fixture: one person's sessions
from tests.helpers import found, run_module

pytestmark = pytest.mark.usefixtures("worker")


def test_results_errors_and_cli_output_are_neutral(
    person: dict[str, Any],  # noqa: F811
    producer: Producer,
    tmp_path: Path,
) -> None:
    user, ids = person["user"], person["ids"]
    texts = [json.dumps(person["results"])]
    producer.compare(user, ids[7], ids[0])
    texts.append(json.dumps(producer.wait_comparison(ids[7], ids[0], timeout=240)))
    for args in (
        ("history", str(user)),
        ("history", str(user), "--json"),
        ("result", str(ids[7])),
        ("status", str(ids[7])),
        ("model", "list"),
        ("--help",),
        ("history", "--help"),
        ("report", "--help"),
        ("backfill", "--help"),
        ("result", str(uuid.uuid4())),  # an error message
        (
            "analyze",
            "--user-id",
            "x",
            "--session-id",
            "y",
            "--captured-at",
            "z",
            "--image",
            "front=s3://b/k",
        ),
    ):
        proc = run_module("changewatch.producer", *args)
        texts += [proc.stdout, proc.stderr]
    page = tmp_path / "report.html"
    proc = run_module("changewatch.producer", "report", str(user), "--out", str(page))
    assert proc.returncode == 0, proc.stderr
    texts += [proc.stdout, proc.stderr, page.read_text()]
    assert all(texts[:3])
    assert found("\n".join(texts)) == []
