"""changewatch reports change, never what it means: no medical or risk word anywhere a
person reads it (results, error messages, CLI output, the README and docs)."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from changewatch.producer import Producer
from scripts.localstack import ROOT
from tests.conftest import run_module
from tests.test_evidence import person  # noqa: F401  # the fixture: one person's sessions

pytestmark = pytest.mark.usefixtures("worker")
WORDS = (
    "risk", "risky", "cancer", "cancerous", "tumor", "tumour", "malignant", "benign",
    "abnormal", "abnormality", "suspicious", "concerning", "diagnosis", "diagnose",
    "diagnosed", "diagnostic", "disease", "lesion", "lesions", "patient", "patients",
    "melanoma", "carcinoma", "symptom", "symptoms", "pathology", "pathological",
    "dangerous", "alarming", "worrying", "clinical",
)  # fmt: skip
PATTERN = re.compile(r"\b(" + "|".join(WORDS) + r")\b", re.IGNORECASE)
# What people read: the README, docs, and the text of every product module (error
# messages, CLI help and output, log lines are written there).
SOURCES = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "producer").rglob("*.py")),
    *sorted((ROOT / "worker").rglob("*.py")),
    *sorted((ROOT / "schema").rglob("*.*")),
    ROOT / "scripts" / "demo.py",
]


def found(text: str) -> list[str]:
    return sorted({m.group(0).lower() for m in PATTERN.finditer(text)})


def test_the_scanner_catches_the_words() -> None:
    assert found("A Suspicious lesion; low RISK.") == ["lesion", "risk", "suspicious"]
    assert found("riskless asterisk, diagnostics-free") == []


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_readme_docs_and_product_text_are_neutral(path: Path) -> None:
    assert found(path.read_text(errors="replace")) == [], path


def test_results_errors_and_cli_output_are_neutral(
    person: dict[str, Any],  # noqa: F811
    producer: Producer,
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
    assert all(texts[:3])
    assert found("\n".join(texts)) == []
