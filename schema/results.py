"""Reading analyses back as the public result objects: one session's, or a person's history.

Everything that depends on the person's history (noise floor, equipment change,
confidence, trend) is computed here, when read, from bounded reads of the current rows (the
last ``NOISE_WINDOW`` or ``trend_sessions`` earlier analyses, whichever is more, the last
few sessions' photo facts), so a result
always follows from the stored data however sessions arrived.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from psycopg.rows import dict_row

from . import equipment, evidence, trend
from .contract import analysis_result

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


def session_result(
    conn: psycopg.Connection[Any],
    session_id: uuid.UUID,
    trend_sessions: int = trend.DEFAULT_SESSIONS,
) -> dict[str, Any] | None:
    """The session's analysis under the active model, with its evidence; None if none."""
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
    earlier.reverse()  # oldest first
    return evidence.annotate(
        _base(row),
        earlier=earlier,
        photos=row["good_photos"],
        equipment=_equipment(
            row["good_photos"], [e["good_photos"] for e in earlier[-RECENT_DEVICES:]]
        ),
        trend_sessions=trend_sessions,
    )


def person_history(
    conn: psycopg.Connection[Any],
    user_id: uuid.UUID,
    trend_sessions: int = trend.DEFAULT_SESSIONS,
) -> list[dict[str, Any]]:
    """Every analyzed session of the person in capture order, each with its evidence, as
    ``session_result`` gives it (one pass over the history)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_HISTORY, (user_id,)).fetchall()
    out = []
    for i, row in enumerate(rows):
        window = rows[max(0, i - _reach(trend_sessions)) : i]
        earlier = [r for r in window if r["captured_at"] < row["captured_at"]]
        out.append(
            evidence.annotate(
                _base(row),
                earlier=earlier,
                photos=row["good_photos"],
                equipment=_equipment(
                    row["good_photos"], [e["good_photos"] for e in earlier[-RECENT_DEVICES:]]
                ),
                trend_sessions=trend_sessions,
            )
        )
    return out
