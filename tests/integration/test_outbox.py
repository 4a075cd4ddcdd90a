"""The outbox relay: a broker that is down delays notifications, never loses them; they
go out in the order they were written, as celery-node reads them, and leave no row."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import redis
from celery import Celery
from psycopg.types.json import Jsonb

from changewatch.celeryconfig import celery_config
from changewatch.schema.broker import Message
from changewatch.settings import Settings
from changewatch.worker.relay import Relay
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


def test_a_broker_down_delays_notifications_and_loses_none(database_url: str, broker: str) -> None:
    bodies = _write(database_url, 3)
    down = Relay(_app("redis://127.0.0.1:1/0"), database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert down.once(conn) == 0
    left = query(database_url, "SELECT attempts, last_error IS NOT NULL FROM outbox ORDER BY id")
    assert left == [(1, True), (0, False), (0, False)]  # kept, the first one marked

    up = Relay(_app(broker), database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert up.once(conn) == 3
    assert query(database_url, "SELECT count(*) FROM outbox") == [(0,)]
    client = redis.Redis.from_url(broker)
    # The bare list key, priority 0, where celery-node's worker BRPOPs: oldest first.
    sent = [Message.parse(raw) for raw in reversed(client.lrange(QUEUE, 0, -1))]
    assert [m.kwargs for m in sent] == bodies
    assert [m.task_id for m in sent] == [b["notification_id"] for b in bodies]
    assert {m.task for m in sent} == {"changewatch.notification"}
