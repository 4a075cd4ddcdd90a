"""Baselines and change scores: pure functions over embeddings (comparisons: compare.py).

A session's baseline is built from the same person's sessions captured strictly earlier
(same model): per angle, the mean of that angle's earlier embeddings; for the session,
the mean of the baselines of the angles it has, compared with the mean of those same
angles' embeddings, so a session of three angles is compared like with like. change =
cosine distance to the baseline.

Baselines come from running sums in exact int64 fixed point (``to_fixed``): integer
addition is associative, so sums kept incrementally in any order, with sessions added,
removed and re-added, equal the sums of the history as it stands, bit for bit.

Regions (worker/regions.py) follow the same rules per angle: nine region vectors, each
scored against its own running sum and count (sessions stored before regions have none).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import numpy as np

from ..schema.regions import REGIONS

# 2^28: |embedding| up to ~2^34 / sessions fits int64; resolution 3.7e-9, far below
# float32's own precision for typical activations (0.01-10).
FIXED_SCALE = float(2**28)
_MAX_ABS = 2.0**20


def cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    """1 - cosine similarity in float64, clamped to [0, 2]; 0.0 when either is all zeros."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    norms = float(np.linalg.norm(a64) * np.linalg.norm(b64))
    if norms == 0.0:
        return 0.0
    return float(min(max(1.0 - float(a64 @ b64) / norms, 0.0), 2.0))


def to_fixed(vector: np.ndarray) -> np.ndarray:
    """An embedding as int64 fixed point: the unit that running sums add exactly.

    float32 (every stored vector) is scaled and rounded in float32: times 2^28 is exact
    there (|v| <= 2^20), and so is rounding it, so the integers are those of float64 at a
    quarter of the work (a write converts its sums' tail of sessions)."""
    values = np.asarray(vector)
    if values.dtype != np.float32:
        values = values.astype(np.float64)
    if not np.all(np.isfinite(values)) or float(np.max(np.abs(values), initial=0.0)) > _MAX_ABS:
        raise ValueError("embedding has non-finite or out-of-range values")
    return np.rint(values * values.dtype.type(FIXED_SCALE)).astype(np.int64)


@dataclass
class Totals:
    """Running sums of one person's analyzed sessions under one model.

    ``sessions`` counts sessions; ``angles`` maps angle -> (sessions with it, int64 sum);
    ``regions`` maps angle -> (sessions with its regions, int64 (9, REGION_DIM) sum).
    """

    sessions: int = 0
    angles: dict[str, tuple[int, np.ndarray]] = field(default_factory=dict)
    regions: dict[str, tuple[int, np.ndarray]] = field(default_factory=dict)

    def copy(self) -> Totals:
        return Totals(
            self.sessions,
            {a: (n, s.copy()) for a, (n, s) in self.angles.items()},
            {a: (n, s.copy()) for a, (n, s) in self.regions.items()},
        )

    def add(
        self,
        angles: dict[str, np.ndarray],
        sign: int = 1,
        regions: dict[str, np.ndarray] | None = None,
    ) -> None:
        """Add (sign=1) or remove (sign=-1) one session's embeddings and region vectors."""
        self.sessions += sign
        for angle, vector in angles.items():
            count, total = self.angles.get(angle, (0, np.zeros(vector.shape[0], np.int64)))
            self.angles[angle] = (count + sign, total + sign * to_fixed(vector))
        for angle, grid in (regions or {}).items():
            count, total = self.regions.get(angle, (0, np.zeros(grid.shape, np.int64)))
            self.regions[angle] = (count + sign, total + sign * to_fixed(grid))

    def mean(self, angle: str) -> np.ndarray | None:
        return _mean(self.angles.get(angle))

    def region_mean(self, angle: str) -> np.ndarray | None:
        """(9, REGION_DIM) baseline of the angle's regions; None when none is stored."""
        return _mean(self.regions.get(angle))


def _mean(entry: tuple[int, np.ndarray] | None) -> np.ndarray | None:
    return None if not entry or not entry[0] else entry[1] / (FIXED_SCALE * entry[0])


@dataclass(frozen=True)
class StoredSession:
    """One analyzed session's embeddings, as read back for baseline computation."""

    session_id: UUID
    captured_at: datetime
    angles: dict[str, np.ndarray]
    # The mean of the angles; kept for callers that have it, never needed for scoring.
    session: np.ndarray | None = None
    # angle -> (9, REGION_DIM) region vectors; empty for sessions stored before regions.
    regions: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class Analysis:
    session_id: UUID
    change_score: float
    is_first_session: bool
    baseline_session_count: int
    per_angle: list[dict[str, Any]]


def session_embedding(angles: dict[str, np.ndarray]) -> np.ndarray:
    return np.mean(np.stack(list(angles.values())), axis=0).astype(np.float32)


