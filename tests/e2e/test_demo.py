"""The README's main command does what it promises on generated photos, with a real
ImageNet-trained model."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from bench.harness.services import ROOT


def _comparison(out: str, current: int) -> dict[str, Any]:
    """The trend word and each layer's level of "Session N against session 1"."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"Session {current} "))
    trend = lines[start].split("(", 1)[1].split(",", 1)[0]
    found = {}
    for line in lines[start + 1 : start + 9]:
        words = line.split()
        if words and words[0] in ("immediate", "rolling", "monthly", "lifetime"):
            found[words[0]] = words[3]
    return {"trend": trend, "layers": found}


def test_demo_prints_analyses_and_a_comparison(broker: str, database_url: str) -> None:
    """First session 0.0, later sessions above 0, then a comparison, exit 0."""
    # The demo's own database and Redis databases, never the suite's (--fresh drops it).
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "CELERY_")) and k != "DATABASE_URL"
    }
    # As a user runs it: no weights named, so the embedded ImageNet model (or ResNet50's
    # ImageNet weights where cached), never random weights.
    env.pop("CHANGEWATCH_MODEL_WEIGHTS", None)
    env.pop("CHANGEWATCH_MODEL", None)
    env["CHANGEWATCH_METRICS_PORT"] = "0"
    # Where several people run the suite on one machine, each names the demo's own stack
    # (CHANGEWATCH_TEST_DEMO_DATABASE_URL, _BROKER_URL, _RESULT_BACKEND); else its defaults.
    for ours, theirs in (
        ("DATABASE_URL", "DATABASE_URL"),
        ("BROKER_URL", "CELERY_BROKER_URL"),
        ("RESULT_BACKEND", "CELERY_RESULT_BACKEND"),
    ):
        if os.environ.get(f"CHANGEWATCH_TEST_DEMO_{ours}"):
            env[theirs] = os.environ[f"CHANGEWATCH_TEST_DEMO_{ours}"]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.demo", "--fresh"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    # The table's session lines start with the capture date (YYYY-MM-DD hh:mm).
    rows = [line.split() for line in out.splitlines() if line[:2] == "20" and line[4:5] == "-"]
    assert len(rows) == 7
    scores = [float(row[3]) for row in rows]
    assert scores[0] == 0.0 and all(s > 0 for s in scores[1:])
    # Meaningful: the re-takes stay inside the person's noise floor, the session that
    # drifted is far outside it.
    times_floor = [float(row[5]) for row in rows[4:]]
    assert times_floor[0] < 1 and times_floor[1] < 1 and times_floor[2] > 3
    assert "first session" in out and "comparison_method embedding" in out
    # The drifted session against the first: no layer and no overall_trend calls it
    # stable. A re-take against the first: overall_trend and every layer call it stable.
    drifted, retake = _comparison(out, 7), _comparison(out, 6)
    assert drifted["trend"] != "stable" and "stable" not in drifted["layers"].values()
    assert retake["trend"] == "stable"
    assert set(retake["layers"].values()) == {"stable"}, retake
    assert set(drifted["layers"]) == {"immediate", "rolling", "monthly", "lifetime"}
    assert "levels read against: noise_floor" in out
    assert "regions that moved most in the last session:" in out and "region: " in out
    assert (ROOT / "artifacts" / "demo-history.png").stat().st_size > 10_000
    # The trend, in its neutral words, and the report a person can open.
    trend = next(line for line in out.splitlines() if line.startswith("trend"))
    assert any(word in trend for word in ("rising", "steady", "falling")), trend
    # Each session against the range its history expected: none before a floor exists,
    # the re-takes inside it, the drifted session outside.
    assert [row[12] for row in rows] == ["-"] * 4 + ["in", "in", "out"]
    assert "report: artifacts/demo-report.html" in out
    page = (ROOT / "artifacts" / "demo-report.html").read_text()
    assert page.count('class="thumb" href="data:image/jpeg;base64,') == 6
