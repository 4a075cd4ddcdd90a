"""Variation levels that follow the person's own noise floor.

A bare cosine distance has no scale of its own: on EfficientNet-Lite0 a re-take session
scores about 0.02 and one changed angle 0.5, on seeded random ResNet50 weights about 400
times less, and the fixed cut-offs first used here (stable below 0.10) called a session
6.6 times its person's usual variation stable. So a level is read as a multiple of a floor:

1. ``noise_floor``: the person's own floor (``evidence.noise_floor``) once they have one;
2. ``model_calibration``: before that, the model's reference floor, measured on the
   validity set (``CALIBRATED``, measured by ``python -m bench.validity.calibrate``);
3. ``fixed``: for a model with neither (ResNet50 with ImageNet weights, which cannot be
   loaded where this was calibrated), the fixed cut-offs of cosine distance
   (``CHANGEWATCH_VARIATION_LEVELS``, ``CHANGEWATCH_TREND_*``).

Every level says which basis it used. A floor is measured on change scores, each against
the mean of the person's earlier sessions; a delta against fewer sessions (the previous
one, the last five) carries more re-take noise: for independent re-take noise the
distance to a mean of k sessions grows as 1 + 1/k, so such a layer's floor is widened by
(1 + 1/k) / (1 + 1/m), m the median number of sessions behind the floor's own scores.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .evidence import VariationLevels
from .floor import NOISE_WINDOW, noise_floor

__all__ = [
    "CALIBRATED",
    "LEVEL_CUTS",
    "TREND_CUTS",
    "Basis",
    "Judged",
    "Reference",
    "Scale",
    "TrendThresholds",
    "annotate_level",
    "scale_for",
]


class Basis(StrEnum):
    NOISE_FLOOR = "noise_floor"
    MODEL_CALIBRATION = "model_calibration"
    FIXED = "fixed"


# Multiples of the floor. Below 1 is inside the person's usual variation (the floor is
# the upper edge of it: median + 2 x 1.4826 x MAD of their scores). On the validity set a
# re-take session reaches 1.46 at most and one changed angle of six puts the session at
# 2.0 (median); every changed angle alone is above 2.7 (docs/validity.md).
LEVEL_CUTS: tuple[tuple[str, float], ...] = (
    ("stable", 1.0),
    ("mild", 2.0),
    ("moderate", 3.0),
    ("higher", 5.0),
)  # else "strong"
TREND_CUTS: tuple[tuple[str, float], ...] = (("stable", 1.0), ("mild_variation", 3.0))
# else "significant_shift"


@dataclass(frozen=True)
class TrendThresholds:
    """Fixed cut-offs of overall_delta, for the ``fixed`` basis only: below ``stable``
    stable, below ``mild`` mild_variation, else significant_shift."""

    stable: float = 0.10
    mild: float = 0.25

    def __post_init__(self) -> None:
        if not 0.0 <= self.stable <= self.mild:
            raise ValueError(
                f"trend thresholds need 0 <= stable <= mild, got {self.stable}, {self.mild}"
            )


@dataclass(frozen=True)
class Reference:
    """A model's session noise floor on the validity set, before a person has their own:
    the median over histories of eight re-take sessions, and the median number of earlier
    sessions behind the scores it came from."""

    floor: float
    baseline_sessions: float
    measured: str


# python -m bench.validity.calibrate --seeds 20 (docs/levels.md): the median over 20
# histories (Lite0's ranged 0.0191-0.0351). A model id names its weights and
# preprocessing, so a new model or preprocessing is uncalibrated until it is measured.
CALIBRATED: dict[str, Reference] = {
    "efficientnet_lite0/imagenet-579344248a93/prep1": Reference(
        floor=0.0261, baseline_sessions=4.0, measured="2026-12-07, 20 histories"
    ),
    "resnet50/random-seed0/prep1": Reference(
        floor=2.82e-05, baseline_sessions=4.0, measured="2026-12-07, 20 histories"
    ),
}


@dataclass(frozen=True)
class Judged:
    """One delta read against a scale: its level, the multiple of its floor, the floor
    used (widened for the layer) and the cut-offs in cosine distance."""

    level: str
    relative: float | None
    floor: float | None
    cuts: dict[str, float]


def _word(value: float, cuts: Sequence[tuple[str, float]], above: str) -> str:
    return next((name for name, cut in cuts if value < cut), above)


@dataclass(frozen=True)
class Scale:
    """What deltas of one person's session are measured against."""

    basis: Basis
    floor: float | None  # the session-score floor; None with the fixed basis
    baseline_sessions: float = 1.0
    fixed: VariationLevels = field(default_factory=VariationLevels)
    fixed_trend: TrendThresholds = field(default_factory=TrendThresholds)

    def floor_for(self, sessions: int | None) -> float | None:
        """The floor of a delta against the mean of ``sessions`` sessions (None: the
        floor itself, as for a change score)."""
        if self.floor is None or not sessions:
            return self.floor
        widen = (1.0 + 1.0 / sessions) / (1.0 + 1.0 / max(self.baseline_sessions, 1.0))
        return self.floor * max(1.0, widen)

    def judge(self, delta: float, sessions: int | None = None) -> Judged:
        floor = self.floor_for(sessions)
        if floor is None or floor <= 0:
            return Judged(self.fixed.level(delta), None, None, self.fixed.as_json())
        cuts = {f"{name}_below": cut * floor for name, cut in LEVEL_CUTS}
        relative = delta / floor
        return Judged(_word(relative, LEVEL_CUTS, "strong"), relative, floor, cuts)

    def trend(self, delta: float, sessions: int | None = None) -> Judged:
        floor = self.floor_for(sessions)
        if floor is None or floor <= 0:
            fixed = (("stable", self.fixed_trend.stable), ("mild_variation", self.fixed_trend.mild))
            cuts = {f"{name}_below": cut for name, cut in fixed}
            return Judged(_word(delta, fixed, "significant_shift"), None, None, cuts)
        cuts = {f"{name}_below": cut * floor for name, cut in TREND_CUTS}
        relative = delta / floor
        return Judged(_word(relative, TREND_CUTS, "significant_shift"), relative, floor, cuts)

    def as_json(self) -> dict[str, Any]:
        relative = self.basis != Basis.FIXED
        return {
            "basis": str(self.basis),
            "noise_floor": self.floor,
            "floor_baseline_sessions": self.baseline_sessions if relative else None,
            "unit": "x noise floor" if relative else "cosine distance",
            "levels": (
                {f"{n}_below": c for n, c in LEVEL_CUTS} if relative else self.fixed.as_json()
            ),
            "trend": (
                {f"{n}_below": c for n, c in TREND_CUTS}
                if relative
                else {
                    "stable_below": self.fixed_trend.stable,
                    "mild_variation_below": self.fixed_trend.mild,
                }
            ),
        }