def like_with_like(angles: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> float | None:
    """Distance between the mean of a session's angles and the mean of the reference
    vectors of those same angles (a baseline, a window's means, another session): only
    the angles both have count. None when they share none."""
    shared = [a for a in angles if a in reference]
    if not shared:
        return None
    return cosine_distance(
        np.mean([angles[a].astype(np.float64) for a in shared], axis=0),
        np.mean([reference[a].astype(np.float64) for a in shared], axis=0),
    )


def region_scores(grid: np.ndarray | None, base: np.ndarray | None) -> list[dict[str, Any]]:
    """Each region's cosine distance to its baseline, row-major; [] without a baseline."""
    if grid is None or base is None:
        return []
    return [
        {"region": name, "change_score": cosine_distance(grid[i], base[i])}
        for i, name in enumerate(REGIONS)
    ]


def score_against(
    session_id: UUID,
    angles: dict[str, np.ndarray],
    baseline: Totals,
    regions: dict[str, np.ndarray] | None = None,
) -> Analysis:
    """One session against the sums of its strictly earlier sessions.

    An angle with no earlier photo scores 0.0 with no baseline; the session score uses
    only the angles that have one (0.0 when none has). Each angle's ``regions`` lists its
    nine region scores when both the session and an earlier one have region vectors.
    """
    per_angle = []
    bases: dict[str, np.ndarray] = {}
    for angle, embedding in angles.items():
        base = baseline.mean(angle)
        count = baseline.angles.get(angle, (0, None))[0]
        score = 0.0
        if base is not None:
            score = cosine_distance(embedding, base)
            bases[angle] = base
        row: dict[str, Any] = {
            "angle": angle,
            "change_score": score,
            "baseline_session_count": count,
        }
        scored = region_scores((regions or {}).get(angle), baseline.region_mean(angle))
        if scored:  # absent, as in rows stored before regions, until a region baseline
            row["regions"] = scored
        per_angle.append(row)
    change = like_with_like(angles, bases)
    return Analysis(
        session_id=session_id,
        change_score=0.0 if change is None else change,
        is_first_session=baseline.sessions == 0,
        baseline_session_count=baseline.sessions,
        per_angle=per_angle,
    )


def _by_capture_time(sessions: Iterable[StoredSession]) -> list[list[StoredSession]]:
    """Groups of equal capture time, in capture order (ties: not each other's baseline)."""
    groups: list[list[StoredSession]] = []
    for item in sorted(sessions, key=lambda s: (s.captured_at, str(s.session_id))):
        if groups and groups[-1][0].captured_at == item.captured_at:
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups


def rescore_suffix(totals: Totals, suffix: Sequence[StoredSession]) -> list[Analysis]:
    """Analyses of ``suffix``: every session captured at or after some time T.

    ``totals`` are the sums over the whole history, suffix included. Walking back from the
    latest capture time, removing each group leaves exactly its baseline, so only the
    suffix is read, never the sessions before T: an appended session reads nothing.
    """
    running = totals.copy()
    results: list[Analysis] = []
    for group in reversed(_by_capture_time(suffix)):
        for item in group:
            running.add(item.angles, sign=-1, regions=item.regions)
        results.extend(
            score_against(item.session_id, item.angles, running, item.regions) for item in group
        )
    return results


@dataclass(frozen=True)
class Scored:
    """A stored session as a write reads it: its embeddings and its stored numbers."""

    session: StoredSession
    stored: tuple[Any, ...]  # (change_score, is_first_session, baseline_session_count, per_angle)


@dataclass(frozen=True)
class History:
    """What one write reads of a person's history under their lock: the sums over every
    session, and the sessions at or after the earliest capture time the write touches."""

    totals: Totals
    suffix: dict[UUID, Scored]


@dataclass(frozen=True)
class Rescore:
    """What a write stores: the session's analysis, the later sessions whose numbers it
    changes, and the person's sums after it."""

    analysis: Analysis
    changed: list[Analysis]
    totals: Totals
    angles: list[str]  # the angles whose sums changed
    replaces: bool  # the session had embeddings under this model, now replaced
    session: StoredSession | None = None  # what the write stores (regions included)


def stored_values(analysis: Analysis) -> tuple[Any, ...]:
    return (
        analysis.change_score,
        analysis.is_first_session,
        analysis.baseline_session_count,
        analysis.per_angle,
    )


def rescore(history: History, session: StoredSession) -> Rescore:
    """Put ``session`` (new embeddings) into the history: its analysis and the later
    sessions' new numbers, reading nothing before the earliest capture time it touches."""
    totals = history.totals.copy()
    suffix = dict(history.suffix)
    old = suffix.pop(session.session_id, None)
    if old is not None:
        totals.add(old.session.angles, sign=-1, regions=old.session.regions)
    totals.add(session.angles, regions=session.regions)
    analyses = rescore_suffix(totals, [*(item.session for item in suffix.values()), session])
    mine = next(a for a in analyses if a.session_id == session.session_id)
    changed = [
        a
        for a in analyses
        if a.session_id != session.session_id and stored_values(a) != suffix[a.session_id].stored
    ]
    angles = sorted(set(session.angles) | set(old.session.angles if old else ()))
    return Rescore(mine, changed, totals, angles, old is not None, session)


@dataclass(frozen=True)
class Removal:
    """What deleting a session stores: the later sessions whose numbers change, and the
    person's sums without it."""

    changed: list[Analysis]
    totals: Totals
    angles: list[str]  # the angles whose sums changed


def remove(history: History, session_id: UUID) -> Removal:
    """Take ``session_id`` out of the history as if it had never been analyzed: its
    embeddings leave the sums (exact, so the sums are those of the history without it)
    and the sessions after it are rescored by ``rescore_suffix``, as a write does."""
    totals = history.totals.copy()
    suffix = dict(history.suffix)
    gone = suffix.pop(session_id)
    totals.add(gone.session.angles, sign=-1, regions=gone.session.regions)
    analyses = rescore_suffix(totals, [item.session for item in suffix.values()])
    changed = [a for a in analyses if stored_values(a) != suffix[a.session_id].stored]
    return Removal(changed, totals, sorted(gone.session.angles))


def analyze_history(history: Sequence[StoredSession]) -> list[Analysis]:
    """Analyses for every session of one user's history (one model), in capture order."""
    totals = Totals()
    for item in history:
        totals.add(item.angles, regions=item.regions)
    by_id = {a.session_id: a for a in rescore_suffix(totals, history)}
    return [by_id[item.session_id] for group in _by_capture_time(history) for item in group]
