"""Migration 0004 on a database written by the previous release: nothing is lost, and
the next write continues the same numbers from the migrated history."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from bench.harness.services import recreate_database
from changewatch.schema.contract import AnalyzeJob, S3Uri
from changewatch.schema.migrate import migrate
from changewatch.worker import pipeline, store
from changewatch.worker.score import StoredSession, analyze_history

MODEL = "resnet50/old-weights/prep1"
T0 = datetime(2025, 5, 1, tzinfo=UTC)


@pytest.fixture
def old_database(database_url: str) -> str:
    url = psycopg.conninfo.make_conninfo(database_url, dbname="changewatch_test_migrate")
    recreate_database(url)
    migrate(url, until="0003_rejected_messages")
    return url


def test_0004_keeps_the_history_and_the_next_write_continues_it(old_database: str) -> None:
    rng = np.random.default_rng(3)
    user = uuid.uuid4()
    history = []
    with psycopg.connect(old_database) as conn:
        for i in range(3):
            sid = uuid.uuid4()
            angles = {a: rng.random(8).astype(np.float32) for a in ("front", "left", "right")}
            history.append(StoredSession(sid, T0 + timedelta(days=7 * i), angles))
            conn.execute(
                "INSERT INTO sessions (session_id, user_id, captured_at, images, status, task_id)"
                " VALUES (%s, %s, %s, %s, 'succeeded', %s)",
                (sid, user, T0 + timedelta(days=7 * i), Jsonb({}), f"task-{i}"),
            )
            for angle, vector in angles.items():
                conn.execute(
                    "INSERT INTO angle_embeddings (session_id, angle, model_id, embedding)"
                    " VALUES (%s, %s, %s, %s)",
                    (sid, angle, MODEL, vector.tolist()),
                )
            conn.execute(
                "INSERT INTO analyses (session_id, model_id, embedding_dim, change_score,"
                " is_first_session, baseline_session_count, per_angle)"
                " VALUES (%s, %s, 8, 0.5, %s, %s, '[]')",
                (sid, MODEL, i == 0, i),
            )
    assert migrate(old_database)[0] == "0004_versioned_store"

    with psycopg.connect(old_database) as conn:
        assert conn.execute("SELECT model_id FROM models WHERE active").fetchone() == (MODEL,)
        for item in history:
            rows = dict(
                conn.execute(
                    "SELECT angle, embedding FROM angle_embeddings WHERE session_id = %s",
                    (item.session_id,),
                ).fetchall()
            )
            for angle, vector in item.angles.items():
                assert np.array_equal(store.decode_vector(rows[angle]), vector)
        good = conn.execute(
            "SELECT count(*) FROM sessions WHERE user_id = %s AND good_request_seq IS NOT NULL"
            " AND good_captured_at = captured_at AND request_seq = good_request_seq",
            (user,),
        ).fetchone()
        assert good == (3,)

    # The next session: sums are rebuilt from the migrated embeddings, and its numbers
    # are those of the whole history computed from scratch.
    sid = uuid.uuid4()
    job = AnalyzeJob(
        user, sid, T0 + timedelta(days=30), {a: S3Uri("b", f"{user}/{a}") for a in ("front", "up")}
    )
    angles = {a: rng.random(8).astype(np.float32) for a in ("front", "up")}
    with ConnectionPool(old_database, min_size=1, max_size=1) as pool:
        seq = store.start_job(pool, job, "task-new")
        assert isinstance(seq, int)
        with store.analysis_write(pool, job, seq, MODEL) as write:
            saved = pipeline.score_and_save(write, angles)
    expected = analyze_history([*history, StoredSession(sid, job.captured_at, angles)])[-1]
    assert saved == expected
    assert saved.baseline_session_count == 3
    with psycopg.connect(old_database) as conn:
        assert store.history_scores(conn, user, MODEL)[-1] == expected
