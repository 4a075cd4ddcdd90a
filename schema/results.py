"""Reading analyses back as the public result objects: one session's, or a person's history.

Everything that depends on the person's history (noise floor, equipment change,
confidence) is computed here, when read, from bounded reads of the current rows (the
last ``NOISE_WINDOW`` earlier analyses, the last few sessions' photo facts), so a result
always follows from the stored data however sessions arrived.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from psycopg.rows import dict_row, tuple_row

from . import equipment, evidence, levels, symmetry, trend
from .contract import analysis_result
from .evidence import VariationLevels
from .vectors import decode_vector

_SESSION = """
    SELECT s.session_id, s.user_id, s.good_photos, a.captured_at, a.model_id,
           a.embedding_dim, a.change_score, a.is_first_session, a.baseline_session_count,
           a.per_angle, r.task_id AS request_task_id
      FROM sessions s
      JOIN models m ON m.active
      JOIN analyses a ON a.session_id = s.session_id AND a.model_id = m.model_id
      LEFT JOIN analysis_requests r ON r.seq = a.request_seq
     WHERE s.session_id = %s
"""
# The person's analyses captured strictly before T, newest first, at most N.
_EARLIER = """
    SELECT a.session_id, a.captured_at, a.change_score, a.is_first_session,
           a.baseline_session_count, a.per_angle, s.good_photos
      FROM analyses a JOIN sessions s USING (session_id)
     WHERE a.user_id = %(uid)s AND a.model_id = %(model)s AND a.captured_at < %(at)s
     ORDER BY a.captured_at DESC, a.session_id DESC
     LIMIT %(n)s
"""
_HISTORY = """
    SELECT s.session_id, s.user_id, s.good_photos, a.captured_at, a.model_id,
           a.embedding_dim, a.change_score, a.is_first_session, a.baseline_session_count,
           a.per_angle, r.task_id AS request_task_id
      FROM analyses a
      JOIN models m ON m.active AND m.model_id = a.model_id
      JOIN sessions s ON s.session_id = a.session_id
      LEFT JOIN analysis_requests r ON r.seq = a.request_seq
     WHERE a.user_id = %s
     ORDER BY a.captured_at, a.session_id
"""
RECENT_DEVICES = 3
# The left and right embeddings of the person's sessions up to T (T's own included), newest
# first: at most N sessions, or all of them when N is NULL.
_SIDES = """
    SELECT a.session_id, e.angle, e.embedding
      FROM (SELECT session_id, captured_at FROM analyses
             WHERE user_id = %(uid)s AND model_id = %(model)s
               AND (captured_at < %(at)s OR session_id = %(sid)s)
             ORDER BY captured_at DESC, session_id DESC
             LIMIT %(n)s) a
      JOIN angle_embeddings e ON e.session_id = a.session_id AND e.model_id = %(model)s
     WHERE e.angle IN ('left', 'right')
     ORDER BY a.captured_at DESC, a.session_id DESC
"""


def _side_distances(
    conn: psycopg.Connection[Any], row: dict[str, Any], sessions: int | None
) -> dict[uuid.UUID, float | None]:
    """Each session's left/right distance, by session id, for the symmetry evidence."""
    params = {
        "uid": row["user_id"],
        "model": row["model_id"],
        "at": row["captured_at"],
        "sid": row["session_id"],
        "n": sessions,
    }
    found: dict[uuid.UUID, dict[str, Any]] = {}
    with conn.cursor(binary=True, row_factory=tuple_row) as cur:
        for sid, angle, embedding in cur.execute(_SIDES, params):
            found.setdefault(sid, {})[angle] = decode_vector(embedding)
    return {sid: symmetry.distance(sides) for sid, sides in found.items()}


def _symmetry(
    row: dict[str, Any], earlier: list[dict[str, Any]], distances: dict[uuid.UUID, float | None]
) -> dict[str, Any] | None:
    before = [distances.get(e["session_id"]) for e in earlier[-evidence.NOISE_WINDOW :]]
    return symmetry.symmetry(distances.get(row["session_id"]), [d for d in before if d is not None])


