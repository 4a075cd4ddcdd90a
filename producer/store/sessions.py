"""The ``sessions`` table from the producer's side: a job recorded as queued, read back,
counted, and failed when it cannot be sent (the reaper's claim is in ``lost``).

Every update here is conditional (on the task id, the status or the time the row was
read), so the producer never overwrites what a worker stored meanwhile.
"""

from __future__ import annotations

from uuid import UUID

from psycopg.types.json import Jsonb

from ...schema.contract import AnalyzeJob, other_users_session
from ...schema.errors import Code, JobError
from ...schema.forgetting import rows
from ...schema.forgetting.rows import CLAIM_SESSION_ID, OTHER_OWNER
from . import Conn, Row
from .people import enroll


def record_request(conn: Conn, job: AnalyzeJob, task_id: str) -> None:
    """The session as queued, and the request numbered: newer than every one recorded
    before it, whatever order the workers run them in."""
    key = {"sid": job.session_id, "uid": job.user_id, "task": task_id}
    with conn.transaction():
        conn.execute(CLAIM_SESSION_ID, key)  # first, as in the worker: one lock order
        enroll(conn, job.user_id)
        conn.execute(
            """
            INSERT INTO sessions (session_id, user_id, captured_at, images, status, task_id)
            VALUES (%(sid)s, %(uid)s, %(at)s, %(images)s, 'queued', %(task)s)
            ON CONFLICT (user_id, session_id) DO UPDATE
               SET status = 'queued', captured_at = EXCLUDED.captured_at,
                   images = EXCLUDED.images, task_id = EXCLUDED.task_id,
                   error_code = NULL, error_message = NULL, finished_at = NULL,
                   updated_at = now()
            """,
            {**key, "at": job.captured_at, "images": Jsonb(job.to_payload()["images"])},
        )
        # A session id is one person's (a read across people: docs/scaling.md).
        taken = conn.execute(OTHER_OWNER + " AS taken", key).fetchone()
        if taken is not None and taken["taken"]:
            raise other_users_session()
        # After the INSERT, which waits for a delete-session in progress: sees its tombstone.
        deleted = conn.execute("SELECT session_deleted(%(uid)s, %(sid)s) AS deleted", key)
        if (deleted.fetchone() or {}).get("deleted"):
            raise JobError(
                Code.SESSION_DELETED, f"session {job.session_id} was deleted; not enqueued"
            )
        conn.execute(
            """
            WITH request AS (
                INSERT INTO analysis_requests (user_id, task_id, session_id)
                VALUES (%(uid)s, %(task)s, %(sid)s)
                RETURNING seq)
            UPDATE sessions s SET request_seq = request.seq
              FROM request WHERE s.user_id = %(uid)s AND s.session_id = %(sid)s
            """,
            key,
        )


def is_deleted(conn: Conn, session_id: UUID) -> bool:
    """delete-session ran for this session id (its tombstone, migration 0008)."""
    row = conn.execute("SELECT session_deleted(%s) AS deleted", (session_id,)).fetchone()
    return bool(row and row["deleted"])


def owner(conn: Conn, session_id: UUID) -> UUID | None:
    """Whose session this is, or was before delete-session removed it; None if unknown."""
    row = conn.execute(
        "SELECT user_id FROM sessions WHERE session_id = %(s)s UNION ALL"
        " SELECT user_id FROM deleted_sessions WHERE session_digest = session_digest(%(s)s)"
        " LIMIT 1",
        {"s": session_id},
    ).fetchone()
    return row["user_id"] if row else None


def photos_in_use(conn: Conn, user_id: UUID) -> set[str]:
    """Every photo URI the person's sessions still name (a deleted session's photo that
    another session names too is kept)."""
    rows = conn.execute(
        "SELECT images, good_images FROM sessions WHERE user_id = %s", (user_id,)
    ).fetchall()
    return {
        uri
        for r in rows
        for images in (r["images"], r["good_images"])
        for uri in (images or {}).values()
    }


