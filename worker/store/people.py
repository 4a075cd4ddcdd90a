"""The ``users`` table as the worker sees it: is this person enrolled, or forgotten?

Every write for a person takes their lock first (``lock_user``: a row lock on their
``users`` row, which holds on the shard that holds it), so forget-user and a job's write
never interleave.
"""

from __future__ import annotations

from uuid import UUID

from psycopg_pool import ConnectionPool

from ...schema.errors import Code, JobError
from ...schema.status import Status
from .vectors import Conn

FORGOTTEN = Code.USER_FORGOTTEN


def lock_user(conn: Conn, user_id: UUID) -> None:
    conn.execute("SELECT lock_user(%s)", (user_id,))


def _refusal(standing: str) -> JobError | None:
    if standing == Status.FORGOTTEN:
        return JobError(FORGOTTEN, "this person was forgotten (forget-user); nothing was written")
    if standing == "unknown":
        return JobError(
            Code.UNKNOWN_USER,
            "no such person: enroll them first"
            " (python -m changewatch.producer enroll, or Producer.enroll)",
        )
    return None


def check_user(conn: Conn, user_id: UUID) -> None:
    row = conn.execute("SELECT user_standing(%s)", (user_id,)).fetchone()
    refusal = _refusal(str(row[0]) if row else "unknown")
    if refusal is not None:
        raise refusal


def admit(pool: ConnectionPool, user_id: UUID) -> None:
    """Refuse a job for a person who is not enrolled, or was forgotten: ``JobError``."""
    with pool.connection() as conn:
        check_user(conn, user_id)


def enroll(pool: ConnectionPool, user_id: UUID) -> None:
    """Enroll the person (idempotent, under their lock); a forgotten one is refused."""
    with pool.connection() as conn, conn.transaction():
        row = conn.execute("SELECT enroll_user(%s)", (user_id,)).fetchone()
    refusal = _refusal(str(row[0]) if row else "unknown")
    if refusal is not None:
        raise refusal
