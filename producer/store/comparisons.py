"""The ``comparisons`` table from the producer's side: a comparison recorded as queued,
and read back with whether its numbers still follow from the current analyses."""

from __future__ import annotations

from uuid import UUID

from ...schema.contract import CompareJob
from . import Conn, Row


def record(conn: Conn, job: CompareJob, task_id: str) -> None:
    """Queued under ``task_id``; asking again for the same pair starts it over."""
    conn.execute(
        """
        INSERT INTO comparisons (current_session_id, previous_session_id, user_id, task_id)
        VALUES (%s, %s, %s, %s)
        ON CONFLICT (user_id, current_session_id, previous_session_id) DO UPDATE
           SET status = 'queued', result = NULL, error_code = NULL,
               error_message = NULL, task_id = EXCLUDED.task_id, updated_at = now()
        """,
        (job.current_session_id, job.previous_session_id, job.user_id, task_id),
    )


def find(conn: Conn, current: UUID, previous: UUID) -> Row | None:
    """The row, with ``stale``: computed from analysis revisions (or a model) that are
    no longer the active model's current ones."""
    return conn.execute(
        """
        SELECT c.*,
               c.current_revision IS NOT NULL
               AND (c.model_id, c.current_revision, c.previous_revision)
                   IS DISTINCT FROM (m.model_id, ac.revision, ap.revision) AS stale
          FROM comparisons c
          LEFT JOIN models m ON m.active
          LEFT JOIN analyses ac ON ac.user_id = c.user_id
                               AND ac.session_id = c.current_session_id
                               AND ac.model_id = m.model_id
          LEFT JOIN analyses ap ON ap.user_id = c.user_id
                               AND ap.session_id = c.previous_session_id
                               AND ap.model_id = m.model_id
         WHERE c.current_session_id = %s AND c.previous_session_id = %s
        """,
        (current, previous),
    ).fetchone()


def requeue_succeeded(
    conn: Conn, user_id: UUID, current: UUID, previous: UUID, task_id: str
) -> None:
    conn.execute(
        "UPDATE comparisons SET status = 'queued', task_id = %s, updated_at = now()"
        " WHERE user_id = %s AND current_session_id = %s AND previous_session_id = %s"
        " AND status = 'succeeded'",
        (task_id, user_id, current, previous),
    )
