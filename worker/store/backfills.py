"""The ``backfill_jobs`` table: re-embedding stored sessions with another model.

Every outcome is recorded on the session's row, so one session's failure never stops a
backfill, and a finished session is never embedded twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import numpy as np
from psycopg_pool import ConnectionPool

from ...schema.errors import JobError
from ...schema.status import Status
from ..score import Analysis, Rescore
from .analyses import Statement, Target, Write, open_write
from .jobs import Superseded


@dataclass(frozen=True)
class BackfillSource:
    """What a backfill re-embeds: the session's last good request."""

    session_id: UUID
    user_id: UUID
    captured_at: datetime
    images: dict[str, str]
    request_seq: int
    done: bool  # this model already has the analysis of that request

    def target(self, model_id: str) -> Target:
        return Target(self.user_id, self.session_id, self.captured_at, model_id, self.request_seq)


def start_backfill(pool: ConnectionPool, session_id: UUID, model_id: str) -> BackfillSource | None:
    """Mark the backfill running; None when the session has no good analysis to re-embed."""
    with pool.connection() as conn, conn.transaction():
        row = conn.execute(
            """
            SELECT s.user_id, s.good_captured_at, s.good_images, s.good_request_seq,
                   a.request_seq IS NOT DISTINCT FROM s.good_request_seq AS done
              FROM sessions s
              LEFT JOIN analyses a ON a.session_id = s.session_id AND a.model_id = %s
             WHERE s.session_id = %s AND s.good_request_seq IS NOT NULL
            """,
            (model_id, session_id),
        ).fetchone()
        conn.execute(
            "UPDATE backfill_jobs SET status = 'running', attempts = attempts + 1,"
            " updated_at = clock_timestamp() WHERE session_id = %s AND model_id = %s",
            (session_id, model_id),
        )
    if row is None:
        return None
    user_id, at, images, seq, done = row
    return BackfillSource(session_id, user_id, at, images, int(seq), bool(done))


def _outcome(session_id: UUID, model_id: str, error: JobError | None) -> Statement:
    return (
        "UPDATE backfill_jobs SET status = %s, error_code = %s, error_message = %s,"
        " updated_at = clock_timestamp() WHERE session_id = %s AND model_id = %s",
        (
            Status.FAILED if error else Status.SUCCEEDED,
            error.code if error else None,
            error.message[:2000] if error else None,
            session_id,
            model_id,
        ),
    )


def finish_backfill(
    pool: ConnectionPool, session_id: UUID, model_id: str, error: JobError | None = None
) -> None:
    with pool.connection() as conn:
        conn.execute(*_outcome(session_id, model_id, error))


@contextmanager
def backfill_write(
    pool: ConnectionPool, source: BackfillSource, model_id: str
) -> Iterator[Write | Superseded]:
    """Open the write of ``model_id``'s analysis of the session's good request; yields
    ``Superseded`` when a newer good analysis arrived meanwhile (the next pass takes it)."""
    with pool.connection() as conn, conn.transaction():
        guard, write = open_write(
            conn,
            "SELECT good_request_seq, good_task_id FROM sessions"
            " WHERE session_id = %(sid)s FOR UPDATE",
            source.target(model_id),
        )
        if guard is None or guard[0] != source.request_seq:
            yield Superseded(source.session_id, guard[1] if guard else None)
            return
        yield write


def save_backfill(write: Write, scored: Rescore, embeddings: dict[str, np.ndarray]) -> Analysis:
    """Store the scored analysis and mark the session's backfill succeeded, in one go."""
    t = write.target
    return write.save(scored, embeddings, (_outcome(t.session_id, t.model_id, None),))
