"""Scores and comparisons, as pure functions over embeddings."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from changewatch.schema.levels import Basis, Scale, TrendThresholds
from changewatch.worker.compare import ComparedSession, compare
from changewatch.worker.score import StoredSession, analyze_history, cosine_distance, to_fixed

FIXED = Scale(Basis.FIXED, None)

T0 = datetime(2026, 3, 1, tzinfo=UTC)
RNG = np.random.default_rng(7)


def stored(day: int, angles: tuple[str, ...] = ("front", "left", "right")) -> StoredSession:
    vectors = {a: RNG.random(16).astype(np.float32) for a in angles}
    return StoredSession(
        uuid.uuid4(),
        T0 + timedelta(days=day),
        vectors,
        np.mean(np.stack(list(vectors.values())), axis=0),
    )


def test_cosine_distance_is_zero_for_same_direction_and_one_for_orthogonal() -> None:
    """The score's unit: 0 means no change in direction."""
    a = np.array([1.0, 2.0, 0.0], np.float32)
    assert cosine_distance(a, 3 * a) == pytest.approx(0.0, abs=1e-7)
    assert cosine_distance(a, np.array([-2.0, 1.0, 5.0])) == pytest.approx(1.0)
    assert cosine_distance(a, np.zeros(3)) == 0.0


def test_first_session_is_zero_and_later_ones_use_the_mean_of_earlier() -> None:
    """Baseline = mean of strictly earlier sessions; the first session scores 0.0."""
    history = [stored(0), stored(14), stored(28)]
    by_id = {a.session_id: a for a in analyze_history(history)}
    first, second, third = (by_id[s.session_id] for s in history)
    assert first.is_first_session and first.change_score == 0.0
    assert all(row["change_score"] == 0.0 for row in first.per_angle)
    assert second.change_score == pytest.approx(
        cosine_distance(history[1].session, history[0].session)
    )
    baseline = (history[0].session.astype(np.float64) + history[1].session) / 2
    assert third.baseline_session_count == 2
    assert third.change_score == pytest.approx(cosine_distance(history[2].session, baseline))
    front = next(r for r in third.per_angle if r["angle"] == "front")
    front_base = (history[0].angles["front"].astype(np.float64) + history[1].angles["front"]) / 2
    assert front["change_score"] == pytest.approx(
        cosine_distance(history[2].angles["front"], front_base)
    )


def test_any_arrival_order_gives_the_same_analyses() -> None:
    """Results depend on capture time only, never on the order jobs arrived in."""
    history = [stored(d) for d in (0, 7, 21, 35)]
    expected = {a.session_id: a for a in analyze_history(history)}
    for order in itertools.permutations(history):
        assert {a.session_id: a for a in analyze_history(list(order))} == expected


def test_sessions_at_the_same_time_are_not_each_others_baseline() -> None:
    """'Strictly earlier': two sessions captured at the same instant both start fresh."""
    a, b = stored(0), stored(0)
    results = analyze_history([a, b])
    assert all(r.is_first_session and r.change_score == 0.0 for r in results)


def test_angle_missing_from_history_scores_zero_with_no_baseline() -> None:
    """An angle photographed for the first time has nothing to differ from."""
    history = [stored(0, ("front", "left", "right")), stored(7, ("front", "left", "raised"))]
    later = analyze_history(history)[1]
    raised = next(r for r in later.per_angle if r["angle"] == "raised")
    assert raised == {"angle": "raised", "change_score": 0.0, "baseline_session_count": 0}


def compared(model: str, scale: float, with_embedding: bool = True) -> ComparedSession:
    angles = {a: np.full(4, 1.0, np.float32) + scale * np.arange(4) for a in ("front", "left")}
    return ComparedSession(
        session_id=uuid.uuid4(),
        model_id=model,
        change_score=scale,
        angle_scores={"front": scale, "left": scale / 2},
        angles=angles,
        session=np.mean(np.stack(list(angles.values())), axis=0) if with_embedding else None,
    )


def test_compare_uses_embeddings_of_the_same_model() -> None:
    """overall_delta is the session embeddings' distance; stability is its complement."""
    cur, prev = compared("m1", 0.5), compared("m1", 0.0)
    out = compare(cur, prev, FIXED)
    assert out["comparison_method"] == "embedding"
    assert cur.session is not None and prev.session is not None
    assert out["overall_delta"] == pytest.approx(cosine_distance(cur.session, prev.session))
    assert out["stability_index"] == pytest.approx(1 - out["overall_delta"])
    front = next(r for r in out["per_angle"] if r["angle"] == "front")
    assert front["score_delta"] == pytest.approx(0.5)
    assert front["embedding_distance"] is not None


def test_compare_falls_back_to_scores_and_says_so() -> None:
    """Without comparable embeddings the method is 'score', never silently 'embedding'."""
    for cur, prev in [
        (compared("m1", 0.4), compared("m2", 0.1)),
        (compared("m1", 0.4, with_embedding=False), compared("m1", 0.1)),
    ]:
        out = compare(cur, prev, FIXED)
        assert out["comparison_method"] == "score"
        assert out["overall_delta"] == pytest.approx((0.3 + 0.15) / 2)
        assert all(r["embedding_distance"] is None for r in out["per_angle"])


def test_fixed_trend_thresholds_are_configurable() -> None:
    """With the fixed basis (no floor, no calibration): stable < 0.10 <= mild_variation <
    0.25 <= significant_shift by default."""

    def trend(delta: float, fixed: TrendThresholds) -> str:
        return Scale(Basis.FIXED, None, fixed_trend=fixed).trend(delta).level

    default = TrendThresholds()
    assert [trend(d, default) for d in (0.0, 0.0999, 0.10, 0.2499, 0.25, 1.5)] == [
        "stable",
        "stable",
        "mild_variation",
        "mild_variation",
        "significant_shift",
        "significant_shift",
    ]
    assert trend(0.05, TrendThresholds(stable=0.01, mild=0.02)) == "significant_shift"
    with pytest.raises(ValueError):
        TrendThresholds(stable=0.3, mild=0.2)


def test_fixed_point_of_float32_is_that_of_float64() -> None:
    """to_fixed's float32 path gives the integers float64 gives, to the last bit: halves
    of the unit, subnormals, the range's ends, and model-like values."""
    rng = np.random.default_rng(9)
    unit = 2.0**-28
    edges = [0.0, -0.0, unit / 2, -unit / 2, 1.5 * unit, 2.5 * unit, 1e-45, -1e-45, 2.0**20]
    cases = np.concatenate(
        [
            np.array([*edges, -(2.0**20), 3 * unit / 4, 0.1, -7.3], dtype=np.float32),
            rng.gamma(1.0, 0.5, 4096).astype(np.float32),
            rng.normal(0.0, 1e-6, 4096).astype(np.float32),
            (rng.normal(0.0, 1.0, 4096) * 2.0 ** rng.integers(-40, 17, 4096)).astype(np.float32),
        ]
    )
    fixed = to_fixed(cases)
    reference = np.rint(cases.astype(np.float64) * 2.0**28).astype(np.int64)
    assert fixed.dtype == np.int64 and np.array_equal(fixed, reference)
    assert np.array_equal(to_fixed(cases.astype(np.float64)), reference)
    with pytest.raises(ValueError):
        to_fixed(np.array([np.nan], dtype=np.float32))
    with pytest.raises(ValueError):
        to_fixed(np.array([2.0**21], dtype=np.float32))
