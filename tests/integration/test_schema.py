"""Migrations and the keys that keep the data consistent."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from changewatch.schema.migrate import migrate, migration_files
from changewatch.schema.results import _EARLIER
from tests.helpers import run_module


def test_migrate_twice_applies_nothing_new(database_url: str) -> None:
    """`python -m changewatch.schema migrate` is safe to run on every deploy."""
    assert migrate(database_url) == []
    with psycopg.connect(database_url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    assert versions == [v for v, _ in migration_files()]


def test_migrate_command_line(database_url: str) -> None:
    """The documented command exits 0 and reports it is up to date."""
    proc = run_module("changewatch.schema", "migrate")
    assert proc.returncode == 0, proc.stderr
    assert "up to date" in proc.stderr


def test_keys_make_duplicate_embeddings_impossible(database_url: str) -> None:
    """A session has one embedding per angle, whatever a buggy writer tries."""
    sid, uid = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO users (user_id) VALUES (%s)", (uid,))
        conn.execute(
            "INSERT INTO sessions (session_id, user_id, captured_at, images)"
            " VALUES (%s, %s, now(), '{}')",
            (sid, uid),
        )
        conn.execute(
            "INSERT INTO models (model_id, embedding_dim) VALUES ('m', 1) ON CONFLICT DO NOTHING"
        )
        insert = (
            "INSERT INTO angle_embeddings (user_id, session_id, angle, model_id, embedding)"
            " VALUES (%s, %s, 'front', 'm', float4send(1.0))"
        )
        conn.execute(insert, (uid, sid))
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(insert, (uid, sid))
        conn.rollback()
    with psycopg.connect(database_url) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "INSERT INTO sessions (session_id, user_id, captured_at, images, status)"
            " VALUES (%s, %s, now(), '{}', 'done')",
            (uuid.uuid4(), uid),
        )


def test_a_person_s_earlier_analyses_are_read_through_an_index(database_url: str) -> None:
    """'This person's analyses before T' (results, baselines) is served by the person's
    time index on analyses, not a scan: sessions keeps no time index of its own (0013)."""
    uid, model = uuid.uuid4(), f"test-schema-{uuid.uuid4()}"
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO users (user_id) VALUES (%s)", (uid,))
        conn.execute("INSERT INTO models (model_id, embedding_dim) VALUES (%s, 8)", (model,))
        conn.execute(
            "INSERT INTO sessions (session_id, user_id, captured_at, images)"
            " SELECT gen_random_uuid(), %s, now() - make_interval(days => n), '{}'"
            "   FROM generate_series(1, 2000) AS n",
            (uid,),
        )
        conn.execute(
            "INSERT INTO analyses (session_id, model_id, user_id, captured_at, embedding_dim,"
            " change_score, is_first_session, baseline_session_count, per_angle)"
            " SELECT session_id, %s, user_id, captured_at, 8, 0.1, false, 1, '[]'"
            "   FROM sessions WHERE user_id = %s",
            (model, uid),
        )
        conn.execute("ANALYZE sessions")
        conn.execute("ANALYZE analyses")
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                "EXPLAIN " + _EARLIER,
                {
                    "uid": uid,
                    "model": model,
                    "at": datetime.now(UTC) - timedelta(days=1990),
                    "n": 5,
                },
            )
        )
        indexes = {
            r[0]
            for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'sessions'")
        }
        conn.rollback()
    assert "analyses_history_idx" in plan
    assert indexes == {"sessions_pkey", "sessions_session_idx", "sessions_status_idx"}


@pytest.fixture(scope="module")
def login_as(database_url: str) -> Iterator[Callable[[str], psycopg.Connection[Any]]]:
    """Login roles that belong to the migrations' group roles, for this test only."""
    made: list[str] = []

    def connect(group: str) -> psycopg.Connection[Any]:
        name = f"cw_test_{group}"
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(f"DROP ROLE IF EXISTS {name}")
            admin.execute(f"CREATE ROLE {name} LOGIN IN ROLE changewatch_{group}")
        made.append(name)
        return psycopg.connect(
            psycopg.conninfo.make_conninfo(database_url, user=name), autocommit=True
        )

    yield connect
    with psycopg.connect(database_url, autocommit=True) as admin:
        for name in made:
            admin.execute(f"DROP OWNED BY {name}")
            admin.execute(f"DROP ROLE IF EXISTS {name}")


