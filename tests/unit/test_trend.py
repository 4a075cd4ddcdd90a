"""The trend of a person's scores (schema.trend): a Theil-Sen slope per 30 days with its 95%
interval, neutral direction words, and the range a history expects for the next session.
Pure: no services."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import pytest

from changewatch.schema import evidence, trend
from changewatch.schema.json_schemas import FOLDER
from changewatch.settings import Settings

T0 = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
ANGLES = ("front", "left", "right")


def history(scores: list[float], gap_days: float = 7.0) -> list[dict[str, Any]]:
    """Analyses as results carry them: a first session, then one scored session per score
    (every angle scoring the session's score), ``gap_days`` apart."""
    out = []
    for i, score in enumerate([0.0, *scores]):
        out.append(
            {
                "captured_at": (T0 + timedelta(days=gap_days * i)).isoformat(),
                "is_first_session": i == 0,
                "change_score": score,
                "baseline_session_count": i,
                "per_angle": [
                    {"angle": a, "change_score": score, "baseline_session_count": i} for a in ANGLES
                ],
            }
        )
    return out


def annotated(analyses: list[dict[str, Any]], window: int = 8) -> list[dict[str, Any]]:
    """Each analysis with its evidence, read against the ones before it."""
    return [
        evidence.annotate(
            dict(a), earlier=analyses[:i], photos=None, equipment={}, trend_sessions=window
        )
        for i, a in enumerate(analyses)
    ]


def test_theil_sen_is_the_median_pairwise_slope_and_shrugs_off_an_outlier() -> None:
    assert trend.theil_sen([0, 1, 2, 3], [0, 1, 2, 3]) == (1.0, 1.0, 1.0)
    x = list(range(10))
    y = [2.0 * v for v in x]
    y[4] = 100.0  # one odd session
    slope, low, high = trend.theil_sen(x, y) or (0, 0, 0)
    assert slope == pytest.approx(2.0) and low <= 2.0 <= high
    assert trend.theil_sen([1, 1, 1], [0, 1, 2]) is None


def test_the_interval_follows_the_rank_rule() -> None:
    """n = 8: 28 pairwise slopes, rank variance 8*7*21/18, so the 95% interval is the 6th to
    the 23rd smallest slope (scipy.stats.theilslopes gives the same ranks)."""
    rng = random.Random(3)
    x = [float(i) for i in range(8)]
    y = [rng.random() for _ in x]
    slopes = sorted((y[j] - y[i]) / (x[j] - x[i]) for i in range(8) for j in range(i + 1, 8))
    _, low, high = trend.theil_sen(x, y) or (0, 0, 0)
    assert (low, high) == (slopes[5], slopes[22])


@pytest.mark.parametrize(
    ("low", "high", "word"),
    [
        (0.001, 0.01, "rising"),
        (-0.01, -0.001, "falling"),
        (-0.01, 0.01, "steady"),
        (0, 1, "steady"),
    ],
)
def test_directions_are_words_for_the_interval(low: float, high: float, word: str) -> None:
    assert trend.direction(low, high) == word


def test_a_steady_drift_is_rising_with_an_interval_that_excludes_zero() -> None:
    rng = random.Random(0)
    # Weekly sessions whose score grows 0.004 a week, with re-take noise of +-0.002.
    scores = [0.01 + 0.004 * i + rng.uniform(-0.002, 0.002) for i in range(12)]
    last = annotated(history(scores))[-1]["trend"]
    assert last["direction"] == "rising"
    low, high = last["slope_interval"]
    assert 0 < low <= last["slope_per_30_days"] <= high
    # 0.004 a week is 0.017 per 30 days.
    assert last["slope_per_30_days"] == pytest.approx(0.004 * 30 / 7, rel=0.25)
    assert last["sessions"] == last["window"] == 8
    assert {a["angle"]: a["direction"] for a in last["per_angle"]} == dict.fromkeys(
        ANGLES, "rising"
    )


def retakes(rng: random.Random, count: int) -> list[float]:
    """Re-take scores: noise around 0.02, times 1 + 1/n for a baseline of n sessions (the
    distance to a mean of n re-takes, schema.trend says why)."""
    return [rng.uniform(0.015, 0.025) * (1 + 1 / n) for n in range(1, count + 1)]


def test_re_takes_are_steady_and_inside_what_their_history_expected() -> None:
    rng = random.Random(1)
    scores = retakes(rng, 12)
    results = annotated(history(scores))
    last = results[-1]["trend"]
    assert last["direction"] == "steady"
    low, high = last["slope_interval"]
    assert low <= 0 <= high
    assert all(r["within_expected"] for r in results[5:])
    nxt = last["expected_next"]
    assert nxt["low"] <= 0.02 <= nxt["high"] and nxt["after_days"] == pytest.approx(7.0)


def test_a_jump_falls_outside_the_expected_range() -> None:
    rng = random.Random(2)
    scores = [*retakes(rng, 8), 0.2]
    last = annotated(history(scores))[-1]
    assert last["within_expected"] is False
    assert last["change_score"] > last["trend"]["expected"]["high"]


def test_a_rising_history_expects_its_line_and_a_return_to_the_start_is_outside() -> None:
    scores = [0.01 + 0.004 * i for i in range(10)]
    on_line = annotated(history([*scores, 0.01 + 0.004 * 10]))[-1]
    back = annotated(history([*scores, 0.01]))[-1]
    assert on_line["within_expected"] is True
    assert back["within_expected"] is False and back["trend"]["expected"]["low"] > 0.01


def test_a_flat_history_expects_up_to_the_noise_floor() -> None:
    """With no slope the range is 0 up to median + 2 x 1.4826 x MAD: the noise floor."""
    scores = [0.02, 0.03] * 4
    points = [(float(i), 0.025) for i in range(8)]
    found = trend.expected_range(points, scores, at=8.0, moving=False)
    floor = evidence.noise_floor(scores)
    assert found is not None and floor is not None
    assert found["high"] == pytest.approx(floor)
    assert found["low"] == 0.0


def test_four_sessions_in_order_are_no_direction_yet() -> None:
    """4 scores fall in order by chance 1 time in 12: not a 95% trend; the 5th can make one."""
    results = annotated(history([0.01, 0.02, 0.03, 0.04, 0.05]))
    assert [r["trend"]["direction"] for r in results] == [None] * 5 + ["rising"]
    assert results[4]["trend"]["slope_interval"] is None
    assert results[4]["within_expected"] is not None  # a range exists from 3 scores on


def test_too_little_history_gives_no_trend_and_no_verdict() -> None:
    results = annotated(history([0.02, 0.03]))
    for r in results:
        assert r["trend"]["direction"] is None and r["trend"]["slope_interval"] is None
        assert r["within_expected"] is None
    assert results[0]["trend"]["expected"] is None


def test_the_window_is_a_setting() -> None:
    assert Settings().trend_sessions == 8
    assert Settings.from_env({"CHANGEWATCH_TREND_SESSIONS": "12"}).trend_sessions == 12
    with pytest.raises(ValueError, match="at least 5"):
        Settings.from_env({"CHANGEWATCH_TREND_SESSIONS": "4"})
    last = annotated(history([0.02] * 10), window=5)[-1]["trend"]
    assert last["sessions"] == 5 and last["window"] == 5


def test_trend_fields_follow_the_published_schema() -> None:
    """``trend`` and ``within_expected`` as schema/json/analysis_result.json describes them."""
    schema = json.loads((FOLDER / "analysis_result.json").read_text())
    validator = jsonschema.Draft202012Validator(
        {**schema["properties"]["trend"], "$defs": schema.get("$defs", {})}
    )
    for r in annotated(history([0.02, 0.03, 0.025, 0.04, 0.03, 0.2])):
        validator.validate(json.loads(json.dumps(r["trend"])))
        assert r["within_expected"] in (True, False, None)
    assert "trend" in schema["required"] and "within_expected" in schema["required"]
