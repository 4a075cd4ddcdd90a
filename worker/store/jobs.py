"""Job state of the worker: ``sessions``, ``analysis_requests`` and ``rejected_messages``.

Requests are ordered (``analysis_requests.seq``): only a session's newest request
writes, so a late retry of an older request cannot overwrite a newer re-analysis. A
failed attempt records its own status and error and nothing else.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from ...schema.contract import ANALYZE_TASK, AnalyzeJob, other_users_session, payload_size
from ...schema.errors import Code, JobError
from ...schema.forgetting.rows import CLAIM_SESSION_ID, OTHER_OWNER
from ...schema.status import Status
from . import outbox
from .people import FORGOTTEN, admit
from .vectors import Conn


@dataclass(frozen=True)
class Superseded:
    """A newer request for the session exists; this one wrote nothing."""

    session_id: UUID
    newest_task_id: str | None


def start_job(pool: ConnectionPool, job: AnalyzeJob, task_id: str | None) -> int | Superseded:
    """Record the request if new and, if it is the session's newest, mark the session running.

    Returns the request's sequence number, or ``Superseded`` when a newer request for the
    session was recorded first (a late retry or redelivery of an older request). A session
    id already owned by another user is refused.
    """
    task = task_id or f"untracked-{job.session_id}"
    try:
        return _start_job(pool, job, task)
    except psycopg.errors.ForeignKeyViolation:
        # The person is not enrolled, or forget-user ran: their row is what the new
        # session row references, so the insert waited for the forget and then failed.
        admit(pool, job.user_id)
        raise


def _start_job(pool: ConnectionPool, job: AnalyzeJob, task: str) -> int | Superseded:
    images = Jsonb(job.to_payload()["images"])
    key = {"uid": job.user_id, "sid": job.session_id, "task": task}
    with pool.connection() as conn, conn.transaction():
        with conn.pipeline():  # one round trip for the five statements
            conn.execute(CLAIM_SESSION_ID, key)
            # A message sent straight to the broker has no row yet.
            conn.execute(
                "INSERT INTO sessions (session_id, user_id, captured_at, images, task_id)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (user_id, session_id) DO NOTHING",
                (job.session_id, job.user_id, job.captured_at, images, task),
            )
            current = conn.execute(
                "SELECT request_seq, task_id FROM sessions"
                " WHERE user_id = %(uid)s AND session_id = %(sid)s FOR UPDATE",
                key,
            )
            others = conn.execute(OTHER_OWNER, key)
            request = conn.execute(
                "INSERT INTO analysis_requests (user_id, task_id, session_id)"
                " VALUES (%(uid)s, %(task)s, %(sid)s)"
                " ON CONFLICT (user_id, task_id) DO NOTHING RETURNING seq, session_id",
                key,
            )
            # After the INSERT, which waits for a delete-session in progress: sees its tombstone.
            deleted = conn.execute("SELECT session_deleted(%(uid)s, %(sid)s)", key)
        if _first(others):
            raise other_users_session()
        refuse_deleted(deleted.fetchone(), job.session_id)
        newest_seq, newest_task = current.fetchone() or (None, None)
        row = (
            request.fetchone()
            or conn.execute(  # a retry: its request is recorded
                "SELECT seq, session_id FROM analysis_requests"
                " WHERE user_id = %(uid)s AND task_id = %(task)s",
                key,
            ).fetchone()
        )
        assert row is not None
        seq, request_session = int(row[0]), row[1]
        if request_session != job.session_id:
            raise JobError(Code.INVALID_PAYLOAD, f"task id {task} was sent for another session")
        if newest_seq is not None and seq < newest_seq:
            return Superseded(job.session_id, newest_task)
        conn.execute(
            """
            UPDATE sessions
               SET status = 'running', attempts = attempts + 1, request_seq = %s,
                   captured_at = %s, images = %s, task_id = %s, error_code = NULL,
                   error_message = NULL, started_at = clock_timestamp(), finished_at = NULL,
                   updated_at = clock_timestamp()
             WHERE user_id = %s AND session_id = %s
            """,
            (seq, job.captured_at, images, task, job.user_id, job.session_id),
        )
    return seq


def _first(cursor: Any) -> bool:
    row = cursor.fetchone()
    return bool(row and row[0])


def refuse_deleted(row: tuple[Any, ...] | None, session_id: UUID) -> None:
    """``row``: ``SELECT session_deleted(id)``. A deleted session's id never writes again
    (rolling back whatever this transaction recorded of it)."""
    if row is not None and row[0]:
        raise JobError(Code.SESSION_DELETED, f"session {session_id} was deleted (delete-session)")


def check_not_deleted(conn: Conn, user_id: UUID | None, session_id: UUID) -> None:
    """The person's tombstone; ``user_id`` None (a backfill message names the session
    only): anyone's, a read across people."""
    if user_id is None:
        row = conn.execute("SELECT session_deleted(%s)", (session_id,)).fetchone()
    else:
        row = conn.execute("SELECT session_deleted(%s, %s)", (user_id, session_id)).fetchone()
    refuse_deleted(row, session_id)


def deleted_or(
    pool: ConnectionPool, user_id: UUID | None, session_id: UUID, error: JobError
) -> JobError:
    """How a job whose session may have been deleted while it ran ends: with
    ``session_deleted`` if so (its photos may be gone too), else with its own error."""
    with pool.connection() as conn:
        try:
            check_not_deleted(conn, user_id, session_id)
        except JobError as deleted:
            return deleted
    return error