def scale_for(
    model_id: str,
    earlier: Sequence[Mapping[str, Any]],
    fixed: VariationLevels | None = None,
    fixed_trend: TrendThresholds | None = None,
) -> Scale:
    """The scale of a session with these earlier analyses (oldest first, each with
    ``change_score``, ``is_first_session`` and ``baseline_session_count``)."""
    defaults: dict[str, Any] = {
        "fixed": fixed or VariationLevels(),
        "fixed_trend": fixed_trend or TrendThresholds(),
    }
    scored = [e for e in earlier if not e["is_first_session"]][-NOISE_WINDOW:]
    floor = noise_floor([float(e["change_score"]) for e in scored])
    if floor is not None and floor > 0:
        behind = statistics.median(int(e["baseline_session_count"]) for e in scored)
        return Scale(Basis.NOISE_FLOOR, floor, float(behind), **defaults)
    reference = CALIBRATED.get(model_id)
    if reference is not None:
        return Scale(
            Basis.MODEL_CALIBRATION, reference.floor, reference.baseline_sessions, **defaults
        )
    return Scale(Basis.FIXED, None, **defaults)


def annotate_level(
    result: dict[str, Any],
    earlier: Sequence[Mapping[str, Any]],
    fixed: VariationLevels | None = None,
) -> dict[str, Any]:
    """The session's own level: its change score against its scale (none for a first
    session, which is measured against nothing)."""
    if result["is_first_session"]:
        result["variation_level"] = None
        result["level_basis"] = None
        return result
    scale = scale_for(result["model_id"], earlier, fixed)
    judged = scale.judge(float(result["change_score"]), int(result["baseline_session_count"]))
    result["variation_level"] = judged.level
    result["level_basis"] = str(scale.basis)
    return result
