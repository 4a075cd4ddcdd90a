"""Give a dead worker's jobs back within seconds, not after the visibility timeout.

With late acks, a job taken by a worker that is then killed (SIGKILL, OOM, a lost host)
stays in kombu's ``unacked`` hash. kombu puts it back only once the visibility timeout
has passed since delivery, and that timeout must outlast the longest a live worker may
hold a message (running it, or waiting out a retry's countdown), so it cannot be short.

So every worker runs this sweep in a thread: it lists the delivered messages, asks all
live workers which of those task ids they hold (Celery's ``query_task`` broadcast, which
covers running, reserved and countdown-waiting tasks), and puts back with kombu's
``restore_by_tag`` every message that no live worker has held for ``confirm_s``. A
worker reconnecting after a broker outage answers again well within that; a message
only just delivered may not be registered yet, hence also the minimum age. A task a
live worker still lists as running after ``stuck_after_s`` is stuck (a broker
connection loss can leave such a request behind, its message never acknowledged) and is
put back too. One worker sweeps at a time (a Redis lock), and a pass whose sweeper does
not hear its own reply concludes nothing. A live worker silent for ``confirm_s``, or a
job that really runs past ``stuck_after_s``, would have its job run twice: the store
makes that harmless (same request, same numbers, one row each), so the cost is only the
repeated work. On RabbitMQ the broker itself requeues a lost connection's unacknowledged
deliveries, so the sweep does not run there (schema/brokers.py).
"""

from __future__ import annotations

import logging
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from celery import Celery

from ..schema import brokers
from ..schema.broker import Broker, Delivered, broker
from .loops import LoopStep

log = logging.getLogger(__name__)

_LOCK_KEY = "changewatch:recovery-sweep"
_SUSPECTS_KEY = "changewatch:recovery-suspects"  # hash: tag -> when first seen unheld
_REPLY_TIMEOUT_S = 5.0  # how long live workers get to answer query_task


@dataclass(frozen=True)
class Sweep:
    app: Celery
    hostname: str  # this worker: it must hear its own reply, or the pass proves nothing
    every_s: float = 5.0
    min_age_s: float = 5.0
    confirm_s: float = 10.0
    stuck_after_s: float = 120.0

    def connect(self) -> AbstractContextManager[Broker]:
        """One broker connection serves every pass (redis-py reconnects by itself)."""
        return broker(self.app)

    def held_by_live_workers(self, task_ids: list[str]) -> tuple[set[str], set[str]]:
        """The task ids some live worker holds (reserved, waiting out a countdown, or
        running for less than ``stuck_after_s``), and the workers that answered.

        A request Celery still lists as running past that bound is stuck: after a broker
        connection loss the threads pool cannot cancel a task, and one whose result or
        ack then failed stays listed as active forever, its message never acknowledged.
        """
        replies = self.app.control.inspect(timeout=_REPLY_TIMEOUT_S).query_task(*task_ids)
        now = time.time()
        held = set()
        for reply in (replies or {}).values():
            for task_id, (state, info) in reply.items():
                started = (info or {}).get("time_start")
                if state != "active" or not started or now - started < self.stuck_after_s:
                    held.add(task_id)
        return held, set(replies or {})

    def once(self, held: Broker) -> list[str]:
        """One pass, if it is this worker's turn (one sweeper per interval across all
        workers); the tags of the messages put back in their queue.

        A message is put back once no live worker has held it for ``confirm_s``: a
        worker reconnecting after a broker outage answers again well within that. The
        first sightings are kept in Redis, so any worker's turn continues the count.
        """
        expires = max(1, int(self.every_s))
        if not held.client.set(_LOCK_KEY, self.hostname, nx=True, ex=expires):
            return []
        delivered = list(held.delivered(older_than=self.min_age_s))
        if not delivered:
            # A healthy run: nothing to ask about, nothing to keep. Old sightings in the
            # suspects hash name tags no longer delivered (ignored below) and expire.
            return []
        ids = sorted({d.message.task_id for d in delivered if d.message.task_id})
        alive, answered = self.held_by_live_workers(ids) if ids else (set(), {self.hostname})
        if self.hostname not in answered:
            return []  # replies are not reaching us: no conclusion from this pass
        now = time.time()
        seen = {
            (k.decode() if isinstance(k, bytes) else k): float(v)
            for k, v in held.client.hgetall(_SUSPECTS_KEY).items()
        }
        orphans = {d.tag: seen.get(d.tag, now) for d in delivered if d.message.task_id not in alive}
        due = [d for d in delivered if now - orphans.get(d.tag, now) >= self.confirm_s]
        # The queues are read only when something is due: a backlog can be long.
        restored, dropped = _one_copy_each(due, _queued_ids(held) if due else set())
        for tag in restored:
            held.restore(tag)
        for tag in dropped:
            held.drop_delivered(tag)
        done = set(restored) | set(dropped)
        waiting = {t: first for t, first in orphans.items() if t not in done}
        with held.client.pipeline() as pipe:
            pipe.delete(_SUSPECTS_KEY)
            if waiting:
                pipe.hset(_SUSPECTS_KEY, mapping=waiting)
                pipe.expire(_SUSPECTS_KEY, int(10 * (self.every_s + self.confirm_s)))
            pipe.execute()
        for d in delivered:
            if d.tag in restored:
                log.warning(
                    "task %s (%s): its worker is gone; put back in the queue",
                    d.message.task_id,
                    d.message.task,
                )
            elif d.tag in dropped:
                log.warning(
                    "task %s (%s): its worker is gone, and a newer copy of it is queued or"
                    " put back; this one dropped",
                    d.message.task_id,
                    d.message.task,
                )
        return restored


def _queued_ids(held: Broker) -> set[str]:
    return {m.task_id for _, m in held.queued() if m.task_id}


def _one_copy_each(due: list[Delivered], queued: set[str]) -> tuple[list[str], list[str]]:
    """(tags to put back, tags to drop): one copy of each task, the one furthest along.

    A retry is a new message with the same task id, so a worker that died between
    publishing a retry and acknowledging the original leaves two; putting both back
    would start two retry chains for one job. A task already waiting in a queue needs no
    other copy.
    """
    newest: dict[str, Delivered] = {}
    for d in due:
        key = d.message.task_id or d.tag
        if key not in newest or d.message.retries > newest[key].message.retries:
            newest[key] = d
    keep = {d.tag for key, d in newest.items() if key not in queued}
    restored = sorted(keep)
    dropped = sorted(d.tag for d in due if d.tag not in keep and d.message.task_id)
    return restored, dropped


class Recovery(LoopStep):
    """Consumer step: the sweep runs in its own thread, so this worker's own event loop
    keeps answering the broadcast while it waits for replies. A worker started after a
    crash is often the first to look: it looks at once."""

    label = "recovery sweep"
    thread_name = "changewatch-recovery"

    def passes(self, parent: Any) -> Sweep | None:
        app: Celery = parent.app
        every = float(app.conf.get("changewatch_recovery_every", 5.0))
        if every <= 0:
            return None
        if not brokers.app_keeps_jobs_in_redis(app):
            log.info("recovery sweep not needed: the broker requeues a lost worker's jobs")
            return None
        return Sweep(
            app,
            parent.hostname,
            every,
            float(app.conf.get("changewatch_recovery_min_age", 5.0)),
            float(app.conf.get("changewatch_recovery_confirm", 10.0)),
            float(app.conf.get("changewatch_recovery_stuck_after", 120.0)),
        )
