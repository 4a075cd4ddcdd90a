"""The ``comparisons`` table, and what a comparison reads: two analyses and the windows
of earlier sessions."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import numpy as np
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from ...schema import notification
from ...schema.contract import ANGLES, CompareJob, check_compared
from ...schema.errors import Code, JobError
from ...schema.evidence import NOISE_WINDOW
from ...schema.status import Status
from .. import score
from ..compare import ComparedSession
from ..score import StoredSession
from . import outbox
from .jobs import check_not_deleted
from .people import check_user
from .vectors import decode_vector


def start_comparison(pool: ConnectionPool, job: CompareJob, task_id: str | None) -> None:
    """Mark the comparison running, once its person is known to be enrolled."""
    with pool.connection() as conn:
        check_user(conn, job.user_id)
        conn.execute(
            """
            INSERT INTO comparisons (current_session_id, previous_session_id, user_id, status,
                                     task_id)
            SELECT %(cur)s, %(prev)s, %(uid)s, 'running', %(task)s
             WHERE EXISTS (SELECT 1 FROM sessions WHERE user_id = %(uid)s AND session_id = %(cur)s)
               AND EXISTS (SELECT 1 FROM sessions WHERE user_id = %(uid)s AND session_id = %(prev)s)
            ON CONFLICT (user_id, current_session_id, previous_session_id) DO UPDATE
               SET status = 'running', error_code = NULL,
                   error_message = NULL, task_id = EXCLUDED.task_id, updated_at = now()
            """,
            {
                "cur": job.current_session_id,
                "prev": job.previous_session_id,
                "uid": job.user_id,
                "task": task_id,
            },
        )


def finish_comparison(
    pool: ConnectionPool,
    job: CompareJob,
    result: dict[str, Any] | None,
    error: JobError | None = None,
    inputs: tuple[ComparedSession, ComparedSession] | None = None,
    notify: tuple[str, str | None] = ("", None),
) -> None:
    """Record the outcome, with the analysis revisions it was computed from: when either
    changes later, readers see the stored numbers as stale and have them recomputed.
    A comparison whose session was deleted meanwhile ends ``session_deleted``.
    ``notify``: (queue, task id): the comparison's notification commits with it."""
    current, previous = inputs if inputs else (None, None)
    with pool.connection() as conn, conn.transaction():
        written = conn.execute(
            """
            UPDATE comparisons
               SET status = %s, result = %s, error_code = %s, error_message = %s,
                   model_id = %s, current_revision = %s, previous_revision = %s,
                   updated_at = now()
             WHERE user_id = %s AND current_session_id = %s AND previous_session_id = %s
            """,
            (
                Status.FAILED if error else Status.SUCCEEDED,
                Jsonb(result) if result is not None else None,
                error.code if error else None,
                error.message if error else None,
                current.model_id if current else None,
                current.revision if current else None,
                previous.revision if previous else None,
                job.user_id,
                job.current_session_id,
                job.previous_session_id,
            ),
        )
        if not written.rowcount and result is not None:  # its row went with a session
            check_not_deleted(conn, job.user_id, job.current_session_id)
            check_not_deleted(conn, job.user_id, job.previous_session_id)
        queue, task_id = notify
        if queue and task_id:
            outbox.tell_if_enrolled(conn, queue, _told(job, task_id, result, error))


def _told(
    job: CompareJob, task_id: str, result: dict[str, Any] | None, error: JobError | None
) -> dict[str, Any]:
    return notification.body(
        session_id=job.current_session_id,
        user_id=job.user_id,
        request_task_id=task_id,
        status=Status.FAILED if error else Status.SUCCEEDED,
        result=result,
        error={"code": error.code, "message": error.message} if error else None,
        kind=notification.KIND_COMPARISON,
    )


