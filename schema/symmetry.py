"""Left/right symmetry: how far apart a session's left and right photos are, and how
that distance moves against the person's own history.

Why: a change on one side moves the left and right embeddings apart (or together) while
each angle's own score may stay modest; the distance between the two sides, read against
its usual spread for this person, shows that. It is computed when a result is read, from
the stored embeddings of the session and at most ``NOISE_WINDOW`` earlier sessions (the
same model), as the noise floor is: a bounded read, whatever the history's length.

- ``distance``: cosine distance between the session's left and right embeddings;
- ``baseline``: the mean distance of the earlier sessions in the window;
- ``change``: |distance - baseline|;
- ``noise_floor``: ``evidence.noise_floor`` of the earlier sessions' own changes (each
  against the mean of the window's sessions before it); ``relative_change`` = change /
  floor, below 1 inside the person's usual variation.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .floor import noise_floor, relative_change

__all__ = ["SIDES", "distance", "symmetry"]

SIDES = ("left", "right")


def distance(angles: Mapping[str, np.ndarray]) -> float | None:
    """Cosine distance between the left and right embeddings; None without both."""
    if not all(side in angles for side in SIDES):
        return None
    a, b = (np.asarray(angles[side], dtype=np.float64) for side in SIDES)
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norms == 0.0:
        return 0.0
    return float(min(max(1.0 - float(a @ b) / norms, 0.0), 2.0))


def symmetry(current: float | None, earlier: Sequence[float]) -> dict[str, Any] | None:
    """The session's symmetry against the earlier sessions' distances (oldest first,
    sessions without both sides left out by the caller); None without both sides."""
    if current is None:
        return None
    baseline = statistics.fmean(earlier) if earlier else None
    change = abs(current - baseline) if baseline is not None else None
    moves = [abs(d - statistics.fmean(earlier[:i])) for i, d in enumerate(earlier) if i > 0]
    floor = noise_floor(moves)
    return {
        "distance": current,
        "baseline": baseline,
        "change": change,
        "noise_floor": floor,
        "relative_change": relative_change(change, floor) if change is not None else None,
        "earlier_sessions": len(earlier),
    }
