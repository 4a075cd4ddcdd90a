"""What `pip install changewatch` relies on in the source tree, checked without installing:
every import names ``changewatch``, never a bare top-level ``worker`` or ``schema``, and the
producer never imports the worker (so it installs without torch, OpenCV or Flower).

The installed wheel itself is tested in tests/e2e/test_packaging.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from bench.harness.services import ROOT

SOURCES = ["worker", "producer", "schema", "tests", "bench"]
BARE = re.compile(r"^\s*(from|import)\s+(worker|producer|schema|celeryconfig)\b", re.M)


def _python_files() -> list[Path]:
    files = [ROOT / "celeryconfig.py"]
    for folder in SOURCES:
        files += sorted((ROOT / folder).rglob("*.py"))
    return files


def test_nothing_imports_a_bare_top_level_name() -> None:
    """From a checkout ``import worker`` would still work, and load every module twice."""
    offenders = [str(f.relative_to(ROOT)) for f in _python_files() if BARE.search(f.read_text())]
    assert offenders == []


def test_the_producer_and_the_worker_never_import_each_other() -> None:
    """The contract is theirs to share (changewatch.schema); neither owns the other."""
    crossing = []
    for side, other in (("producer", "worker"), ("worker", "producer"), ("schema", "worker")):
        for f in (ROOT / side).rglob("*.py"):
            if re.search(rf"^\s*(from|import)\s+changewatch\.{other}\b", f.read_text(), re.M):
                crossing.append(f"{f.relative_to(ROOT)} -> {other}")
    assert crossing == []
    probe = (
        "import sys, changewatch.producer.__main__, changewatch.producer.admin,"
        " changewatch.producer.reaper, changewatch.producer.models;"
        "print(sorted(m for m in ('torch', 'torchvision', 'cv2', 'PIL', 'flower',"
        " 'changewatch.worker') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stderr


def test_every_package_folder_is_in_the_wheel() -> None:
    """A subpackage missing from pyproject's list installs nowhere: the thin producer
    then fails at import (schema/forgetting did, once)."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    found = {
        ".".join(("changewatch", *init.parent.relative_to(ROOT).parts))
        for folder in ("worker", "producer", "schema")
        for init in (ROOT / folder).rglob("__init__.py")
    }
    assert found - listed == set()
