"""Baselines, change scores and comparisons: pure functions over embeddings.

A session's baseline is the mean embedding of the same user's sessions captured
strictly earlier (same model); change = cosine distance to it. Everything here is a
function of the stored embeddings alone, so the order jobs ran in cannot matter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import numpy as np

from worker.settings import TrendThresholds


def cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    """1 - cosine similarity in float64, clamped to [0, 2]; 0.0 when either is all zeros."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    norms = float(np.linalg.norm(a64) * np.linalg.norm(b64))
    if norms == 0.0:
        return 0.0
    return float(min(max(1.0 - float(a64 @ b64) / norms, 0.0), 2.0))


@dataclass(frozen=True)
class StoredSession:
    """One analyzed session's embeddings, as read back for baseline computation."""

    session_id: UUID
    captured_at: datetime
    angles: dict[str, np.ndarray]
    session: np.ndarray


@dataclass(frozen=True)
class Analysis:
    session_id: UUID
    change_score: float
    is_first_session: bool
    baseline_session_count: int
    per_angle: list[dict[str, Any]]


def session_embedding(angles: dict[str, np.ndarray]) -> np.ndarray:
    return np.mean(np.stack(list(angles.values())), axis=0).astype(np.float32)


def analyze_history(history: Sequence[StoredSession]) -> list[Analysis]:
    """Analyses for every session of one user's history (one model), in capture order.

    Sessions with equal capture times are not each other's baseline ("strictly before").
    Running sums make this linear in the history's length.
    """
    ordered = sorted(history, key=lambda s: (s.captured_at, str(s.session_id)))
    dim = ordered[0].session.shape[0] if ordered else 0
    session_sum, session_count = np.zeros(dim, np.float64), 0
    angle_sum: dict[str, np.ndarray] = {}
    angle_count: dict[str, int] = {}
    results: list[Analysis] = []
    index = 0
    while index < len(ordered):
        # All sessions at this capture time share the baseline built before it.
        group_end = index
        while (
            group_end < len(ordered)
            and ordered[group_end].captured_at == ordered[index].captured_at
        ):
            group_end += 1
        group = ordered[index:group_end]
        for item in group:
            per_angle = []
            for angle, embedding in item.angles.items():
                count = angle_count.get(angle, 0)
                score = cosine_distance(embedding, angle_sum[angle] / count) if count else 0.0
                per_angle.append(
                    {"angle": angle, "change_score": score, "baseline_session_count": count}
                )
            change = (
                cosine_distance(item.session, session_sum / session_count) if session_count else 0.0
            )
            results.append(
                Analysis(
                    session_id=item.session_id,
                    change_score=change,
                    is_first_session=session_count == 0,
                    baseline_session_count=session_count,
                    per_angle=per_angle,
                )
            )
        for item in group:
            session_sum += item.session
            session_count += 1
            for angle, embedding in item.angles.items():
                angle_sum[angle] = angle_sum.get(angle, np.zeros(dim, np.float64)) + embedding
                angle_count[angle] = angle_count.get(angle, 0) + 1
        index = group_end
    return results


def trend(overall_delta: float, thresholds: TrendThresholds) -> str:
    if overall_delta < thresholds.stable:
        return "stable"
    if overall_delta < thresholds.mild:
        return "mild_variation"
    return "significant_shift"


@dataclass(frozen=True)
class ComparedSession:
    session_id: UUID
    model_id: str
    change_score: float
    angle_scores: dict[str, float]
    angles: dict[str, np.ndarray]
    session: np.ndarray | None


def compare(
    current: ComparedSession, previous: ComparedSession, thresholds: TrendThresholds
) -> dict[str, Any]:
    """Compare two analyzed sessions of one user.

    Embedding distance is used when both sessions have embeddings from the same model;
    otherwise the mean absolute per-angle score delta, and the result says so.
    """
    by_embedding = (
        current.session is not None
        and previous.session is not None
        and current.model_id == previous.model_id
    )
    common = [a for a in current.angle_scores if a in previous.angle_scores]
    per_angle = []
    for angle in common:
        row: dict[str, Any] = {
            "angle": angle,
            "score_delta": current.angle_scores[angle] - previous.angle_scores[angle],
            "embedding_distance": None,
        }
        if by_embedding and angle in current.angles and angle in previous.angles:
            row["embedding_distance"] = cosine_distance(
                current.angles[angle], previous.angles[angle]
            )
        per_angle.append(row)
    if by_embedding:
        assert current.session is not None and previous.session is not None
        delta = cosine_distance(current.session, previous.session)
        method = "embedding"
    else:
        deltas = [abs(row["score_delta"]) for row in per_angle]
        delta = (
            float(np.mean(deltas)) if deltas else abs(current.change_score - previous.change_score)
        )
        method = "score"
    return {
        "current_session_id": str(current.session_id),
        "previous_session_id": str(previous.session_id),
        "overall_delta": delta,
        "stability_index": min(max(1.0 - delta, 0.0), 1.0),
        "overall_trend": trend(delta, thresholds),
        "comparison_method": method,
        "per_angle": per_angle,
        "thresholds": {"stable_below": thresholds.stable, "mild_variation_below": thresholds.mild},
    }
