"""Whether a person's scores keep moving one way: a robust slope over their last sessions,
with an interval, and the range their history expects for the next session.

Theil-Sen: the slope is the median of the slopes between every pair of sessions, so one
odd session (a blurred photo, another camera) moves it little; its 95% interval is the
usual rank-based one (Sen 1968, as ``scipy.stats.theilslopes`` computes it; scipy is not
a dependency, so the few lines are here). Time is counted in days / 30, so slopes read
"per 30 days". Directions are words for the interval only: ``rising`` when it lies wholly
above 0, ``falling`` wholly below, else ``steady``. They never say what a direction means.

The score a trend reads is scaled by n / (n + 1), n the sessions its baseline holds. A
re-take's cosine distance to the mean of n earlier re-takes is, for small differences,
proportional to 1 + 1/n: a young history's scores shrink as sessions are added with nothing
changing. Measured on the validity re-takes (EfficientNet-Lite0, 9 seeds of 10 sessions),
unscaled scores read "falling" in 1 of 9 session trends and 5 of 54 angle trends; scaled,
no session trend and 2 of 54 angle trends read other than "steady". The slope, its
interval and the direction are of scaled scores; the expected range is of the scores as
they are, like the noise floor it is drawn from.

A direction needs ``MIN_SESSIONS`` (5) scored sessions: with fewer, even sessions in a
perfectly monotone order are not a 95% trend (4 points fall in order by chance 1 time in
12), and the rank interval spans every slope.

The expected range for a session at time t comes from the floor and the slope. While the
trend is steady (or unknown) it is 0 up to the median score plus the spread term of the
person's noise floor (2 x 1.4826 x MAD of their last scores, as ``evidence.noise_floor``):
with the same scores, exactly the floor; less change than usual is never unexpected. A
rising or falling history expects the Theil-Sen line of its scores, extended to t, +- that
spread.
Pure functions over numbers already stored, shared by producer and worker.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from datetime import datetime
from typing import Any

__all__ = [
    "DEFAULT_SESSIONS",
    "MIN_SESSIONS",
    "annotate",
    "direction",
    "expected_range",
    "scaled",
    "theil_sen",
    "to_months",
]

# The scored sessions a trend is drawn over (settings.trend_sessions overrides it)...
DEFAULT_SESSIONS = 8
# ...the fewest for a direction (see above)...
MIN_SESSIONS = 5
# ...and for an expected range: as many as a noise floor needs (evidence.NOISE_MIN_SCORES).
EXPECTED_MIN = 3
DAYS_PER_STEP = 30.0
# The normal quantile of a two-sided 95% interval (scipy.stats.norm.ppf(0.975)).
Z95 = 1.959963984540054
INTERVAL_LEVEL = 0.95
SPREAD_K = 2.0 * 1.4826  # as evidence.NOISE_K x 1.4826: the floor's own spread term


def to_months(when: datetime | str) -> float:
    """A capture time as a number of 30-day steps since the epoch."""
    moment = datetime.fromisoformat(when) if isinstance(when, str) else when
    return moment.timestamp() / 86400.0 / DAYS_PER_STEP


def _ties(values: Sequence[float]) -> list[int]:
    counts: dict[float, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return [k for k in counts.values() if k > 1]


def theil_sen(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, float] | None:
    """(slope, low, high): the median pairwise slope and its 95% interval; None with fewer
    than two distinct times. Ties in x or y shrink the rank variance, as in scipy."""
    slopes = sorted(
        (y[j] - y[i]) / (x[j] - x[i])
        for i in range(len(x))
        for j in range(i + 1, len(x))
        if x[j] != x[i]
    )
    if not slopes:
        return None
    n, count = len(y), len(slopes)

    def tie_term(k: int) -> int:
        return k * (k - 1) * (2 * k + 5)

    variance = (
        n * (n - 1) * (2 * n + 5)
        - sum(tie_term(k) for k in _ties(x))
        - sum(tie_term(k) for k in _ties(y))
    ) / 18.0
    spread = Z95 * math.sqrt(max(variance, 0.0))
    low = max(round((count - spread) / 2.0) - 1, 0)
    high = min(round((count + spread) / 2.0), count - 1)
    return statistics.median(slopes), slopes[low], slopes[high]


def direction(low: float, high: float) -> str:
    """Neutral words for an interval of slopes: where it lies against 0."""
    if low > 0:
        return "rising"
    if high < 0:
        return "falling"
    return "steady"


def line_trend(points: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """The trend of (time in 30-day steps, score) points, oldest first."""
    fit = theil_sen([p[0] for p in points], [p[1] for p in points])
    if len(points) < MIN_SESSIONS or fit is None:
        return {"sessions": len(points), "direction": None, "slope_per_30_days": None,
                "slope_interval": None}  # fmt: skip
    slope, low, high = fit
    return {
        "sessions": len(points),
        "direction": direction(low, high),
        "slope_per_30_days": slope,
        "slope_interval": [low, high],
    }


def spread(scores: Sequence[float]) -> float:
    """The noise floor's spread term over the same scores: 2 x 1.4826 x MAD."""
    median = statistics.median(scores)
    return SPREAD_K * statistics.median(abs(s - median) for s in scores)


