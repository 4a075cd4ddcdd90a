"""A channel closed after its Connection still puts its unacknowledged job back.

This is the order of a worker's reconnect after a Redis restart: Celery releases the
broker Connection (kombu sets the transport's client to None) and a channel's close
comes later, restoring its unacknowledged deliveries. With kombu's own transport that
raised ``AttributeError: 'NoneType' object has no attribute 'hostname'`` and ended the
worker; with changewatch's (schema/redis_broker.py) the job is back in its queue.
"""

from __future__ import annotations

import os
import uuid

import pytest
import redis
from kombu import Connection
from kombu.transport import redis as kombu_redis

from changewatch.schema import redis_broker
from tests.helpers import _redis_up, require


def _deliver_then_close_transport(transport: type) -> tuple[str, object]:
    """A message taken (not acked) on a channel whose Connection is then closed."""
    queue = f"changewatch-test-{uuid.uuid4().hex[:8]}"
    conn = Connection(os.environ["CELERY_BROKER_URL"], transport=transport)
    channel = conn.channel()
    channel.queue_declare(queue)
    channel.basic_publish(channel.prepare_message("job"), exchange="", routing_key=queue)
    message = channel.basic_get(queue, no_ack=False)
    assert message is not None and message.body == b"job"
    conn._do_close_transport()  # what Connection.release does after closing its own
    return queue, channel


def test_a_late_channel_close_puts_the_job_back() -> None:
    require(_redis_up(), "Redis is not reachable on 127.0.0.1:6379")
    queue, channel = _deliver_then_close_transport(redis_broker.Transport)
    channel.close()  # type: ignore[attr-defined]
    client = redis.Redis.from_url(os.environ["CELERY_BROKER_URL"])
    try:
        assert client.llen(queue) == 1  # back in its queue, not lost in worker memory
    finally:
        client.delete(queue)


def test_kombus_own_transport_fails_there() -> None:
    """The failure the subclass exists for; when kombu fixes it, drop the subclass."""
    require(_redis_up(), "Redis is not reachable on 127.0.0.1:6379")
    queue, channel = _deliver_then_close_transport(kombu_redis.Transport)
    try:
        with pytest.raises(AttributeError, match="hostname"):
            channel.close()  # type: ignore[attr-defined]
    finally:
        redis.Redis.from_url(os.environ["CELERY_BROKER_URL"]).delete(queue)
