"""What the Redis broker holds of changewatch's jobs, read from kombu's own keys.

kombu keeps a queue as a Redis list (one per priority level) and a delivered, not yet
acknowledged message in the ``unacked`` hash (tag -> [message, exchange, routing key])
with its delivery time in the ``unacked_index`` sorted set. The reaper (lost messages),
the worker's recovery sweep (messages of dead workers) and forget-user (a person's
messages) all read them here; changes go through kombu's own ``restore_by_tag`` or a
Redis transaction, never a bare read-modify-write.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from celery import Celery

from .contract import BACKFILL_QUEUE_PREFIX, QUEUE

_CHUNK = 1000  # entries per LRANGE/HSCAN/ZRANGE call: bounded memory for a long queue


@dataclass(frozen=True)
class Message:
    """A kombu message as changewatch reads it: which task, which id, which arguments."""

    raw: bytes | str
    task: str | None = None
    task_id: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    retries: int = 0  # Celery's count: a retry is a new message with the same task id

    @classmethod
    def parse(cls, raw: bytes | str) -> Message:
        """Protocol 2 or 1; anything else parses to a message with no task."""
        try:
            message = json.loads(raw)
            if isinstance(message, list):  # an ``unacked`` entry: [message, exchange, key]
                message = message[0]
            headers = message.get("headers") or {}
            properties = message.get("properties") or {}
            body: Any = message["body"]
            if properties.get("body_encoding") == "base64":
                body = base64.b64decode(body)
            body = json.loads(body) if isinstance(body, str | bytes) else body
            task = headers.get("task")
            task_id = headers.get("id") or properties.get("correlation_id")
            retries = headers.get("retries") if isinstance(headers.get("retries"), int) else 0
            if isinstance(body, list) and len(body) >= 2 and isinstance(body[1], dict):
                # protocol 2: [args, kwargs, embed]
                return cls(raw, task, task_id, body[1], retries)
            if isinstance(body, dict):  # protocol 1: {"task", "id", "args", "kwargs"}
                return cls(
                    raw,
                    task or body.get("task"),
                    task_id or body.get("id"),
                    body.get("kwargs") or {},
                )
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            pass  # not a job message: the worker rejects and records those itself
        return cls(raw)

    def mentions(self, ids: set[str]) -> bool:
        """Whether this job names any of ``ids`` (lower-case): a person, their sessions."""
        return any(isinstance(v, str) and v.lower() in ids for v in self.kwargs.values())


@dataclass(frozen=True)
class Delivered:
    """A message a worker took and has not acknowledged yet."""

    tag: str
    delivered_at: float
    message: Message


class Broker:
    """kombu's Redis keys for changewatch's queues, through one channel of ``app``."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.client = channel.client

    def queue_keys(self, extra: Iterable[str] = ()) -> list[str]:
        """The jobs queue and every backfill queue (and ``extra`` ones, such as the
        notification queue), at every priority level."""
        names = {QUEUE, *extra}
        for key in self.client.scan_iter(match=f"{BACKFILL_QUEUE_PREFIX}*", count=_CHUNK):
            name = key.decode() if isinstance(key, bytes) else key
            names.add(name.split("\x06\x16")[0])  # kombu's priority separator
        return sorted(
            {self.channel._q_for_pri(n, pri) for n in names for pri in self.channel.priority_steps}
        )

    def queued(self, extra: Iterable[str] = ()) -> Iterator[tuple[str, Message]]:
        """(queue key, message) for every message waiting in a queue."""
        for key in self.queue_keys(extra):
            for start in range(0, int(self.client.llen(key)), _CHUNK):
                for raw in self.client.lrange(key, start, start + _CHUNK - 1):
                    yield key, Message.parse(raw)

    def delivered(self, older_than: float = 0.0) -> Iterator[Delivered]:
        """Unacknowledged messages delivered more than ``older_than`` seconds ago."""
        until = time.time() - older_than
        index, table = self.channel.unacked_index_key, self.channel.unacked_key
        start = 0
        while True:
            page = self.client.zrangebyscore(
                index, "-inf", until, start=start, num=_CHUNK, withscores=True
            )
            if not page:
                return
            tags = [t.decode() if isinstance(t, bytes) else t for t, _ in page]
            for tag, (_, score), raw in zip(
                tags, page, self.client.hmget(table, tags), strict=True
            ):
                if raw is not None:  # acknowledged between the two reads
                    yield Delivered(tag, float(score), Message.parse(raw))
            start += len(page)

    def restore(self, tag: str) -> None:
        """Put a delivered message back in its queue (a no-op if it was acked meanwhile)."""
        self.channel.qos.restore_by_tag(tag, client=self.client)

    def drop_queued(self, key: str, message: Message) -> int:
        return int(self.client.lrem(key, 0, message.raw))

    def drop_delivered(self, tag: str) -> None:
        """Forget a delivered message: its worker's ack becomes a no-op and no sweep
        restores it. The worker may still hold it in memory (the database refuses it)."""
        with self.client.pipeline() as pipe:
            pipe.hdel(self.channel.unacked_key, tag)
            pipe.zrem(self.channel.unacked_index_key, tag)
            pipe.execute()


@contextmanager
def broker(app: Celery) -> Iterator[Broker]:
    with app.connection_for_write() as conn:
        yield Broker(conn.default_channel)


def readable(apps: Iterable[Celery]) -> Iterator[Broker]:
    """Each broker among ``apps`` whose jobs can be read, opened in turn: Redis and
    Sentinel ones (RabbitMQ cannot list a queue; its late jobs are refused when consumed).
    With several brokers (schema/routing.py) a person's messages are looked for on all."""
    from .brokers import app_keeps_jobs_in_redis

    for app in apps:
        if app_keeps_jobs_in_redis(app):
            with broker(app) as held:
                yield held


def still_held(apps: Iterable[Celery], jobs: Callable[[Broker], Iterable[Any]]) -> int | None:
    """How many of ``jobs`` (what a broker holds of one person or session) the readable
    brokers among ``apps`` still hold, after a delete or forget; None when none is
    readable (RabbitMQ), so a report says nothing it could not check."""
    found: int | None = None
    for held in readable(apps):
        found = (found or 0) + sum(1 for _ in jobs(held))
    return found
