"""Postgres writes of the worker: job state, embeddings, analyses, comparisons.

Every analysis is written in one transaction under a per-user advisory lock, and the
user's whole history (same model) is rescored from stored embeddings, so results never
depend on the order or concurrency in which jobs ran.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from typing import Any
from uuid import UUID

import numpy as np
import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from producer.contract import ANGLES, AnalyzeJob, CompareJob, JobError
from worker import score
from worker.score import Analysis, ComparedSession, StoredSession


def _lock_user(conn: psycopg.Connection[Any], user_id: UUID) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s::text, 0))", (str(user_id),))


def start_job(pool: ConnectionPool, job: AnalyzeJob, task_id: str | None) -> int:
    """Mark the session running (creating it for producers that only sent the task).

    Returns the attempt number. A session id already owned by another user is refused.
    """
    with pool.connection() as conn:
        row = conn.execute(
            """
            INSERT INTO sessions (session_id, user_id, captured_at, images, status,
                                  attempts, task_id, started_at)
            VALUES (%(sid)s, %(uid)s, %(at)s, %(images)s, 'running', 1, %(task)s, now())
            ON CONFLICT (session_id) DO UPDATE
               SET status = 'running', attempts = sessions.attempts + 1,
                   captured_at = EXCLUDED.captured_at, images = EXCLUDED.images,
                   task_id = EXCLUDED.task_id, error_code = NULL, error_message = NULL,
                   started_at = now(), finished_at = NULL, updated_at = now()
             WHERE sessions.user_id = EXCLUDED.user_id
            RETURNING attempts
            """,
            {
                "sid": job.session_id,
                "uid": job.user_id,
                "at": job.captured_at,
                "images": Jsonb(job.to_payload()["images"]),
                "task": task_id,
            },
        ).fetchone()
    if row is None:
        raise JobError("session_of_other_user", "this session id belongs to another user")
    return int(row[0])


def reject_message(
    pool: ConnectionPool,
    task_name: str,
    task_id: str | None,
    payload: dict[str, Any],
    error: JobError,
    mark_job: bool = True,
) -> None:
    """Record a message that is not a valid job; mark its session failed if one exists."""
    session_id = user_id = None
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        session_id = UUID(str(payload.get("session_id")))
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        user_id = UUID(str(payload.get("user_id")))
    with pool.connection() as conn, conn.transaction():
        conn.execute(
            """
            INSERT INTO rejected_messages
                   (task_name, task_id, session_id, payload, error_code, error_message)
            VALUES (%s, %s, %s, %s, %s, %s)
            """,
            (task_name, task_id, session_id, Jsonb(payload), error.code, error.message[:2000]),
        )
    if mark_job and session_id and user_id and task_name.endswith("analyze_session"):
        fail_job(pool, session_id, user_id, error.code, error.message)


def fail_job(
    pool: ConnectionPool, session_id: UUID, user_id: UUID, code: str, message: str
) -> None:
    """Mark the job failed; only the job's own user's session, never another user's."""
    with pool.connection() as conn:
        conn.execute(
            """
            UPDATE sessions SET status = 'failed', error_code = %s, error_message = %s,
                   finished_at = now(), updated_at = now()
             WHERE session_id = %s AND user_id = %s
            """,
            (code, message[:2000], session_id, user_id),
        )


def _load_history(
    conn: psycopg.Connection[Any], user_id: UUID, model_id: str
) -> list[StoredSession]:
    angles: dict[UUID, dict[str, np.ndarray]] = defaultdict(dict)
    with conn.cursor(binary=True) as cur:
        cur.execute(
            """
            SELECT e.session_id, e.angle, e.embedding
              FROM angle_embeddings e JOIN sessions s USING (session_id)
             WHERE s.user_id = %s AND e.model_id = %s
            """,
            (user_id, model_id),
        )
        for session_id, angle, embedding in cur:
            angles[session_id][angle] = np.asarray(embedding, dtype=np.float32)
        cur.execute(
            """
            SELECT e.session_id, s.captured_at, e.embedding
              FROM session_embeddings e JOIN sessions s USING (session_id)
             WHERE s.user_id = %s AND e.model_id = %s
            """,
            (user_id, model_id),
        )
        # Rows come back in heap order, which the space freed by deletes (redeliveries,
        # re-analyses of any session) reshuffles: per_angle keeps the contract's order.
        return [
            StoredSession(
                sid,
                captured_at,
                {a: angles[sid][a] for a in ANGLES if a in angles[sid]},
                np.asarray(emb, dtype=np.float32),
            )
            for sid, captured_at, emb in cur
        ]


