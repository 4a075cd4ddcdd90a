"""Comparisons of two sessions, and a session's layers: pure functions over embeddings.

A comparison reads two analyzed sessions of one person like with like (the angles both
have), by embedding when both come from one model, else by their change scores. The
layers read the current session against its previous session, the last few, the last
month and all earlier ones (its change score), each level against the person's scale
for a window of that many sessions (schema/levels.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import numpy as np

from ..schema.levels import Scale
from .score import StoredSession, cosine_distance, like_with_like


@dataclass(frozen=True)
class ComparedSession:
    session_id: UUID
    model_id: str
    change_score: float
    angle_scores: dict[str, float]
    angles: dict[str, np.ndarray]
    session: np.ndarray | None
    # The analysis revision read: a stored comparison is current while both still match.
    revision: int = 0
    captured_at: datetime | None = None
    baseline_session_count: int = 0


def window_delta(angles: dict[str, np.ndarray], window: Sequence[StoredSession]) -> float | None:
    """Distance of a session to the mean of a window of earlier sessions, like with like:
    per angle the window's mean, over the angles both have; None when none is shared."""
    means = {}
    for angle in angles:
        found = [s.angles[angle].astype(np.float64) for s in window if angle in s.angles]
        if found:
            means[angle] = np.mean(found, axis=0)
    return like_with_like(angles, means)


def layers(
    current: ComparedSession,
    windows: Sequence[tuple[StoredSession, int]],
    scale: Scale,
    rolling: int = 5,
    days: int = 30,
) -> dict[str, dict[str, Any]]:
    """The current session against its previous session, the mean of the last ``rolling``,
    the ``days`` before it, and all earlier sessions (its own change score), each level
    read against the person's scale for a window of that many sessions."""

    def layer(delta: float | None, sessions: int) -> dict[str, Any]:
        available = delta is not None and sessions > 0
        judged = scale.judge(delta, sessions) if delta is not None and available else None
        return {
            "delta": delta if available else None,
            "variation_level": judged.level if judged else None,
            "relative": judged.relative if judged else None,
            "level_basis": str(scale.basis) if judged else None,
            "sessions": sessions,
            "available": available,
        }

    at = current.captured_at
    previous = [s for s, rank in windows if rank == 1]
    recent = [s for s, rank in windows if rank <= rolling]
    month = [s for s, _ in windows if at is not None and s.captured_at >= at - timedelta(days=days)]
    earlier = current.baseline_session_count
    return {
        "immediate": layer(window_delta(current.angles, previous), len(previous)),
        "rolling": layer(window_delta(current.angles, recent), len(recent)),
        "monthly": layer(window_delta(current.angles, month), len(month)),
        "lifetime": layer(current.change_score if earlier else None, earlier),
    }


def compare(current: ComparedSession, previous: ComparedSession, scale: Scale) -> dict[str, Any]:
    """Compare two analyzed sessions of one user, like with like.

    overall_delta is the distance between the two sessions' mean embeddings over the
    angles both have, when both come from the same model; otherwise the mean absolute
    per-angle score delta, and the result says so. overall_trend reads it against the
    person's scale: a distance between two single sessions has the noise of a window of
    one session; a difference of two change scores, that of a change score.
    """
    common = [a for a in current.angle_scores if a in previous.angle_scores]
    embedded = like_with_like(current.angles, previous.angles)
    by_embedding = (
        current.session is not None
        and previous.session is not None
        and current.model_id == previous.model_id
        and embedded is not None
    )
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
    if by_embedding and embedded is not None:
        delta = embedded
        method = "embedding"
    else:
        deltas = [abs(row["score_delta"]) for row in per_angle]
        delta = (
            float(np.mean(deltas)) if deltas else abs(current.change_score - previous.change_score)
        )
        method = "score"
    judged = scale.trend(delta, 1 if method == "embedding" else None)
    return {
        "current_session_id": str(current.session_id),
        "previous_session_id": str(previous.session_id),
        "overall_delta": delta,
        "stability_index": min(max(1.0 - delta, 0.0), 1.0),
        "overall_trend": judged.level,
        "relative_delta": judged.relative,
        "level_basis": str(scale.basis),
        "comparison_method": method,
        "per_angle": per_angle,
        "thresholds": judged.cuts,
    }