def _equipment(
    photos: dict[str, Any] | None, earlier_photos: list[dict[str, Any] | None]
) -> dict[str, Any]:
    """The session's cameras against the person's recent ones (oldest first)."""

    def cameras(facts: dict[str, Any] | None) -> dict[str, Any]:
        return {a: equipment.from_json(f.get("equipment")) for a, f in (facts or {}).items()}

    history = [cameras(p) for p in earlier_photos if p]
    return equipment.compare(history, cameras(photos))


def _base(row: dict[str, Any]) -> dict[str, Any]:
    return analysis_result(
        session_id=row["session_id"],
        user_id=row["user_id"],
        captured_at=row["captured_at"],
        model_id=row["model_id"],
        embedding_dim=row["embedding_dim"],
        change_score=row["change_score"],
        is_first_session=row["is_first_session"],
        baseline_session_count=row["baseline_session_count"],
        per_angle=row["per_angle"],
        request_task_id=row["request_task_id"],
    )


def _reach(trend_sessions: int) -> int:
    """How many earlier analyses the evidence reads: the floor's window or the trend's, and
    one more for a first session among them."""
    return max(evidence.NOISE_WINDOW, trend_sessions) + 1


def _annotated(
    row: dict[str, Any],
    earlier: list[dict[str, Any]],
    fixed: VariationLevels | None,
    trend_sessions: int,
    distances: dict[uuid.UUID, float | None],
) -> dict[str, Any]:
    """The result of one row with its evidence, level, trend and symmetry, ``earlier``
    oldest first, ``distances`` the left/right distances of the row and its earlier
    sessions."""
    result = evidence.annotate(
        _base(row),
        earlier=earlier,
        photos=row["good_photos"],
        equipment=_equipment(
            row["good_photos"], [e["good_photos"] for e in earlier[-RECENT_DEVICES:]]
        ),
        trend_sessions=trend_sessions,
    )
    result["symmetry"] = _symmetry(row, earlier, distances)
    return levels.annotate_level(result, earlier, fixed)


def session_result(
    conn: psycopg.Connection[Any],
    session_id: uuid.UUID,
    *,
    fixed: VariationLevels | None = None,
    trend_sessions: int = trend.DEFAULT_SESSIONS,
) -> dict[str, Any] | None:
    """The session's analysis under the active model, with its evidence; None if none.
    ``fixed``: the variation levels of a model with no calibration; ``trend_sessions``:
    the trend's window (both from the settings)."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_SESSION, (session_id,)).fetchone()
        if row is None:
            return None
        earlier = cur.execute(
            _EARLIER,
            {
                "uid": row["user_id"],
                "model": row["model_id"],
                "at": row["captured_at"],
                "n": _reach(trend_sessions),
            },
        ).fetchall()
        distances = _side_distances(conn, row, evidence.NOISE_WINDOW + 1)
    earlier.reverse()  # oldest first
    return _annotated(row, earlier, fixed, trend_sessions, distances)


def person_history(
    conn: psycopg.Connection[Any],
    user_id: uuid.UUID,
    *,
    fixed: VariationLevels | None = None,
    trend_sessions: int = trend.DEFAULT_SESSIONS,
) -> list[dict[str, Any]]:
    """Every analyzed session of the person in capture order, each with its evidence, as
    ``session_result`` gives it (one pass over the history)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_HISTORY, (user_id,)).fetchall()
    distances = _side_distances(conn, rows[-1], None) if rows else {}
    out = []
    for i, row in enumerate(rows):
        window = rows[max(0, i - _reach(trend_sessions)) : i]
        earlier = [r for r in window if r["captured_at"] < row["captured_at"]]
        out.append(_annotated(row, earlier, fixed, trend_sessions, distances))
    return out
