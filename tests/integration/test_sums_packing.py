"""The person's sums as stored (packed, schema.vectors): rows written before the packing
(raw big-endian int64) still read back, the next checkpoint packs them, and every number
stays what the whole history computed from scratch gives (no worker process: the store
is called as the worker calls it)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
from psycopg_pool import ConnectionPool

from changewatch.schema.contract import AnalyzeJob, S3Uri
from changewatch.schema.vectors import SUM_MARKER, decode_sum
from changewatch.worker import score, store
from changewatch.worker.score import StoredSession, Totals, analyze_history, stored_values
from changewatch.worker.store.analyses import SUMS_EVERY, Target, open_write
from changewatch.worker.store.jobs import NEWEST_REQUEST

MODEL, DIM = "sums-packing-test/a", 64
T0 = datetime(2026, 3, 2, tzinfo=UTC)


def _write(pool: ConnectionPool, user: uuid.UUID, session: StoredSession) -> None:
    images = {a: S3Uri("bucket", f"{user}/{session.session_id}/{a}.jpg") for a in session.angles}
    job = AnalyzeJob(user, session.session_id, session.captured_at, images)
    seq = store.start_job(pool, job, f"task-{session.session_id}")
    assert isinstance(seq, int)
    target = Target(user, session.session_id, session.captured_at, MODEL, seq)
    with pool.connection() as conn, conn.transaction():
        _, write = open_write(conn, NEWEST_REQUEST, target)
        write.save(score.rescore(write.history, session), session.angles, ())


def _same_sums(sums: Totals | None, rebuilt: Totals) -> None:
    assert sums is not None and sums.sessions == rebuilt.sessions
    for mine, theirs in ((sums.angles, rebuilt.angles), (sums.regions, rebuilt.regions)):
        assert mine.keys() == theirs.keys()
        for angle, (count, total) in mine.items():
            assert count == theirs[angle][0] and np.array_equal(total, theirs[angle][1])


def test_raw_sums_read_back_and_the_next_checkpoint_packs_them(database_url: str) -> None:
    user, rng = uuid.uuid4(), np.random.default_rng(11)
    sessions = [
        StoredSession(
            uuid.uuid4(),
            T0 + timedelta(days=i),
            {a: rng.gamma(1.0, 0.5, DIM).astype(np.float32) for a in ("front", "left")},
            regions={a: rng.normal(size=(9, 8)).astype(np.float32) for a in ("front", "left")},
        )
        for i in range(2 * SUMS_EVERY + 2)
    ]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT enroll_user(%s)", (user,))
        conn.execute("INSERT INTO models (model_id, embedding_dim) VALUES (%s, %s)", (MODEL, DIM))
    try:
        with ConnectionPool(database_url, min_size=1, max_size=2) as pool:
            for session in sessions[:SUMS_EVERY]:
                _write(pool, user, session)
            with pool.connection() as conn:
                # As a release before the packing stored them: raw big-endian int64.
                rows = conn.execute(
                    "SELECT angle, total, region_total FROM baseline_sums"
                    " WHERE user_id = %s AND model_id = %s AND angle <> 'session'",
                    (user, MODEL),
                ).fetchall()
                assert rows and all(bytes(t[:8]) == SUM_MARKER for _, t, _ in rows)
                for angle, total, regions in rows:
                    conn.execute(
                        "UPDATE baseline_sums SET total = %s, region_total = %s"
                        " WHERE user_id = %s AND model_id = %s AND angle = %s",
                        (
                            decode_sum(total).astype(">i8").tobytes(),
                            decode_sum(regions).astype(">i8").tobytes(),
                            user,
                            MODEL,
                            angle,
                        ),
                    )
                _same_sums(
                    store.load_totals(conn, user, MODEL), store.rebuild_totals(conn, user, MODEL)
                )
            for session in sessions[SUMS_EVERY:]:  # past the next checkpoint
                _write(pool, user, session)
            with pool.connection() as conn:
                stored = conn.execute(
                    "SELECT total, region_total FROM baseline_sums"
                    " WHERE user_id = %s AND model_id = %s AND angle <> 'session'",
                    (user, MODEL),
                ).fetchall()
                assert all(bytes(t[:8]) == SUM_MARKER == bytes(r[:8]) for t, r in stored)
                assert all(len(t) < 8 * DIM and len(r) < 8 * 9 * 8 for t, r in stored)
                _same_sums(
                    store.load_totals(conn, user, MODEL), store.rebuild_totals(conn, user, MODEL)
                )
                found = conn.execute(
                    "SELECT session_id, change_score, is_first_session, baseline_session_count,"
                    " per_angle FROM analyses WHERE user_id = %s AND model_id = %s",
                    (user, MODEL),
                ).fetchall()
        expected = {a.session_id: stored_values(a) for a in analyze_history(sessions)}
        assert {r[0]: tuple(r[1:]) for r in found} == expected
    finally:  # nothing left for the other tests' backfills and model lists to find
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("DELETE FROM users WHERE user_id = %s", (user,))
            conn.execute("DELETE FROM models WHERE model_id = %s", (MODEL,))
