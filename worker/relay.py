"""The outbox relay: send the notifications finished jobs wrote, then delete them.

A notification row commits with its job's outcome (``store.outbox``); this thread sends
it as the Celery task ``changewatch.notification`` to the row's queue, with the row's
fixed id as the task id, and deletes the row only after the broker took the message.
A broker that is down leaves the rows where they are: the next pass sends them (after
``notify_every`` seconds), in the same order. A crash between sending and deleting sends
a row again, with the same id (at least once; receivers deduplicate on it).

Every worker runs the thread, but one sends at a time for the whole deployment (a
Postgres advisory lock taken per pass), in id order, stopping at the first row the broker
refuses: so each session's notifications arrive in the order they were written.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import psycopg
from celery import Celery, bootsteps

from ..schema.contract import NOTIFY_TASK
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

    def publish(self, row: outbox.Pending) -> None:
        self.app.send_task(
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


class RelayStep(bootsteps.StartStopStep):
    """Runs the relay in a thread of every worker that has a notify queue set."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()

    def start(self, parent: Any) -> None:
        if self.thread is not None and self.thread.is_alive():
            return  # the consumer restarts after a lost connection; one relay is enough
        from .app import settings  # worker.app adds this step: imported once it runs

        s = settings()
        if not s.notify_queue:
            return
        relay = Relay(parent.app, s.database_url, s.notify_every)
        self.stopping.clear()
        self.thread = threading.Thread(
            target=self._run, args=(relay,), name="changewatch-relay", daemon=True
        )
        self.thread.start()

    def _run(self, relay: Relay) -> None:
        # One connection serves every pass; a pass that fails (Postgres may be down) is
        # tried again on a fresh one next interval.
        while not self.stopping.is_set():
            try:
                with psycopg.connect(relay.database_url, autocommit=True) as conn:
                    while not self.stopping.is_set():
                        relay.once(conn)
                        self.stopping.wait(relay.every_s)
            except Exception as exc:
                log.warning("outbox relay failed: %s: %s", type(exc).__name__, exc)
                self.stopping.wait(relay.every_s)

    def shutdown(self, parent: Any) -> None:
        self.stopping.set()
