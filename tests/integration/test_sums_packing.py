"""The person's sums as stored: packed, in ``packed_sums`` (schema.vectors, migration
0012). A worker of the release before, still running during an upgrade, stores raw sums
in ``baseline_sums`` after rebuilding them (it never sees a packed one); this release
takes those as the newest and packs them at its next checkpoint. Every number stays what
the whole history computed from scratch gives (no worker process: the store is called as
the worker calls it)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
from psycopg_pool import ConnectionPool

from changewatch.schema.contract import AnalyzeJob, S3Uri
from changewatch.schema.vectors import SUM_MARKER
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


def _rows(conn: psycopg.Connection, table: str, user: uuid.UUID) -> list[tuple[bytes, bytes]]:
    return conn.execute(
        f"SELECT total, region_total FROM {table}"
        " WHERE user_id = %s AND model_id = %s AND angle <> 'session'",
        (user, MODEL),
    ).fetchall()


def _as_the_release_before(conn: psycopg.Connection, user: uuid.UUID) -> None:
    """What a worker of the release before stores at its write: it finds no sums in
    baseline_sums, rebuilds them from every embedding, stores them raw (big-endian
    int64) and marks every analysis summed."""
    totals = store.rebuild_totals(conn, user, MODEL)
    rows = [(user, MODEL, "session", totals.sessions, None, 0, None)] + [
        (
            user,
            MODEL,
            angle,
            count,
            total.astype(">i8").tobytes(),
            totals.regions[angle][0],
            totals.regions[angle][1].astype(">i8").tobytes(),
        )
        for angle, (count, total) in totals.angles.items()
    ]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO baseline_sums (user_id, model_id, angle, sessions, total,"
            " region_sessions, region_total) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            rows,
        )
    conn.execute(
        "UPDATE analyses SET summed = true WHERE user_id = %s AND model_id = %s", (user, MODEL)
    )


def test_sums_are_packed_and_stay_exact_beside_a_worker_of_the_release_before(
    database_url: str,
) -> None:
    user, rng = uuid.uuid4(), np.random.default_rng(11)
    sessions = [
        StoredSession(
            uuid.uuid4(),
            T0 + timedelta(days=i),
            {a: rng.gamma(1.0, 0.5, DIM).astype(np.float32) for a in ("front", "left")},
            regions={a: rng.normal(size=(9, 8)).astype(np.float32) for a in ("front", "left")},
        )
        for i in range(2 * SUMS_EVERY + 3)
    ]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT enroll_user(%s)", (user,))
        conn.execute("INSERT INTO models (model_id, embedding_dim) VALUES (%s, %s)", (MODEL, DIM))
    try:
        with ConnectionPool(database_url, min_size=1, max_size=2) as pool:
            for session in sessions[: SUMS_EVERY + 2]:
                _write(pool, user, session)
            with pool.connection() as conn:
                packed = _rows(conn, "packed_sums", user)
                assert packed and not _rows(conn, "baseline_sums", user)
                assert all(bytes(t[:8]) == SUM_MARKER == bytes(r[:8]) for t, r in packed)
                assert all(len(t) < 8 * DIM and len(r) < 8 * 9 * 8 for t, r in packed)
                _same_sums(
                    store.load_totals(conn, user, MODEL), store.rebuild_totals(conn, user, MODEL)
                )
            # A worker of the release before writes the next session: raw sums, newer
            # than the packed ones, which this release must not add to.
            _write(pool, user, sessions[SUMS_EVERY + 2])
            with pool.connection() as conn:
                _as_the_release_before(conn, user)
                assert _rows(conn, "baseline_sums", user)
                _same_sums(
                    store.load_totals(conn, user, MODEL), store.rebuild_totals(conn, user, MODEL)
                )
            for session in sessions[SUMS_EVERY + 3 :]:  # past this release's next checkpoint
                _write(pool, user, session)
            with pool.connection() as conn:
                assert not _rows(conn, "baseline_sums", user)  # packed again
                assert all(bytes(t[:8]) == SUM_MARKER for t, _ in _rows(conn, "packed_sums", user))
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
