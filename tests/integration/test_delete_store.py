"""The delete's transaction on Postgres, under two models: every model's stored numbers
and sums become those of the history without the session, and its id never writes
again (no worker process: the store is called as the worker calls it)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest
from psycopg_pool import ConnectionPool

from changewatch.schema.contract import AnalyzeJob, DeleteJob, S3Uri
from changewatch.schema.errors import JobError
from changewatch.worker import score, store
from changewatch.worker.score import StoredSession, analyze_history, stored_values
from changewatch.worker.store.analyses import Target, open_write
from changewatch.worker.store.jobs import NEWEST_REQUEST

MODELS = {"delete-test/a": 24, "delete-test/b": 40}
T0 = datetime(2026, 2, 2, tzinfo=UTC)
# Angles in the contract's order, as every job gives them.
ANGLE_SETS = [("front", "left", "right"), ("front", "left", "right", "up"), ("front", "up", "down")]


def _job(user: uuid.UUID, session: StoredSession) -> AnalyzeJob:
    images = {a: S3Uri("bucket", f"{user}/{session.session_id}/{a}.jpg") for a in session.angles}
    return AnalyzeJob(user, session.session_id, session.captured_at, images)


def _write(pool: ConnectionPool, user: uuid.UUID, session: StoredSession, model: str) -> None:
    """One model's analysis of the session, written as the worker writes it."""
    seq = store.start_job(pool, _job(user, session), f"task-{model}-{session.session_id}")
    assert isinstance(seq, int)
    target = Target(user, session.session_id, session.captured_at, model, seq)
    with pool.connection() as conn, conn.transaction():
        _, write = open_write(conn, NEWEST_REQUEST, target)
        write.save(score.rescore(write.history, session), session.angles, ())


def _stored(pool: ConnectionPool, user: uuid.UUID, model: str) -> dict[uuid.UUID, tuple]:
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT session_id, change_score, is_first_session, baseline_session_count,"
            " per_angle FROM analyses WHERE user_id = %s AND model_id = %s",
            (user, model),
        ).fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def test_delete_rescores_every_model_and_refuses_the_id_afterwards(database_url: str) -> None:
    user, rng = uuid.uuid4(), np.random.default_rng(5)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT enroll_user(%s)", (user,))
        for model, dim in MODELS.items():  # never active: the suite's worker model stays so
            conn.execute(
                "INSERT INTO models (model_id, embedding_dim) VALUES (%s, %s)", (model, dim)
            )
    try:
        _delete_under_two_models(database_url, user, rng)
    finally:  # nothing left for the other tests' backfills and model lists to find
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("DELETE FROM users WHERE user_id = %s", (user,))
            conn.execute("DELETE FROM models WHERE model_id = ANY(%s)", (list(MODELS),))


def _delete_under_two_models(database_url: str, user: uuid.UUID, rng: np.random.Generator) -> None:
    ids = [uuid.uuid4() for _ in range(6)]
    histories = {  # the same sessions, embedded by each model
        model: [
            StoredSession(
                sid,
                T0 + timedelta(days=3 * i),
                {a: rng.normal(size=dim).astype(np.float32) for a in ANGLE_SETS[i % 3]},
                regions={a: rng.normal(size=(9, 8)).astype(np.float32) for a in ANGLE_SETS[i % 3]},
            )
            for i, sid in enumerate(ids)
        ]
        for model, dim in MODELS.items()
    }
    gone = ids[2]
    with ConnectionPool(database_url, min_size=1, max_size=2) as pool:
        for model, sessions in histories.items():
            for session in random.Random(1).sample(sessions, len(sessions)):  # any order
                _write(pool, user, session, model)

        done = store.delete_session(pool, DeleteJob(user, gone))
        assert done.counts["analyses"] == 2 and done.counts["sessions"] == 1
        assert set(done.rescored) == set(MODELS) and all(done.rescored.values())
        for model, sessions in histories.items():
            expected = analyze_history([s for s in sessions if s.session_id != gone])
            assert _stored(pool, user, model) == {a.session_id: stored_values(a) for a in expected}
            with pool.connection() as conn:
                sums = store.load_totals(conn, user, model)
                rebuilt = store.rebuild_totals(conn, user, model)
            assert sums is not None and sums.sessions == rebuilt.sessions == 5
            assert sums.angles.keys() == rebuilt.angles.keys()
            for angle, (count, total) in sums.angles.items():
                assert count == rebuilt.angles[angle][0]
                assert np.array_equal(total, rebuilt.angles[angle][1])
            for angle, (count, total) in sums.regions.items():  # region sums likewise
                assert count == rebuilt.regions[angle][0]
                assert np.array_equal(total, rebuilt.regions[angle][1])

        assert store.delete_session(pool, DeleteJob(user, gone)).already  # sent again
        late = histories["delete-test/a"][2]
        with pytest.raises(JobError) as refused:
            store.start_job(pool, _job(user, late), "a-late-task")
        assert refused.value.code == "session_deleted"
        with pool.connection() as conn:
            assert conn.execute(
                "SELECT count(*) FROM sessions WHERE session_id = %s", (gone,)
            ).fetchone() == (0,)
        with pytest.raises(JobError) as other:
            store.delete_session(pool, DeleteJob(uuid.uuid4(), ids[3]))
        assert other.value.code in ("unknown_user", "session_of_other_user")
