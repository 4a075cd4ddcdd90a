"""changewatch reports change, never what it means: no medical or risk word anywhere a
person reads it. Here the README, docs and the text of every product module; real results,
error messages and CLI output are scanned in tests/e2e/test_words.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.harness.services import ROOT
from tests.helpers import found

# What people read: the README, docs, and the text of every product module (error
# messages, CLI help and output, log lines are written there).
SOURCES = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "producer").rglob("*.py")),
    *sorted((ROOT / "worker").rglob("*.py")),
    *sorted((ROOT / "schema").rglob("*.*")),
    *sorted((ROOT / "bench" / "demo").glob("*.py")),
]


def test_the_scanner_catches_the_words() -> None:
    assert found("A Suspicious lesion; low RISK.") == ["lesion", "risk", "suspicious"]
    assert found("riskless asterisk, diagnostics-free") == []


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_readme_docs_and_product_text_are_neutral(path: Path) -> None:
    assert found(path.read_text(errors="replace")) == [], path
