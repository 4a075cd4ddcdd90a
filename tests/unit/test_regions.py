"""Region maps as pure functions: pooling, projection, region baselines and floors."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
import torch

from changewatch.schema.evidence import annotate
from changewatch.schema.regions import REGIONS, regions_moved
from changewatch.worker.embed import ARCHITECTURES
from changewatch.worker.regions import (
    REGION_DIM,
    pool_regions,
    pooling_weights,
    project,
    projection,
    region_dim,
)
from changewatch.worker.score import StoredSession, Totals, analyze_history, cosine_distance
from changewatch.worker.trunk import REGION_CHANNELS

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def test_the_nine_regions_tile_the_photo_and_average_to_the_angle_embedding() -> None:
    """Exact-area pooling: each feature cell counts once in total, so the angle's
    embedding (the global mean) is the mean of its nine regions."""
    weights = pooling_weights(7)
    assert weights.sum(axis=1) == pytest.approx(np.ones(3))
    assert weights.sum(axis=0) == pytest.approx(np.full(7, 3 / 7))
    feature_map = torch.rand(2, 5, 7, 7, dtype=torch.float64)
    regions = pool_regions(feature_map)
    assert regions.shape == (2, 9, 5)
    torch.testing.assert_close(regions.mean(dim=1), feature_map.mean(dim=(2, 3)))
    # Region 0 is the top-left third: cells 0, 1 and a third of cell 2 in each direction.
    corner = feature_map[0, :, :2, :2].sum(dim=(1, 2)) + feature_map[0, :, 2, :2].sum(1) / 3
    corner += feature_map[0, :, :2, 2].sum(1) / 3 + feature_map[0, :, 2, 2] / 9
    torch.testing.assert_close(regions[0, 0], corner / (7 / 3) ** 2)


def test_region_storage_is_at_most_the_angle_embeddings_own() -> None:
    """At most 9 x 128 floats per angle, under each model's embedding width."""
    for name, arch in ARCHITECTURES.items():
        assert len(REGIONS) * region_dim(REGION_CHANNELS[name]) <= arch.dim
    assert region_dim(REGION_CHANNELS["resnet50"]) == REGION_DIM


def test_projection_is_fixed_and_keeps_cosine_distances() -> None:
    """Same matrix on every call and machine; distances between non-negative features
    (what a ReLU backbone gives) keep their order and scale within the JL error."""
    np.testing.assert_array_equal(projection(1024), projection(1024))
    assert projection(1024).shape == (1024, REGION_DIM)
    rng = np.random.default_rng(3)
    base = rng.gamma(1.0, 1.0, 1024)
    full, projected = [], []
    for size in (0.05, 0.1, 0.2, 0.4, 0.8):
        other = base + size * rng.gamma(1.0, 1.0, 1024)
        full.append(cosine_distance(base, other))
        projected.append(cosine_distance(project(base), project(other)))
    assert np.argsort(full).tolist() == np.argsort(projected).tolist()
    assert np.asarray(projected) / np.asarray(full) == pytest.approx(np.ones(5), rel=0.35)


def _session(day: int, rng: np.random.Generator, moved: int | None = None) -> StoredSession:
    grid = rng.normal(0, 0.01, (9, 8)) + np.arange(1, 9)[None, :]
    if moved is not None:
        grid[moved] = rng.normal(0, 3, 8)
    angles = {"front": grid.mean(axis=0).astype(np.float32)}
    regions = {"front": grid.astype(np.float32)}
    return StoredSession(uuid.UUID(int=day + 1), T0 + timedelta(days=day), angles, regions=regions)


def test_region_scores_are_order_independent_and_exact_in_the_sums() -> None:
    """A session added late rescores the later ones as in-order processing would, and
    removing a session's regions leaves the sums bit for bit as before."""
    rng = np.random.default_rng(0)
    history = [_session(7 * i, rng) for i in range(6)]
    in_order = {a.session_id: a.per_angle for a in analyze_history(history)}
    shuffled = [history[i] for i in (3, 0, 5, 1, 4, 2)]
    assert {a.session_id: a.per_angle for a in analyze_history(shuffled)} == in_order
    later = in_order[history[2].session_id][0]["regions"]
    assert [r["region"] for r in later] == list(REGIONS)
    base = np.mean([s.regions["front"].astype(np.float64) for s in history[:2]], axis=0)
    assert later[4]["change_score"] == pytest.approx(
        cosine_distance(history[2].regions["front"][4], base[4])
    )
    totals = Totals()
    for item in history[:3]:
        totals.add(item.angles, regions=item.regions)
    before = totals.copy()
    totals.add(history[3].angles, regions=history[3].regions)
    totals.add(history[3].angles, sign=-1, regions=history[3].regions)
    np.testing.assert_array_equal(totals.regions["front"][1], before.regions["front"][1])


def test_first_sessions_and_sessions_without_regions_have_no_region_scores() -> None:
    """No region baseline, no region scores: a first session, or history from before
    region vectors existed (its sums count only the sessions that had them)."""
    rng = np.random.default_rng(1)
    old = [StoredSession(uuid.UUID(int=99), T0, _session(0, rng).angles)]
    new = [_session(5, rng), _session(6, rng)]
    analyses = analyze_history([*old, *new])
    assert "regions" not in analyses[0].per_angle[0]
    assert "regions" not in analyses[1].per_angle[0]  # its only earlier session has none
    assert len(analyses[2].per_angle[0]["regions"]) == 9


def _results(sessions: list[StoredSession]) -> list[dict[str, Any]]:
    """analyze_history's analyses as annotate reads them (with their capture times)."""
    at = {s.session_id: s.captured_at for s in sessions}
    return [{**asdict(a), "captured_at": at[a.session_id]} for a in analyze_history(sessions)]


def test_a_changed_region_is_named_first_against_its_own_floor() -> None:
    """Nine region floors from the person's earlier region scores; the region that moved
    leads regions_moved with neutral words, and re-take regions stay inside their floor."""
    rng = np.random.default_rng(2)
    history = [_session(7 * i, rng) for i in range(7)]
    changed = _session(70, rng, moved=2)
    analyses = _results([*history, changed])
    result = annotate(analyses[-1], earlier=analyses[:-1], photos=None, equipment={})
    regions = result["per_angle"][0]["regions"]
    assert all(r["noise_floor"] is not None for r in regions)
    top = max(regions, key=lambda r: r["relative_change"])
    assert top["region"] == "upper_right" and top["relative_change"] > 3
    moved = result["regions_moved"]
    assert moved[0]["region"] == "upper_right" and moved[0]["angle"] == "front"
    assert moved[0]["text"].startswith("front, upper right region: ")
    assert moved[0]["text"].endswith("x its usual variation")
    retake = _results([*history, _session(70, rng)])
    calm = annotate(retake[-1], earlier=retake[:-1], photos=None, equipment={})
    assert max(r["relative_change"] for r in calm["per_angle"][0]["regions"]) < 2


def test_without_floors_the_highest_region_scores_are_named_as_scores() -> None:
    per_angle = [
        {
            "angle": "left",
            "regions": [
                {"region": r, "change_score": s, "noise_floor": None, "relative_change": None}
                for r, s in zip(REGIONS, (0.01, 0.2, 0, 0, 0, 0, 0, 0.05, 0), strict=True)
            ],
        }
    ]
    moved = regions_moved(per_angle)
    assert [m["region"] for m in moved] == ["upper_centre", "lower_centre", "upper_left"]
    assert moved[0]["text"] == (
        "left, upper centre region: change 0.2000 (its usual variation is not known yet)"
    )
