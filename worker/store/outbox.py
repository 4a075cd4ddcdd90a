"""The ``outbox`` table: notifications written with the job's outcome, sent by the relay.

A notification row is inserted in the transaction that finishes the job, after its
session row is locked (the analysis write, the failure's update), so for one session the
rows' ids follow the order their requests ended, and a row exists if and only if the
outcome committed. ``analysis_requests.notified`` tells each request once; a request
ending tells the older ones not yet told first, as ``superseded``.

The relay (``worker.relay``) reads rows in id order under one advisory lock for the
whole deployment (one sender at a time keeps each session in order), sends them, and
deletes them once the broker took them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from ...schema import notification
from ...schema.status import Status
from .vectors import Conn

# The requests of the session up to this one (by seq, or by its task id) not yet told.
_OWED_SQL = """
    UPDATE analysis_requests SET notified = true
     WHERE user_id = %(uid)s AND session_id = %(sid)s AND NOT notified
       AND seq <= COALESCE(%(seq)s::bigint,
                           (SELECT seq FROM analysis_requests
                             WHERE user_id = %(uid)s AND task_id = %(task)s))
    RETURNING task_id, seq
"""
_INSERT_SQL = """
    INSERT INTO outbox (message_id, user_id, session_id, queue, body)
    VALUES (%s, %s, %s, %s, %s)
"""
# A refused message is told only while its person is enrolled (the outbox row hangs off
# them; one never enrolled or forgotten is told nothing).
_INSERT_IF_ENROLLED_SQL = """
    INSERT INTO outbox (message_id, user_id, session_id, queue, body)
    SELECT %s, %s, %s, %s, %s WHERE EXISTS (SELECT 1 FROM users WHERE user_id = %s)
"""
# The relay's one-at-a-time lock (any constant key; the person locks use hashes of ids).
RELAY_LOCK = 0x6368_616E_6765  # "change"


@dataclass(frozen=True)
class Ending:
    """How one request ended: what its own notification says."""

    session_id: UUID
    user_id: UUID
    status: str
    result: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    superseded_by: str | None = None


def tell(
    conn: Conn, queue: str, ending: Ending, *, seq: int | None = None, task_id: str | None = None
) -> int:
    """Inside the transaction that ends the request (``seq`` or ``task_id``): write its
    notification, after a ``superseded`` one for each older request not yet told.
    Returns the rows written (0 when it was told already)."""
    owed = conn.execute(
        _OWED_SQL, {"uid": ending.user_id, "sid": ending.session_id, "seq": seq, "task": task_id}
    ).fetchall()
    owed.sort(key=lambda row: row[1])
    if not owed:
        return 0
    # Telling a request tells every older one, so when any is owed, this one is the newest.
    mine = str(owed[-1][0])
    rows = []
    for request, _ in owed:
        if request == mine:
            body = notification.body(
                session_id=ending.session_id,
                user_id=ending.user_id,
                request_task_id=request,
                status=ending.status,
                result=ending.result,
                error=ending.error,
                superseded_by=ending.superseded_by,
            )
        else:
            body = notification.superseded(ending.session_id, ending.user_id, request, mine)
        rows.append(
            (body["notification_id"], ending.user_id, ending.session_id, queue, Jsonb(body))
        )
    with conn.cursor() as cur:
        cur.executemany(_INSERT_SQL, rows)
    return len(rows)


def tell_superseded(
    pool: ConnectionPool, queue: str, session_id: UUID, user_id: UUID, task_id: str, newer: str
) -> None:
    """A request that found a newer one recorded first ends ``superseded``, told now
    unless the newer one's ending told it already."""
    with pool.connection() as conn, conn.transaction():
        conn.execute(
            "SELECT 1 FROM sessions WHERE user_id = %s AND session_id = %s FOR UPDATE",
            (user_id, session_id),
        )
        ending = Ending(session_id, user_id, Status.SUPERSEDED, superseded_by=newer)
        tell(conn, queue, ending, task_id=task_id)


def tell_refused(
    conn: Conn, queue: str, task_id: str, session_id: UUID, user_id: UUID, error: dict[str, str]
) -> None:
    """A message refused before it became a request: told ``failed`` with its code."""
    body = notification.body(
        session_id=session_id,
        user_id=user_id,
        request_task_id=task_id,
        status=Status.FAILED,
        error=error,
    )
    tell_if_enrolled(conn, queue, body)


def tell_if_enrolled(conn: Conn, queue: str, body: dict[str, Any]) -> None:
    """One notification outside the request order (a refusal, a comparison)."""
    user_id = UUID(body["user_id"])
    conn.execute(
        _INSERT_IF_ENROLLED_SQL,
        (body["notification_id"], user_id, UUID(body["session_id"]), queue, Jsonb(body), user_id),
    )


@dataclass(frozen=True)
class Pending:
    id: int
    message_id: UUID
    user_id: UUID  # whose broker it goes to (schema/routing.py)
    queue: str
    body: dict[str, Any]


def pending(conn: Conn, limit: int) -> list[Pending]:
    rows = conn.execute(
        "SELECT id, message_id, user_id, queue, body FROM outbox ORDER BY id LIMIT %s",
        (limit,),
    ).fetchall()
    return [Pending(*row) for row in rows]


def sent(conn: Conn, ids: list[int]) -> None:
    conn.execute("DELETE FROM outbox WHERE id = ANY(%s)", (ids,))


def not_sent(conn: Conn, row_id: int, why: str) -> None:
    conn.execute(
        "UPDATE outbox SET attempts = attempts + 1, last_error = %s WHERE id = %s",
        (why[:500], row_id),
    )


def try_relay_lock(conn: Conn) -> bool:
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (RELAY_LOCK,)).fetchone()
    return bool(row and row[0])


def relay_unlock(conn: Conn) -> None:
    conn.execute("SELECT pg_advisory_unlock(%s)", (RELAY_LOCK,))


def count(pool: ConnectionPool) -> int:
    with pool.connection() as conn:
        row = conn.execute("SELECT count(*) FROM outbox").fetchone()
    return int(row[0]) if row else 0