def load_for_comparison(pool: ConnectionPool, session_id: UUID, user_id: UUID) -> ComparedSession:
    """The session's analysis under the active model, or a JobError that says why not."""
    with pool.connection() as conn, conn.cursor(binary=True) as cur:
        cur.execute(
            """
            SELECT s.user_id, s.status, a.model_id, a.change_score, a.per_angle, a.revision,
                   a.captured_at, a.baseline_session_count
              FROM sessions s
              LEFT JOIN analyses a ON a.user_id = s.user_id AND a.session_id = s.session_id
                    AND a.model_id = (SELECT model_id FROM models WHERE active)
             WHERE s.user_id = %s AND s.session_id = %s
            """,
            (user_id, session_id),
        )
        row = cur.fetchone()
        if row is None:
            check_not_deleted(conn, user_id, session_id)
            # Not theirs: someone else's (a read across people, on this refusal only)?
            other = conn.execute(
                "SELECT user_id FROM sessions WHERE session_id = %s AND user_id <> %s LIMIT 1",
                (session_id, user_id),
            ).fetchone()
            check_compared(session_id, other[0] if other else None, user_id)
        assert row is not None
        _, status, model_id, change, per_angle, revision, at, earlier = row
        if model_id is None:
            code = (
                Code.SESSION_NOT_READY
                if status in (Status.QUEUED, Status.RUNNING)
                else Code.SESSION_NOT_ANALYZED
            )
            raise JobError(code, f"session {session_id} has no analysis yet (status {status})")
        cur.execute(
            "SELECT angle, embedding FROM angle_embeddings"
            " WHERE user_id = %s AND session_id = %s AND model_id = %s",
            (user_id, session_id, model_id),
        )
        by_angle = {angle: decode_vector(e) for angle, e in cur}
    angles = {a: by_angle[a] for a in ANGLES if a in by_angle}
    return ComparedSession(
        session_id=session_id,
        model_id=model_id,
        change_score=float(change),
        angle_scores={p["angle"]: float(p["change_score"]) for p in per_angle},
        angles=angles,
        session=score.session_embedding(angles) if angles else None,
        revision=int(revision),
        captured_at=at,
        baseline_session_count=int(earlier),
    )


# The comparison's windows: the last 5 earlier sessions, and those of the 30 days before
# (at most 200 sessions read, newest first, whatever the history's length).
_WINDOWS_SQL = """
    WITH earlier AS (
        SELECT session_id, captured_at,
               row_number() OVER (ORDER BY captured_at DESC, session_id DESC) AS rank
          FROM analyses
         WHERE user_id = %(uid)s AND model_id = %(model)s AND captured_at < %(at)s
         ORDER BY captured_at DESC, session_id DESC
         LIMIT 200)
    SELECT w.session_id, w.captured_at, w.rank, e.angle, e.embedding
      FROM earlier w
      JOIN angle_embeddings e ON e.user_id = %(uid)s AND e.session_id = w.session_id
                              AND e.model_id = %(model)s
     WHERE w.rank <= %(rolling)s OR w.captured_at >= %(at)s - make_interval(days => %(days)s)
"""


def load_windows(
    pool: ConnectionPool,
    user_id: UUID,
    model_id: str,
    before: datetime,
    rolling: int = 5,
    days: int = 30,
) -> list[tuple[StoredSession, int]]:
    """Earlier sessions (strictly before ``before``) for the comparison layers, each with
    its rank (1 = the previous session), newest first."""
    params = {"uid": user_id, "model": model_id, "at": before, "rolling": rolling, "days": days}
    found: dict[UUID, tuple[datetime, int, dict[str, np.ndarray]]] = {}
    with pool.connection() as conn, conn.cursor(binary=True) as cur:
        cur.execute(_WINDOWS_SQL, params)
        for sid, at, rank, angle, embedding in cur:
            found.setdefault(sid, (at, int(rank), {}))[2][angle] = decode_vector(embedding)
    ordered = sorted(found.items(), key=lambda item: item[1][1])
    return [(StoredSession(sid, at, angles), rank) for sid, (at, rank, angles) in ordered]


# The person's analyses before the current session, newest first, for their noise floor.
_EARLIER_SQL = """
    SELECT change_score, is_first_session, baseline_session_count
      FROM analyses
     WHERE user_id = %(uid)s AND model_id = %(model)s AND captured_at < %(at)s
     ORDER BY captured_at DESC, session_id DESC
     LIMIT %(n)s
"""


def load_earlier_scores(
    pool: ConnectionPool, user_id: UUID, model_id: str, before: datetime
) -> list[dict[str, Any]]:
    """The last ``NOISE_WINDOW`` analyses captured before ``before``, oldest first: what
    the comparison's levels are read against (``levels.scale_for``)."""
    params = {"uid": user_id, "model": model_id, "at": before, "n": NOISE_WINDOW}
    with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_EARLIER_SQL, params).fetchall()
    rows.reverse()
    return rows


def fail_unfinished_comparison(
    pool: ConnectionPool, job: CompareJob, task_id: str, error: JobError, notify_queue: str = ""
) -> bool:
    """End a comparison request that no worker will finish (dead-lettered): failed, only
    while this request is the pair's newest and nothing finished it."""
    with pool.connection() as conn, conn.transaction():
        marked = conn.execute(
            """
            UPDATE comparisons
               SET status = 'failed', error_code = %s, error_message = %s, updated_at = now()
             WHERE user_id = %s AND current_session_id = %s AND previous_session_id = %s
               AND task_id = %s AND status IN ('queued', 'running')
            """,
            (
                error.code,
                error.message[:2000],
                job.user_id,
                job.current_session_id,
                job.previous_session_id,
                task_id,
            ),
        ).rowcount
        if marked and notify_queue:
            outbox.tell_if_enrolled(conn, notify_queue, _told(job, task_id, None, error))
    return bool(marked)