# The analysis write's guard: the session's newest request, and whether the write's model
# is active; locks the session row for the write.
NEWEST_REQUEST = """
    SELECT s.request_seq, s.task_id, m.active
      FROM sessions s JOIN models m ON m.model_id = %(model)s
     WHERE s.session_id = %(sid)s AND s.user_id = %(uid)s
       FOR UPDATE OF s FOR SHARE OF m
"""


def succeeded(
    user_id: UUID, session_id: UUID, photos: dict[str, dict[str, Any]] | None
) -> tuple[str, Any]:
    """The statement that makes this request the session's good one, run inside the
    analysis write: ``photos`` (quality, camera per angle) are kept with it."""
    return (
        """
        UPDATE sessions
           SET status = 'succeeded', finished_at = clock_timestamp(),
               updated_at = clock_timestamp(), good_task_id = task_id,
               good_request_seq = request_seq, good_captured_at = captured_at,
               good_images = images, good_at = clock_timestamp(), good_photos = %s
         WHERE user_id = %s AND session_id = %s
        """,
        (Jsonb(photos) if photos is not None else None, user_id, session_id),
    )


def reject_message(
    pool: ConnectionPool,
    task_name: str,
    task_id: str | None,
    payload: dict[str, Any],
    error: JobError,
    mark_job: bool = True,
    notify_queue: str = "",
) -> None:
    """Record a message that is not a valid job; mark its session failed if one exists.

    A job for a forgotten person, or for a deleted session, is recorded without its
    payload or ids (nothing of theirs is written again); an oversized payload by its size
    and field names.
    """
    session_id = user_id = None
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        session_id = UUID(str(payload.get("session_id")))
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        user_id = UUID(str(payload.get("user_id")))
    # A destructive task's token is a credential, kept nowhere (schema.authority).
    payload = {k: v for k, v in payload.items() if k != "token"}
    if error.code == FORGOTTEN:
        payload, session_id, mark_job = {"withheld": "the person was forgotten"}, None, False
    elif error.code == Code.SESSION_DELETED:
        payload, session_id, mark_job = {"withheld": "the session was deleted"}, None, False
    elif error.code == Code.PAYLOAD_TOO_LARGE:
        payload = {
            "withheld": "too large",
            "bytes": payload_size(payload),
            "fields": sorted(map(str, payload))[:50],
        }
    with pool.connection() as conn, conn.transaction():
        conn.execute(
            """
            INSERT INTO rejected_messages
                   (task_name, task_id, session_id, payload, error_code, error_message)
            VALUES (%s, %s, %s, %s, %s, %s)
            """,
            (task_name, task_id, session_id, Jsonb(payload), error.code, error.message[:2000]),
        )
        if mark_job and session_id and user_id and task_name == ANALYZE_TASK and task_id:
            # Its sender learns of the refusal as of any ending (when notifications are on).
            why = {"code": error.code, "message": error.message[:2000]}
            if notify_queue:
                outbox.tell_refused(conn, notify_queue, task_id, session_id, user_id, why)
    if mark_job and session_id and user_id and task_name == ANALYZE_TASK:
        fail_job(pool, session_id, user_id, error.code, error.message)


def fail_job(
    pool: ConnectionPool,
    session_id: UUID,
    user_id: UUID,
    code: str,
    message: str,
    task_id: str | None = None,
    notify_queue: str = "",
) -> None:
    """Mark the attempt failed: only the job's own user's session, and only while this
    request (``task_id``, when given) is the session's newest. Its good analysis stays.
    With ``notify_queue``, the request's notification commits with it (``outbox``)."""
    with pool.connection() as conn, conn.transaction():
        conn.execute(
            """
            UPDATE sessions SET status = 'failed', error_code = %s, error_message = %s,
                   finished_at = clock_timestamp(), updated_at = clock_timestamp()
             WHERE user_id = %s AND session_id = %s AND (%s::text IS NULL OR task_id = %s)
            """,
            (code, message[:2000], user_id, session_id, task_id, task_id),
        )
        if notify_queue and task_id:
            error = {"code": code, "message": message[:2000]}
            ending = outbox.Ending(session_id, user_id, Status.FAILED, error=error)
            outbox.tell(conn, notify_queue, ending, task_id=task_id)


def fail_unfinished(
    pool: ConnectionPool, job: AnalyzeJob, task_id: str, error: JobError, notify_queue: str = ""
) -> bool:
    """End a request that no worker will finish (its message dead-lettered): failed, only
    while it is still the session's newest and not ended by a run that did finish.
    Returns whether it was marked; its notification commits with it."""
    with pool.connection() as conn, conn.transaction():
        marked = conn.execute(
            """
            UPDATE sessions SET status = 'failed', error_code = %s, error_message = %s,
                   finished_at = clock_timestamp(), updated_at = clock_timestamp()
             WHERE session_id = %s AND user_id = %s AND task_id = %s
               AND status IN ('queued', 'running')
            """,
            (error.code, error.message[:2000], job.session_id, job.user_id, task_id),
        ).rowcount
        if marked and notify_queue:
            why = {"code": error.code, "message": error.message[:2000]}
            ending = outbox.Ending(job.session_id, job.user_id, Status.FAILED, error=why)
            outbox.tell(conn, notify_queue, ending, task_id=task_id)
    return bool(marked)