def scaled(score: float, baseline_sessions: int) -> float:
    """A score without the part that comes from its baseline's size: x n / (n + 1)."""
    n = baseline_sessions
    return score * n / (n + 1) if n > 0 else score


def expected_range(
    points: Sequence[tuple[float, float]],
    floor_scores: Sequence[float],
    at: float,
    moving: bool,
) -> dict[str, float] | None:
    """Where a score at time ``at`` is expected from earlier (time, score) points (the trend
    window) and the earlier scores the floor is drawn from: [low, high], or None until
    there are ``EXPECTED_MIN`` of each. ``moving``: the trend is rising or falling."""
    if len(points) < EXPECTED_MIN or len(floor_scores) < EXPECTED_MIN:
        return None
    x, y = [p[0] - at for p in points], [p[1] for p in points]  # time counted from ``at``
    fit = theil_sen(x, y) if moving else None
    b = fit[0] if fit else 0.0
    # The line's value at ``at`` is its intercept, as time is counted from there.
    level = statistics.median(yi - b * xi for xi, yi in zip(x, y, strict=True))
    width = spread(floor_scores)
    low = max(0.0, level - width) if fit else 0.0
    return {"low": low, "high": level + width}


def _points(
    rows: Sequence[dict[str, Any]], angle: str | None, scale: bool = True
) -> list[tuple[float, float]]:
    """(time, score) of the session, or of one angle where it had a baseline; scores
    scaled by n / (n + 1) unless ``scale`` is False."""
    out = []
    for row in rows:
        at = to_months(row["captured_at"])
        if angle is None:
            n = row["baseline_session_count"] if scale else 0
            out.append((at, scaled(row["change_score"], n)))
            continue
        for p in row["per_angle"]:
            if p["angle"] == angle and p["baseline_session_count"] > 0:
                n = p["baseline_session_count"] if scale else 0
                out.append((at, scaled(p["change_score"], n)))
    return out


def _moving(points: Sequence[tuple[float, float]]) -> bool:
    return line_trend(points)["direction"] in ("rising", "falling")


def annotate(
    result: dict[str, Any], scored: Sequence[dict[str, Any]], window: int, floor_window: int
) -> dict[str, Any]:
    """Add ``trend`` and ``within_expected`` to a result.

    ``scored``: the person's earlier scored analyses (not first sessions), oldest first, each
    with ``captured_at``, ``change_score`` and ``per_angle``. The trend is drawn over the
    last ``window`` scored sessions up to this one; ``expected`` is the range the earlier
    ones gave this session, ``expected_next`` the range this history gives the next one (at
    the median gap between the window's sessions)."""
    before = list(scored)[-window:]
    floor_before = [r["change_score"] for r in list(scored)[-floor_window:]]
    now = list(scored) + ([] if result["is_first_session"] else [result])
    recent = now[-window:]
    out = line_trend(_points(recent, None))
    out["window"] = window
    out["interval_level"] = INTERVAL_LEVEL
    out["per_angle"] = [
        {"angle": row["angle"], **line_trend(_points(recent, row["angle"]))}
        for row in result["per_angle"]
    ]
    expected = None
    if not result["is_first_session"]:
        at = to_months(result["captured_at"])
        moving = _moving(_points(before, None))
        expected = expected_range(_points(before, None, scale=False), floor_before, at, moving)
    out["expected"] = expected
    out["expected_next"] = _next(
        recent, [r["change_score"] for r in now[-floor_window:]], out["direction"]
    )
    result["trend"] = out
    result["within_expected"] = (
        None if expected is None else expected["low"] <= result["change_score"] <= expected["high"]
    )
    return result


def _next(
    recent: Sequence[dict[str, Any]], floor_scores: Sequence[float], direction: str | None
) -> dict[str, Any] | None:
    """The range the next session is expected in, one median gap after the last session."""
    times = [to_months(r["captured_at"]) for r in recent]
    gaps = [b - a for a, b in itertools.pairwise(times) if b > a]
    if not gaps:
        return None
    gap = statistics.median(gaps)
    moving = direction in ("rising", "falling")
    found = expected_range(
        _points(recent, None, scale=False), floor_scores, times[-1] + gap, moving
    )
    if found is None:
        return None
    return {**found, "after_days": gap * DAYS_PER_STEP}
