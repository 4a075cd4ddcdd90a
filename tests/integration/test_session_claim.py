"""A session id is one person's, also when two people send the same new id at once.

The person's tables are keyed by (user_id, session_id) (Citus-ready), so two first
claims of one id by two people do not collide on a key: neither transaction sees the
other's uncommitted row. The claim lock makes the second wait for the first and then
refuse, on the producer's path and on the worker's (a job sent straight to the broker).
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from changewatch.producer.store import sessions
from changewatch.producer.store.people import enroll
from changewatch.schema.contract import AnalyzeJob, S3Uri
from changewatch.schema.errors import Code, JobError
from changewatch.worker import store
from tests.helpers import T0

HOLD_S = 1.0


def _job(user: uuid.UUID, session: uuid.UUID) -> AnalyzeJob:
    return AnalyzeJob(
        user_id=user,
        session_id=session,
        captured_at=T0,
        images={"front": S3Uri("bucket", f"{user}/{session}/front.jpg")},
    )


def _owners(database_url: str, session: uuid.UUID) -> list[Any]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT user_id FROM sessions WHERE session_id = %s", (session,))
        return [r[0] for r in rows.fetchall()]


def _first_claim_held_open(database_url: str, job: AnalyzeJob, claimed: threading.Event) -> None:
    """The producer records ``job`` and keeps its transaction open for HOLD_S."""
    with psycopg.connect(database_url, row_factory=dict_row) as conn, conn.transaction():
        sessions.record_request(conn, job, f"first-{uuid.uuid4()}")
        claimed.set()
        threading.Event().wait(HOLD_S)


@pytest.mark.parametrize("second", ["producer", "worker"])
def test_two_people_claiming_one_new_session_id_at_once_one_is_refused(
    database_url: str, second: str
) -> None:
    session = uuid.uuid4()
    first, other = _job(uuid.uuid4(), session), _job(uuid.uuid4(), session)
    claimed = threading.Event()
    holder = threading.Thread(target=_first_claim_held_open, args=(database_url, first, claimed))
    holder.start()
    assert claimed.wait(10)
    try:
        with pytest.raises(JobError) as refused:
            if second == "producer":
                with psycopg.connect(database_url, row_factory=dict_row) as conn:
                    sessions.record_request(conn, other, f"second-{uuid.uuid4()}")
            else:
                with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
                    enroll(conn, other.user_id)
                with ConnectionPool(database_url, min_size=1, max_size=1) as pool:
                    store.start_job(pool, other, f"second-{uuid.uuid4()}")
        assert refused.value.code == Code.SESSION_OF_OTHER_USER
    finally:
        holder.join()
    assert _owners(database_url, session) == [first.user_id]
