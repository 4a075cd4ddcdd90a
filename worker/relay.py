"""The outbox relay: send the notifications finished jobs wrote, then delete them.

A notification row commits with its job's outcome (``store.outbox``); this thread sends
it as the Celery task ``changewatch.notification`` to the row's queue, with the row's
fixed id as the task id, and deletes the row only after the broker took the message.
A broker that is down leaves the rows where they are: the next pass sends them (after
``notify_every`` seconds), in the same order. A crash between sending and deleting sends
a row again, with the same id (at least once; receivers deduplicate on it).

Every worker runs the thread, but one sends at a time for the whole deployment (a
Postgres advisory lock taken per pass), in id order, stopping at the first row the broker
refuses: so each session's notifications arrive in the order they were written. With
several brokers each goes to its person's broker (schema/routing.py), so a receiver
consumes the notify queue on every broker.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import psycopg
from celery import Celery

from ..schema.contract import NOTIFY_TASK
from ..schema.routing import Brokers
from .config import settings
from .loops import LoopStep
from .store import outbox

log = logging.getLogger(__name__)

BATCH = 100  # rows read per query: a backlog drains in batches, memory stays bounded
# The broker gets this long per message before the pass stops (kombu's publish retry).
_PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5}


@dataclass(frozen=True)
class Relay:
    app: Celery
    database_url: str
    every_s: float = 0.5
    # Several brokers (schema/routing.py): a notification goes to its person's broker, as
    # their jobs do. None: every notification to ``app``'s broker.
    brokers: Brokers | None = None

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.database_url, autocommit=True)

    def publish(self, row: outbox.Pending) -> None:
        app = self.brokers.for_user(row.user_id) if self.brokers else self.app
        app.send_task(
            NOTIFY_TASK,
            kwargs=row.body,
            queue=row.queue,
            task_id=str(row.message_id),
            retry=True,
            retry_policy=_PUBLISH_RETRY,
        )

    def once(self, conn: psycopg.Connection[Any]) -> int:
        """One pass, if no other relay is in one: send what is pending, oldest first.
        Returns how many were sent."""
        if not outbox.try_relay_lock(conn):
            return 0
        sent = 0
        try:
            while rows := outbox.pending(conn, BATCH):
                done: list[int] = []
                try:
                    for row in rows:
                        self.publish(row)
                        done.append(row.id)
                except Exception as exc:
                    outbox.sent(conn, done)
                    outbox.not_sent(conn, rows[len(done)].id, f"{type(exc).__name__}: {exc}")
                    log.warning("notification not sent yet (%s); the next pass retries", exc)
                    return sent + len(done)
                outbox.sent(conn, done)
                sent += len(done)
        finally:
            outbox.relay_unlock(conn)
        return sent


class RelayStep(LoopStep):
    """Runs the relay in a thread of every worker that has a notify queue set."""

    label = "outbox relay"
    thread_name = "changewatch-relay"

    def passes(self, parent: Any) -> Relay | None:
        s = settings()
        if not s.notify_queue:
            return None
        return Relay(parent.app, s.database_url, s.notify_every, Brokers(s, parent.app))
