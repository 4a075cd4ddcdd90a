"""The outbox relay: a broker that is down delays notifications, never loses them; they
go out in the order they were written, as celery-node reads them, and leave no row."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
import redis
from celery import Celery
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from bench.harness.process import wait_until
from changewatch.celeryconfig import celery_config
from changewatch.schema.broker import Message
from changewatch.schema.contract import AnalyzeJob, S3Uri
from changewatch.settings import Settings
from changewatch.worker import store
from changewatch.worker.relay import Relay
from changewatch.worker.store import outbox
from tests.helpers import query

QUEUE = "changewatch.test.outbox"


def _app(broker_url: str) -> Celery:
    app = Celery("outbox-test")
    app.config_from_object(celery_config(Settings(broker_url=broker_url)))
    # Celery prefers $CELERY_BROKER_URL over the setting; these it does not override.
    app.conf.update(broker_read_url=broker_url, broker_write_url=broker_url)
    return app


def _write(database_url: str, rows: int) -> list[dict[str, Any]]:
    """``rows`` notifications of one person's sessions, as finished jobs write them."""
    user = uuid.uuid4()
    bodies = [
        {"notification_id": str(uuid.uuid4()), "session_id": str(uuid.uuid4()), "n": i}
        for i in range(rows)
    ]
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO users (user_id) VALUES (%s)", (user,))
        for b in bodies:
            conn.execute(
                "INSERT INTO outbox (message_id, user_id, session_id, queue, body)"
                " VALUES (%s, %s, %s, %s, %s)",
                (b["notification_id"], user, b["session_id"], QUEUE, Jsonb(b)),
            )
    return bodies


def _hold_relay_lock(conn: psycopg.Connection[Any]) -> None:
    """Take the relay lock, waiting out a test worker's relay pass (it holds the lock for
    one short pass at a time), so no other relay sends this test's rows meanwhile."""
    wait_until(lambda: outbox.try_relay_lock(conn), 30, "a relay kept the relay lock")


def test_a_broker_down_delays_notifications_and_loses_none(database_url: str, broker: str) -> None:
    # This connection holds the relay lock throughout (it is re-entrant for its own
    # session), taken before the rows exist, so a test worker's relay cannot take them.
    with psycopg.connect(database_url, autocommit=True) as conn:
        _hold_relay_lock(conn)
        bodies = _write(database_url, 3)
        assert Relay(_app("redis://127.0.0.1:1/0"), database_url).once(conn) == 0
        left = query(
            database_url,
            "SELECT attempts, last_error IS NOT NULL FROM outbox WHERE queue = %s ORDER BY id",
            (QUEUE,),
        )
        assert left == [(1, True), (0, False), (0, False)]  # kept, the first one marked
        assert Relay(_app(broker), database_url).once(conn) >= 3  # and any a test worker left
        outbox.relay_unlock(conn)
    assert query(database_url, "SELECT count(*) FROM outbox WHERE queue = %s", (QUEUE,)) == [(0,)]
    client = redis.Redis.from_url(broker)
    # The bare list key, priority 0, where celery-node's worker BRPOPs: oldest first.
    sent = [Message.parse(raw) for raw in reversed(client.lrange(QUEUE, 0, -1))]
    assert [m.kwargs for m in sent] == bodies
    assert [m.task_id for m in sent] == [b["notification_id"] for b in bodies]
    assert {m.task for m in sent} == {"changewatch.notification"}


def test_each_request_is_told_once_and_in_request_order(database_url: str) -> None:
    """A newer request ending first tells the older, unfinished one ``superseded`` just
    before itself; when the older one then ends it is told nothing more."""
    user, session = uuid.uuid4(), uuid.uuid4()
    images = {a: S3Uri("b", f"{user}/{a}.jpg") for a in ("front", "left", "right")}
    job = AnalyzeJob(user, session, datetime(2026, 1, 1, tzinfo=UTC), images)
    with (
        ConnectionPool(database_url, min_size=1, max_size=2, open=True) as pool,
        psycopg.connect(database_url, autocommit=True) as held,
    ):
        _hold_relay_lock(held)  # no test worker's relay sends them meanwhile
        store.enroll(pool, user)
        assert store.start_job(pool, job, "older") == store.start_job(pool, job, "older")
        assert isinstance(store.start_job(pool, job, "newer"), int)
        store.fail_job(pool, session, user, "image_missing", "gone", "newer", notify_queue=QUEUE)
        assert isinstance(store.start_job(pool, job, "older"), store.Superseded)
        store.outbox.tell_superseded(pool, QUEUE, session, user, "older", "newer")
        told = query(
            database_url,
            "SELECT body->>'request_task_id', body->>'status', body->>'superseded_by'"
            " FROM outbox WHERE session_id = %s ORDER BY id",
            (session,),
        )
        outbox.relay_unlock(held)
    assert told == [("older", "superseded", "newer"), ("newer", "failed", None)]
