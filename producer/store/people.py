"""The ``users`` table from the producer's side: enrolling a person, and forgetting one.

forget-user takes the person's lock (``lock_user``, a row lock on their ``users`` row)
first, as every worker write does, so a write for them either commits before the forget
or finds them gone.
"""

from __future__ import annotations

from uuid import UUID

from ...schema.errors import Code, JobError
from ...schema.forgetting.rows import Forgotten, forget, left
from ...schema.status import Status
from . import Conn


def enroll(conn: Conn, user_id: UUID) -> None:
    """Enroll the person (idempotent), unless forget-user was run for them."""
    row = conn.execute("SELECT enroll_user(%s) AS standing", (user_id,)).fetchone()
    assert row is not None
    if row["standing"] == Status.FORGOTTEN:
        raise JobError(Code.USER_FORGOTTEN, "this person was forgotten (forget-user); not enqueued")


__all__ = ["Forgotten", "enroll", "forget", "left"]
