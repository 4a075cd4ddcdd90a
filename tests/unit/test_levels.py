"""Levels that agree with the floor: a session far outside a person's usual variation is
never called stable, a re-take inside it always is, and every level says what it was read
against (the person's floor, the model's calibration, or fixed cut-offs)."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from changewatch.schema.evidence import VariationLevels, noise_floor
from changewatch.schema.levels import CALIBRATED, Basis, Scale, annotate_level, scale_for
from changewatch.worker.compare import ComparedSession, compare, layers
from changewatch.worker.score import Analysis, StoredSession, analyze_history

LITE0 = "efficientnet_lite0/imagenet-579344248a93/prep1"
UNCALIBRATED = "resnet50/imagenet-0123456789ab/prep1"
T0 = datetime(2026, 1, 5, tzinfo=UTC)


def earlier(scores: list[float]) -> list[dict[str, Any]]:
    """A person's analyses, oldest first: a first session, then these scores."""
    rows = [{"change_score": 0.0, "is_first_session": True, "baseline_session_count": 0}]
    rows += [
        {"change_score": s, "is_first_session": False, "baseline_session_count": i + 1}
        for i, s in enumerate(scores)
    ]
    return rows


RETAKES = [0.0045, 0.0042, 0.0033, 0.0045, 0.0036]  # the demo's re-takes (Lite0)


def test_a_session_at_six_times_its_floor_is_not_stable_and_a_retake_is() -> None:
    """The demo's numbers: floor about 0.005, the drifted session 6.6x it, re-takes 0.7x."""
    scale = scale_for(LITE0, earlier(RETAKES))
    assert scale.basis == Basis.NOISE_FLOOR
    floor = noise_floor(RETAKES)
    assert floor is not None and scale.floor == pytest.approx(floor)
    drifted = scale.judge(6.6 * floor, len(RETAKES) + 1)
    assert drifted.level == "strong" and drifted.relative == pytest.approx(6.6)
    assert scale.trend(6.6 * floor).level == "significant_shift"
    retake = scale.judge(0.7 * floor, len(RETAKES) + 1)
    assert retake.level == "stable" and scale.trend(0.7 * floor).level == "stable"
    # Cut-offs are multiples of the floor: 1, 2, 3, 5.
    words = [scale.judge(m * floor).level for m in (0.99, 1.0, 1.99, 2.0, 2.99, 3.0, 4.99, 5.0)]
    assert words == ["stable", "mild", "mild", "moderate", "moderate", "higher", "higher", "strong"]
    assert scale.judge(floor).cuts["stable_below"] == pytest.approx(floor)


def test_before_a_floor_the_model_calibration_applies_and_says_so() -> None:
    for scores in ([], [0.004], [0.004, 0.005]):  # a floor needs three scored sessions
        scale = scale_for(LITE0, earlier(scores))
        assert scale.basis == Basis.MODEL_CALIBRATION
        assert scale.floor == CALIBRATED[LITE0].floor
        assert scale.as_json()["unit"] == "x noise floor"
    assert scale_for(LITE0, earlier([0.004, 0.005, 0.0045])).basis == Basis.NOISE_FLOOR


def test_an_uncalibrated_model_without_a_floor_uses_the_fixed_cut_offs() -> None:
    fixed = VariationLevels(0.01, 0.02, 0.03, 0.04)
    scale = scale_for(UNCALIBRATED, earlier([0.004]), fixed)
    assert scale.basis == Basis.FIXED and scale.floor is None
    judged = scale.judge(0.015, 1)
    assert judged.level == "mild" and judged.relative is None
    assert judged.cuts == fixed.as_json()
    assert scale.as_json()["unit"] == "cosine distance"
    # Once the person has a floor, it applies whatever the model.
    assert scale_for(UNCALIBRATED, earlier(RETAKES), fixed).basis == Basis.NOISE_FLOOR


def test_a_window_of_fewer_sessions_gets_a_wider_floor() -> None:
    """Re-take noise against one session is (1 + 1) against (1 + 1/m) for a mean of m."""
    scale = Scale(Basis.NOISE_FLOOR, 0.01, baseline_sessions=4.0)
    assert scale.floor_for(1) == pytest.approx(0.01 * 2.0 / 1.25)
    assert scale.floor_for(5) == pytest.approx(0.01)  # never narrower than the floor
    assert scale.floor_for(None) == pytest.approx(0.01)


def test_annotate_level_names_the_basis_and_leaves_first_sessions_unlevelled() -> None:
    first = annotate_level(
        {"model_id": LITE0, "is_first_session": True, "change_score": 0.0},
        earlier=[],
    )
    assert first["variation_level"] is None and first["level_basis"] is None
    later = annotate_level(
        {
            "model_id": LITE0,
            "is_first_session": False,
            "change_score": 0.2,
            "baseline_session_count": 6,
        },
        earlier=earlier(RETAKES),
    )
    assert later["variation_level"] == "strong" and later["level_basis"] == "noise_floor"


def _compared(session: StoredSession, analysis: Analysis) -> ComparedSession:
    return ComparedSession(
        session_id=session.session_id,
        model_id=LITE0,
        change_score=analysis.change_score,
        angle_scores={p["angle"]: p["change_score"] for p in analysis.per_angle},
        angles=session.angles,
        session=np.mean(np.stack(list(session.angles.values())), axis=0),
        captured_at=session.captured_at,
        baseline_session_count=analysis.baseline_session_count,
    )


@pytest.mark.parametrize(("shift", "stable"), [(0.0, True), (1.0, False)])
def test_comparison_and_every_layer_follow_the_floor(shift: float, stable: bool) -> None:
    """Eight weekly re-takes, then a ninth: a re-take is called stable by overall_trend
    and every layer, a drifted session by none. Each says its basis."""
    rng = np.random.default_rng(0)
    base = {a: rng.normal(size=64) + 4.0 for a in ("front", "left", "right")}

    def session(week: int, drift: float = 0.0) -> StoredSession:
        angles = {
            a: (v + drift + 0.1 * rng.normal(size=64)).astype(np.float32) for a, v in base.items()
        }
        return StoredSession(uuid.uuid4(), T0 + timedelta(weeks=week), angles)

    history = [session(week) for week in range(8)]
    current = session(8, shift)
    analyses = analyze_history([*history, current])
    rows = [asdict(a) for a in analyses[:-1]]
    scale = scale_for(LITE0, rows)
    assert scale.basis == Basis.NOISE_FLOOR
    windows = [(s, rank) for rank, s in enumerate(reversed(history), start=1)]
    now = _compared(current, analyses[-1])
    out = compare(now, _compared(history[0], analyses[0]), scale)
    found = layers(now, windows, scale)
    calls = [out["overall_trend"], *(layer["variation_level"] for layer in found.values())]
    assert out["level_basis"] == "noise_floor"
    assert all(layer["level_basis"] == "noise_floor" for layer in found.values())
    if stable:
        assert calls == ["stable"] * 5
    else:
        assert "stable" not in calls