def test_producer_role_can_enqueue_and_read_but_not_write_results(
    login_as: Callable[[str], psycopg.Connection[Any]],
) -> None:
    """A leaked producer credential cannot forge analyses or change the schema."""
    sid, uid = uuid.uuid4(), uuid.uuid4()
    with login_as("producer") as conn:
        assert conn.execute("SELECT enroll_user(%s)", (uid,)).fetchone() == ("enrolled",)
        conn.execute(
            "INSERT INTO sessions (session_id, user_id, captured_at, images)"
            " VALUES (%s, %s, now(), '{}')",
            (sid, uid),
        )
        assert conn.execute("SELECT count(*) FROM analyses").fetchone() is not None
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "INSERT INTO analyses (session_id, model_id, embedding_dim, change_score,"
                " is_first_session, baseline_session_count, per_angle)"
                " VALUES (%s, 'm', 1, 0, true, 0, '[]')",
                (sid,),
            )
        for ddl in (
            "CREATE TABLE sneaky (x int)",
            "ALTER TABLE sessions ADD COLUMN x int",
            "DROP TABLE analyses",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(ddl)


def test_worker_role_writes_analyses_but_cannot_delete_jobs_or_alter(
    login_as: Callable[[str], psycopg.Connection[Any]],
) -> None:
    """The worker can do its job and nothing more."""
    with login_as("worker") as conn:
        conn.execute("SELECT count(*) FROM angle_embeddings")
        conn.execute("UPDATE sessions SET updated_at = now() WHERE false")
        for sql in (
            "DELETE FROM sessions",
            "ALTER TABLE analyses DROP COLUMN per_angle",
            "SELECT * FROM schema_migrations",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql)


def test_migrate_creates_the_services_login_roles(database_url: str) -> None:
    """Compose's migrate step makes the worker's and producer's logins; run twice it
    updates them. Each can log in and holds its group's rights, and only those."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "CHANGEWATCH_WORKER_DB_PASSWORD": "w-Secret-1",
        "CHANGEWATCH_PRODUCER_DB_PASSWORD": "p-Secret-1",
    }
    args = ["migrate", "--worker-login", "cw_svc_worker", "--producer-login", "cw_svc_producer"]
    with psycopg.connect(database_url, autocommit=True) as admin:  # left by a killed run
        admin.execute("DROP ROLE IF EXISTS cw_svc_worker, cw_svc_producer")
    try:
        for verb in ("created", "updated"):
            proc = run_module("changewatch.schema", *args, env=env)
            assert proc.returncode == 0, proc.stderr
            assert f"{verb} login cw_svc_worker in changewatch_worker" in proc.stderr
            assert "Secret" not in proc.stderr + proc.stdout
        with psycopg.connect(database_url) as conn:
            stored = conn.execute(
                "SELECT rolpassword FROM pg_authid WHERE rolname = 'cw_svc_worker'"
            ).fetchone()[0]
            assert stored.startswith("SCRAM-SHA-256$")  # a hash, never the password
        url = psycopg.conninfo.make_conninfo(database_url, user="cw_svc_worker")
        with psycopg.connect(url) as conn:
            conn.execute("SELECT count(*) FROM analyses")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("DELETE FROM sessions")
        url = psycopg.conninfo.make_conninfo(database_url, user="cw_svc_producer")
        with psycopg.connect(url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM analyses")

        proc = run_module(
            "changewatch.schema", *args, env={**env, "CHANGEWATCH_WORKER_DB_PASSWORD": ""}
        )
        assert proc.returncode == 2 and "CHANGEWATCH_WORKER_DB_PASSWORD" in proc.stderr
    finally:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute("DROP ROLE IF EXISTS cw_svc_worker, cw_svc_producer")