def save_analysis(
    pool: ConnectionPool,
    job: AnalyzeJob,
    model_id: str,
    embeddings: dict[str, np.ndarray],
) -> Analysis:
    """Replace the session's embeddings, rescore the user's history, mark it succeeded."""
    session_vector = score.session_embedding(embeddings)
    dim = int(session_vector.shape[0])
    with pool.connection() as conn, conn.transaction():
        _lock_user(conn, job.user_id)
        conn.execute("DELETE FROM angle_embeddings WHERE session_id = %s", (job.session_id,))
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO angle_embeddings (session_id, angle, model_id, embedding)"
                " VALUES (%s, %s, %s, %s)",
                [(job.session_id, a, model_id, e.tolist()) for a, e in embeddings.items()],
            )
        conn.execute(
            """
            INSERT INTO session_embeddings (session_id, model_id, embedding)
            VALUES (%s, %s, %s)
            ON CONFLICT (session_id) DO UPDATE
               SET model_id = EXCLUDED.model_id, embedding = EXCLUDED.embedding
            """,
            (job.session_id, model_id, session_vector.tolist()),
        )
        analyses = score.analyze_history(_load_history(conn, job.user_id, model_id))
        with conn.cursor() as cur:
            cur.executemany(
                """
                INSERT INTO analyses (session_id, model_id, embedding_dim, change_score,
                                      is_first_session, baseline_session_count, per_angle)
                VALUES (%s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (session_id) DO UPDATE
                   SET model_id = EXCLUDED.model_id, embedding_dim = EXCLUDED.embedding_dim,
                       change_score = EXCLUDED.change_score,
                       is_first_session = EXCLUDED.is_first_session,
                       baseline_session_count = EXCLUDED.baseline_session_count,
                       per_angle = EXCLUDED.per_angle, computed_at = now()
                 WHERE (analyses.model_id, analyses.change_score, analyses.is_first_session,
                        analyses.baseline_session_count, analyses.per_angle)
                       IS DISTINCT FROM
                       (EXCLUDED.model_id, EXCLUDED.change_score, EXCLUDED.is_first_session,
                        EXCLUDED.baseline_session_count, EXCLUDED.per_angle)
                    OR analyses.session_id = %s
                """,
                [
                    (
                        a.session_id,
                        model_id,
                        dim,
                        a.change_score,
                        a.is_first_session,
                        a.baseline_session_count,
                        Jsonb(a.per_angle),
                        job.session_id,
                    )
                    for a in analyses
                ],
            )
        conn.execute(
            """
            UPDATE sessions SET status = 'succeeded', finished_at = now(), updated_at = now()
             WHERE session_id = %s
            """,
            (job.session_id,),
        )
    return next(a for a in analyses if a.session_id == job.session_id)


def start_comparison(pool: ConnectionPool, job: CompareJob) -> None:
    with pool.connection() as conn:
        conn.execute(
            """
            INSERT INTO comparisons (current_session_id, previous_session_id, user_id, status)
            SELECT %(cur)s, %(prev)s, %(uid)s, 'running'
             WHERE EXISTS (SELECT 1 FROM sessions WHERE session_id = %(cur)s)
               AND EXISTS (SELECT 1 FROM sessions WHERE session_id = %(prev)s)
            ON CONFLICT (current_session_id, previous_session_id) DO UPDATE
               SET status = 'running', user_id = EXCLUDED.user_id, error_code = NULL,
                   error_message = NULL, updated_at = now()
            """,
            {"cur": job.current_session_id, "prev": job.previous_session_id, "uid": job.user_id},
        )


def finish_comparison(
    pool: ConnectionPool,
    job: CompareJob,
    result: dict[str, Any] | None,
    error: JobError | None = None,
) -> None:
    with pool.connection() as conn:
        conn.execute(
            """
            UPDATE comparisons
               SET status = %s, result = %s, error_code = %s, error_message = %s,
                   updated_at = now()
             WHERE current_session_id = %s AND previous_session_id = %s
            """,
            (
                "failed" if error else "succeeded",
                Jsonb(result) if result is not None else None,
                error.code if error else None,
                error.message if error else None,
                job.current_session_id,
                job.previous_session_id,
            ),
        )


def load_for_comparison(pool: ConnectionPool, session_id: UUID, user_id: UUID) -> ComparedSession:
    """The analyzed session of this user, or a JobError that says which it is not."""
    with pool.connection() as conn, conn.cursor(binary=True) as cur:
        cur.execute(
            """
            SELECT s.user_id, s.status, a.model_id, a.change_score, a.per_angle, se.embedding,
                   se.model_id
              FROM sessions s
              LEFT JOIN analyses a USING (session_id)
              LEFT JOIN session_embeddings se USING (session_id)
             WHERE s.session_id = %s
            """,
            (session_id,),
        )
        row = cur.fetchone()
        if row is None:
            raise JobError("session_not_found", f"session {session_id} does not exist")
        owner, status, model_id, change, per_angle, session_vec, session_model = row
        if owner != user_id:
            raise JobError(
                "not_same_user",
                f"session {session_id} does not belong to user {user_id}; "
                "only sessions of the same user can be compared",
            )
        if model_id is None:
            code = (
                "session_not_ready" if status in ("queued", "running") else "session_not_analyzed"
            )
            raise JobError(code, f"session {session_id} has no analysis yet (status {status})")
        cur.execute(
            "SELECT angle, embedding FROM angle_embeddings WHERE session_id = %s AND model_id = %s",
            (session_id, model_id),
        )
        angles = {angle: np.asarray(e, dtype=np.float32) for angle, e in cur}
    return ComparedSession(
        session_id=session_id,
        model_id=model_id,
        change_score=float(change),
        angle_scores={p["angle"]: float(p["change_score"]) for p in per_angle},
        angles=angles,
        session=(
            np.asarray(session_vec, dtype=np.float32)
            if session_vec is not None and session_model == model_id
            else None
        ),
    )
