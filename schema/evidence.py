"""The evidence that makes a change score readable: the person's own noise floor, how
far outside it a score is, a confidence with its reasons, and variation levels.

A generic image model's distance mixes real change with re-take noise (pose, light, a
re-encode), so a bare 0.07 means nothing until it is set beside how much this person's
sessions usually vary. Pure functions over numbers already stored, shared by the
producer (results, history) and the worker (task results); they never name a cause.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import regions, trend
from .floor import NOISE_K, NOISE_MIN_SCORES, NOISE_WINDOW, noise_floor, relative_change

__all__ = [
    "NOISE_K",
    "NOISE_MIN_SCORES",
    "NOISE_WINDOW",
    "VariationLevels",
    "annotate",
    "confidence",
    "noise_floor",
    "relative_change",
]


@dataclass(frozen=True)
class VariationLevels:
    """Cut-offs of a delta: below ``stable`` stable, below ``mild`` mild, ..., else strong."""

    stable: float = 0.10
    mild: float = 0.25
    moderate: float = 0.45
    higher: float = 0.70

    def __post_init__(self) -> None:
        cuts = [self.stable, self.mild, self.moderate, self.higher]
        if cuts != sorted(cuts) or cuts[0] < 0:
            raise ValueError(f"variation levels must rise from 0, got {cuts}")

    def level(self, delta: float) -> str:
        for name, cut in (
            ("stable", self.stable),
            ("mild", self.mild),
            ("moderate", self.moderate),
            ("higher", self.higher),
        ):
            if delta < cut:
                return name
        return "strong"

    def as_json(self) -> dict[str, float]:
        return {
            "stable_below": self.stable,
            "mild_below": self.mild,
            "moderate_below": self.moderate,
            "higher_below": self.higher,
        }


# Sessions of history for full confidence, and the angles a full session has.
FULL_HISTORY = 5
FULL_ANGLES = 6


def confidence(
    *,
    quality: Mapping[str, float],
    angle_scores: Mapping[str, float],
    earlier_sessions: int,
    equipment_changed: bool,
) -> dict[str, Any]:
    """How much weight the session's score can bear, 0..1, with the reasons it is lower.

    score = quality x coverage x history x agreement x equipment, where
    - quality   = the lowest photo quality score of the session's angles;
    - coverage  = 0.5 + 0.5 x angles / 6;
    - history   = 0.4 + 0.6 x min(1, earlier sessions / 5);
    - agreement = 0.5 + 0.5 / (1 + cv), cv = spread / mean of the angle scores (1 when
      the angles agree, towards 0.5 as one angle carries the whole change);
    - equipment = 0.7 when a photo came from another device than recent sessions, else 1.
    Levels: high >= 0.75, moderate >= 0.5, low below.
    """
    reasons: list[str] = []
    q = min(quality.values(), default=1.0)
    if q < 0.8:
        weak = sorted(a for a, v in quality.items() if v < 0.8)
        reasons.append(f"lower photo quality: {', '.join(weak)}")
    angles = len(angle_scores) or len(quality)
    coverage = 0.5 + 0.5 * min(angles, FULL_ANGLES) / FULL_ANGLES
    if angles < FULL_ANGLES:
        reasons.append(f"{angles} of {FULL_ANGLES} angles")
    history = 0.4 + 0.6 * min(1.0, earlier_sessions / FULL_HISTORY)
    if earlier_sessions < FULL_HISTORY:
        reasons.append(
            f"{earlier_sessions} earlier session{'s' if earlier_sessions != 1 else ''}"
            f" ({FULL_HISTORY} give full confidence)"
        )
    values = list(angle_scores.values())
    mean = statistics.fmean(values) if values else 0.0
    cv = statistics.pstdev(values) / mean if len(values) > 1 and mean > 1e-9 else 0.0
    agreement = 0.5 + 0.5 / (1.0 + cv)
    if cv > 1.0:
        reasons.append("the angles differ from each other")
    equipment = 0.7 if equipment_changed else 1.0
    if equipment_changed:
        reasons.append("another camera than in recent sessions")
    score = max(0.0, min(1.0, q * coverage * history * agreement * equipment))
    level = "high" if score >= 0.75 else "moderate" if score >= 0.5 else "low"
    return {"score": round(score, 4), "level": level, "reasons": reasons}


def annotate(
    result: dict[str, Any],
    *,
    earlier: Sequence[Mapping[str, Any]],
    photos: Mapping[str, Mapping[str, Any]] | None,
    equipment: Mapping[str, Any],
    trend_sessions: int = trend.DEFAULT_SESSIONS,
) -> dict[str, Any]:
    """Add the evidence fields to an analysis result.

    ``earlier``: the person's earlier analyses (same model), oldest first, each with
    ``captured_at``, ``change_score``, ``is_first_session``, ``baseline_session_count``
    and ``per_angle`` (at least
    ``max(NOISE_WINDOW, trend_sessions)`` of them when there are); ``photos``: the
    session's per-angle ``quality``; ``equipment``: the device comparison of the session;
    ``trend_sessions``: the scored sessions a trend is drawn over (schema.trend).
    """
    scored = [e for e in earlier if not e["is_first_session"]]
    floor = noise_floor([e["change_score"] for e in scored])
    result["noise_floor"] = floor
    result["relative_change"] = relative_change(result["change_score"], floor)
    result["noise_floor_sessions"] = {
        "scored_earlier": len(scored),
        "needed": NOISE_MIN_SCORES,
        "window": NOISE_WINDOW,
    }
    quality: dict[str, float] = {}
    low: list[str] = []
    for row in result["per_angle"]:
        angle = row["angle"]
        history = [
            p["change_score"]
            for e in scored
            for p in e["per_angle"]
            if p["angle"] == angle and p["baseline_session_count"] > 0
        ]
        angle_floor = noise_floor(history)
        row["noise_floor"] = angle_floor
        row["relative_change"] = relative_change(row["change_score"], angle_floor)
        judged = (photos or {}).get(angle, {}).get("quality")
        row["quality"] = judged
        if judged is not None:
            quality[angle] = float(judged["score"])
            if judged["flags"]:
                low.append(angle)
    result["low_quality_angles"] = low
    regions.annotate_regions(result, scored)
    result["equipment"] = dict(equipment)
    result["confidence"] = confidence(
        quality=quality,
        angle_scores={
            r["angle"]: r["change_score"]
            for r in result["per_angle"]
            if r["baseline_session_count"]
        },
        earlier_sessions=result["baseline_session_count"],
        equipment_changed=bool(equipment.get("changed")),
    )
    return trend.annotate(result, scored, trend_sessions, NOISE_WINDOW)
