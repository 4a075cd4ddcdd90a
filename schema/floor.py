"""The person's noise floor: how much their sessions usually vary, from their own scores.

One home for the rule that every score is read against (sessions, angles, regions,
symmetry, levels): a robust upper edge of the person's recent scores, and a score as a
multiple of it. Pure; shared by the producer and the worker.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

__all__ = ["NOISE_K", "NOISE_MIN_SCORES", "NOISE_WINDOW", "noise_floor", "relative_change"]

# The noise floor uses the person's most recent earlier scores, at most this many...
NOISE_WINDOW = 20
# ...and exists only once this many earlier sessions had a baseline of their own: the
# person's 4th session is the first measured against one (sessions 2, 3, 4 scored).
NOISE_MIN_SCORES = 3
# A robust upper edge of usual variation: median + K * 1.4826 * MAD (1.4826 * MAD
# estimates a standard deviation without letting one odd session dominate).
NOISE_K = 2.0


def noise_floor(earlier_scores: Sequence[float]) -> float | None:
    """median + 2 x 1.4826 x MAD of the most recent earlier scores; None until there are
    ``NOISE_MIN_SCORES`` of them. ``earlier_scores`` are oldest first, first sessions
    (scored 0.0 against nothing) left out by the caller."""
    recent = list(earlier_scores)[-NOISE_WINDOW:]
    if len(recent) < NOISE_MIN_SCORES:
        return None
    median = statistics.median(recent)
    mad = statistics.median(abs(s - median) for s in recent)
    return median + NOISE_K * 1.4826 * mad


def relative_change(change: float, floor: float | None) -> float | None:
    """change / noise floor: below 1 inside this person's usual variation."""
    if floor is None or floor <= 0:
        return None
    return change / floor
