"""The dead-letter pass: a job RabbitMQ gave up on ends ``failed``, not ``running``.

On RabbitMQ the jobs queue has a delivery limit (schema/amqp_broker.py): a message whose
worker died that many times while running it (a photo that takes the process down, say)
is dead-lettered to ``changewatch.dead`` instead of killing workers forever. Left there,
its session would stay ``running`` with no message anywhere, and the reaper cannot see
that on RabbitMQ. So every worker on RabbitMQ reads that queue every few seconds:

- each message is recorded in ``rejected_messages`` (``delivery_limit_exceeded``,
  without any token), so an operator can see what was given up on;
- an analysis or a comparison that is still this request's and still unfinished is
  marked failed with the same code, its notification committed with it; one that a
  later run finished or a newer request replaced is left as it is;
- only then is the message acknowledged (at least once: recording twice is harmless).

Nothing in it is ever run again here: a user sends the job again once the cause is fixed.
On Redis there is no delivery limit; the recovery sweep and the reaper cover lost jobs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from queue import Empty
from typing import Any

from celery import Celery
from kombu import Connection
from kombu.message import Message
from psycopg_pool import ConnectionPool

from ..schema import brokers
from ..schema.amqp_broker import dead_letter_queue
from ..schema.contract import ANALYZE_TASK, COMPARE_TASK, parse_analyze, parse_compare
from ..schema.errors import Code, JobError
from . import store
from .config import settings
from .loops import LoopStep

log = logging.getLogger(__name__)


def _payload(message: Message) -> dict[str, Any]:
    """The job's fields: Celery's protocol 2 body is ``[args, kwargs, embed]``."""
    body = message.decode()
    if isinstance(body, list | tuple) and len(body) >= 2 and isinstance(body[1], dict):
        return dict(body[1])
    return {}


@dataclass(frozen=True)
class DeadLetters:
    app: Celery
    database_url: str
    delivery_limit: int
    notify_queue: str = ""
    every_s: float = 5.0

    @contextmanager
    def connect(self) -> Iterator[tuple[Connection, ConnectionPool]]:
        with (
            self.app.connection_for_read() as conn,
            ConnectionPool(self.database_url, min_size=1, max_size=1, open=True) as pool,
        ):
            yield conn, pool

    def error(self) -> JobError:
        return JobError(
            Code.DELIVERY_LIMIT_EXCEEDED,
            f"the broker gave this job to a worker {self.delivery_limit + 1} times and none"
            " finished it (each stopped while running it, as a process that crashes or runs"
            " out of memory does); it is not tried again: send it again once the cause is"
            " fixed",
        )

    def record(self, pool: ConnectionPool, message: Message) -> None:
        """What one dead-lettered message leaves behind (see the module's docstring)."""
        headers = message.headers or {}
        task_name = str(headers.get("task", ""))
        task_id = str(headers.get("id", "")) or None
        payload = _payload(message)
        error = self.error()
        store.reject_message(pool, task_name, task_id, payload, error, mark_job=False)
        marked = False
        # A payload that does not parse was recorded as it is: there is no job to end.
        if task_id and task_name == ANALYZE_TASK:
            with suppress(JobError):
                job = parse_analyze(payload)
                marked = store.fail_unfinished(pool, job, task_id, error, self.notify_queue)
        elif task_id and task_name == COMPARE_TASK:
            with suppress(JobError):
                compared = parse_compare(payload)
                marked = store.fail_unfinished_comparison(
                    pool, compared, task_id, error, self.notify_queue
                )
        log.warning(
            "dead-lettered %s %s: %s (%s)",
            task_name or "message",
            task_id,
            "its job marked failed" if marked else "recorded",
            error.code,
        )

    def once(self, conns: tuple[Connection, ConnectionPool]) -> int:
        """Record and acknowledge every message waiting; returns how many."""
        conn, pool = conns
        done = 0
        with conn.SimpleQueue(dead_letter_queue()) as queue:
            while True:
                try:
                    message = queue.get(block=False)
                except Empty:
                    return done
                self.record(pool, message)
                message.ack()
                done += 1


class DeadLetterStep(LoopStep):
    """Runs the dead-letter pass in a thread of every worker whose broker is RabbitMQ."""

    label = "dead-letter pass"
    thread_name = "changewatch-dead-letters"

    def passes(self, parent: Any) -> DeadLetters | None:
        app: Celery = parent.app
        s = settings()
        if brokers.app_keeps_jobs_in_redis(app) or s.amqp_delivery_limit < 0:
            return None
        return DeadLetters(app, s.database_url, s.amqp_delivery_limit, s.notify_queue)