def rejected_task(conn: Conn, task_id: str) -> Row | None:
    """How a worker refused or failed the task (``rejected_messages``), by its id."""
    return conn.execute(
        "SELECT error_code, error_message FROM rejected_messages WHERE task_id = %s"
        " ORDER BY received_at DESC LIMIT 1",
        (task_id,),
    ).fetchone()


def session_left(conn: Conn, user_id: UUID, session_id: UUID) -> dict[str, int]:
    """Rows naming the person's session, to prove delete-session left none."""
    row = conn.execute(
        "SELECT count(*) FROM sessions WHERE user_id = %s AND session_id = %s",
        (user_id, session_id),
    ).fetchone()
    left = rows.session_rows(conn, user_id, session_id)
    return {"sessions": int(row["count"]) if row else 0} | left


def enqueue_failed(conn: Conn, user_id: UUID, session_id: UUID, task_id: str, message: str) -> None:
    """The broker refused the message: never leave a "queued" job that no message will
    pick up. Only this attempt's own row: never overwrite a result a worker stored."""
    conn.execute(
        "UPDATE sessions SET status = 'failed', error_code = 'enqueue_failed',"
        " error_message = %s, updated_at = now()"
        " WHERE user_id = %s AND session_id = %s AND task_id = %s AND status = 'queued'",
        (message, user_id, session_id, task_id),
    )


def find(conn: Conn, session_id: UUID) -> Row | None:
    return conn.execute("SELECT * FROM sessions WHERE session_id = %s", (session_id,)).fetchone()


def last_rejected(conn: Conn, session_id: UUID) -> Row | None:
    """The newest message for the session that a worker refused as no valid job."""
    return conn.execute(
        "SELECT task_id, error_code, error_message, received_at"
        " FROM rejected_messages WHERE session_id = %s"
        " ORDER BY received_at DESC LIMIT 1",
        (session_id,),
    ).fetchone()


def owners(conn: Conn, session_ids: list[UUID]) -> dict[UUID, UUID]:
    """session id -> the person it belongs to, for the sessions that exist."""
    return {
        r["session_id"]: r["user_id"]
        for r in conn.execute(
            "SELECT session_id, user_id FROM sessions WHERE session_id = ANY(%s)",
            (session_ids,),
        )
    }


def failed(conn: Conn, session_id: UUID | None = None) -> list[Row]:
    """Failed jobs (one, or all) with what they were sent with, oldest capture first."""
    return conn.execute(
        "SELECT session_id, user_id, captured_at, images FROM sessions"
        " WHERE status = 'failed' AND (%(sid)s::uuid IS NULL OR session_id = %(sid)s::uuid)"
        " ORDER BY captured_at",
        {"sid": session_id},
    ).fetchall()


def count_by_status(conn: Conn, session_ids: list[UUID]) -> dict[str, int]:
    rows = conn.execute(
        "SELECT status, count(*) AS n FROM sessions WHERE session_id = ANY(%s) GROUP BY status",
        (session_ids,),
    ).fetchall()
    return {r["status"]: r["n"] for r in rows}


def fail_lost(conn: Conn, session_id: UUID, code: str, message: str) -> None:
    """A lost job that cannot be sent again (its row no longer makes a valid job)."""
    conn.execute(
        "UPDATE sessions SET status = 'failed', error_code = %s, error_message = %s,"
        " updated_at = now() WHERE session_id = %s AND status IN ('queued', 'running')",
        (code, message, session_id),
    )


def good_images(conn: Conn, session_ids: list[UUID]) -> dict[str, dict[str, str]]:
    """The photos each session's stored analysis came from: session id -> angle -> URI."""
    rows = conn.execute(
        "SELECT session_id, good_images FROM sessions"
        " WHERE session_id = ANY(%s) AND good_images IS NOT NULL",
        (session_ids,),
    ).fetchall()
    return {str(r["session_id"]): dict(r["good_images"]) for r in rows}
