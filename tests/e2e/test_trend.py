"""The trend end to end: real photos through a real worker, read back as results, history
--json and the history table.

Two people, ten weekly sessions each, four angles. One person's photos drift steadily:
each session's photo is cross-faded a little further towards another scene (6% more each
week), so every session is a little further from the ones before; their trend must be
"rising", with an interval that excludes 0. The other's sessions are re-takes: the same
photos re-encoded at JPEG qualities in no order; their trend must be "steady".
"""

from __future__ import annotations

import io
import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from changewatch.producer import Producer
from tests.helpers import SERIES, T0, Uploader, run_module

pytestmark = pytest.mark.usefixtures("worker")
ANGLES = ["front", "left", "right", "up"]
SESSIONS = 10
DRIFT_PER_SESSION = 0.06
# Re-take qualities in no order: nothing about them moves one way over time.
QUALITIES = [92, 85, 95, 88, 90, 86, 94, 87, 91, 89]
SIDE = 960  # photos made smaller than the camera's: the worker's time, not the claim


def encoded(image: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def scene(path: Path) -> Image.Image:
    with Image.open(path) as image:
        small = image.convert("RGB")
        small.thumbnail((SIDE, SIDE))
        return small


def run_person(
    producer: Producer, uploader: Uploader, sessions: list[dict[str, bytes]]
) -> dict[str, Any]:
    user = uuid.uuid4()
    ids = [uuid.uuid4() for _ in sessions]
    for i, (sid, photos) in enumerate(zip(ids, sessions, strict=True)):
        images = {a: uploader.put(user, f"{a}.jpg", data) for a, data in photos.items()}
        producer.analyze(user, sid, T0 + timedelta(weeks=i), images)
    return {"user": user, "ids": ids, "results": [producer.wait(s, timeout=240) for s in ids]}


@pytest.fixture(scope="module")
def drifting(photos: Path, uploader: Uploader, producer: Producer) -> dict[str, Any]:
    """Each angle's photo cross-faded towards another scene, a little more every week."""
    start = [scene(photos / "series" / n) for n in SERIES[:4]]
    end = [
        scene(photos / "series" / n).resize(s.size) for n, s in zip(SERIES[4:8], start, strict=True)
    ]
    sessions = [
        {
            a: encoded(Image.blend(s, e, DRIFT_PER_SESSION * i))
            for a, s, e in zip(ANGLES, start, end, strict=True)
        }
        for i in range(SESSIONS)
    ]
    return run_person(producer, uploader, sessions)


@pytest.fixture(scope="module")
def retaking(photos: Path, uploader: Uploader, producer: Producer) -> dict[str, Any]:
    """The same four photos every week, re-encoded at qualities in no order."""
    start = [scene(photos / "series" / n) for n in SERIES[:4]]
    sessions = [{a: encoded(s, q) for a, s in zip(ANGLES, start, strict=True)} for q in QUALITIES]
    return run_person(producer, uploader, sessions)


def test_a_steady_drift_is_rising_with_an_interval_that_excludes_zero(
    drifting: dict[str, Any],
) -> None:
    last = drifting["results"][-1]
    trend = last["trend"]
    assert trend["direction"] == "rising", trend
    low, high = trend["slope_interval"]
    assert 0 < low <= trend["slope_per_30_days"] <= high
    assert trend["sessions"] == trend["window"] == 8
    print(
        "drift trend:", json.dumps({k: trend[k] for k in ("slope_per_30_days", "slope_interval")})
    )
    rising = [a["angle"] for a in trend["per_angle"] if a["direction"] == "rising"]
    assert len(rising) >= 3, trend["per_angle"]


def test_re_takes_are_steady_and_inside_their_expected_range(retaking: dict[str, Any]) -> None:
    results = retaking["results"]
    trend = results[-1]["trend"]
    assert trend["direction"] == "steady", trend
    low, high = trend["slope_interval"]
    assert low <= 0 <= high
    verdicts = [r["within_expected"] for r in results]
    figures = {k: trend[k] for k in ("slope_per_30_days", "slope_interval")}
    print("re-take trend:", json.dumps(figures), "within_expected:", verdicts)
    assert verdicts[:4] == [None] * 4  # no floor yet: nothing to be inside of
    assert all(v is not None for v in verdicts[4:])
    assert sum(bool(v) for v in verdicts[4:]) >= 5, verdicts


def test_history_carries_the_trend(drifting: dict[str, Any], producer: Producer) -> None:
    user = str(drifting["user"])
    proc = run_module("changewatch.producer", "history", user, "--json")
    assert proc.returncode == 0, proc.stderr
    sessions = json.loads(proc.stdout)["sessions"]
    assert sessions[-1]["trend"] == producer.result(drifting["ids"][-1])["trend"]
    assert [s["within_expected"] for s in sessions] == [
        r["within_expected"] for r in drifting["results"]
    ]

    proc = run_module("changewatch.producer", "history", user)
    lines = proc.stdout.splitlines()
    assert lines[0].split()[-3:] == ["expected", "trend", "notes"]
    assert "rising" in lines[SESSIONS]
    assert lines[-1].startswith("trend over the last 8 scored sessions: rising,")
    assert "next session expected between" in lines[-1]
