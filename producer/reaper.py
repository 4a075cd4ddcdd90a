"""Re-send jobs whose message the broker lost, so none stays ``queued`` or ``running``.

Late acks keep a job's message in Redis until the job is done: waiting in the queue's
list, or delivered and kept in kombu's ``unacked`` hash (put back in the queue by the
workers' recovery sweep, ``worker.recovery``, if its worker died). Two things can still
lose a message:

- a Redis crash in the instant between a worker popping it and writing it to
  ``unacked`` (seen about one SIGKILL in five in tests/e2e/test_faults.py);
- Celery's ``retry()`` when its publish fails: Celery rejects the original without
  requeue (worker.tasks requeues it instead, but a crash can still come in between).

A job is lost when its row has been ``queued`` or ``running`` for longer than
``older_than`` and no analyze message for its session (compare message for its pair) is
in the queue or in ``unacked``. The broker is read twice, a moment apart, so a message
in flight between the two keys is never taken for lost. A lost job is claimed with a
conditional update (two reapers never both re-send it) and sent again; jobs are
idempotent, so even a needless re-send only repeats the same numbers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..schema import brokers
from ..schema.broker import readable
from ..schema.contract import ANALYZE_TASK, COMPARE_TASK, JobError
from .api import Producer
from .store import Row, lost, sessions

log = logging.getLogger(__name__)

DEFAULT_OLDER_THAN_S = 60.0


@dataclass(frozen=True)
class Alive:
    """What the broker still holds: analyze messages by session, compare ones by pair."""

    sessions: frozenset[str] = frozenset()
    pairs: frozenset[tuple[str, str]] = frozenset()


@dataclass
class Pass:
    """One reaper pass: what was found lost and sent again."""

    sessions: list[str] = field(default_factory=list)
    comparisons: list[tuple[str, str]] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        return {
            "resent_sessions": self.sessions,
            "resent_comparisons": [{"current": c, "previous": p} for c, p in self.comparisons],
        }


def alive(producer: Producer) -> Alive:
    session_ids: set[str] = set()
    pairs: set[tuple[str, str]] = set()
    messages = []
    for held in readable(producer.brokers.every()):  # a person's job may sit on any
        messages += [m for _, m in held.queued()] + [d.message for d in held.delivered()]
    for message in messages:
        kwargs = message.kwargs
        if message.task == ANALYZE_TASK and "session_id" in kwargs:
            session_ids.add(str(kwargs["session_id"]).lower())
        elif message.task == COMPARE_TASK:
            pair = (kwargs.get("current_session_id"), kwargs.get("previous_session_id"))
            pairs.add((str(pair[0]).lower(), str(pair[1]).lower()))
    return Alive(frozenset(session_ids), frozenset(pairs))


def _stale(producer: Producer, older_than: float) -> tuple[list[Row], list[Row]]:
    with producer.connect() as conn:
        return lost.stale(conn, "sessions", older_than), lost.stale(conn, "comparisons", older_than)


def _pair(row: Row) -> tuple[str, str]:
    return str(row["current_session_id"]), str(row["previous_session_id"])


def _claim(producer: Producer, table: lost.Table, row: Row) -> bool:
    with producer.connect() as conn:
        return lost.claim(conn, table, row)


def _fail(producer: Producer, session_id: Any, err: JobError) -> None:
    log.warning("session %s: cannot be sent again: %s (%s)", session_id, err.message, err.code)
    with producer.connect() as conn:
        sessions.fail_lost(
            conn, session_id, err.code, f"lost, and cannot be sent again: {err.message}"
        )


def reap(
    producer: Producer, older_than: float = DEFAULT_OLDER_THAN_S, confirm_after: float = 1.0
) -> Pass:
    """One pass: find the jobs whose message is gone and send them again.

    Not needed on RabbitMQ (nothing to do there): quorum queues with publisher confirms
    keep every message the broker accepted, and a lost worker's deliveries are requeued
    by the broker itself; RabbitMQ cannot list a queue's messages to compare anyway."""
    if not any(brokers.app_keeps_jobs_in_redis(app) for app in producer.brokers.every()):
        log.info("reaper not needed: the broker (RabbitMQ) keeps and requeues every job")
        return Pass()
    lost_sessions, lost_comparisons = _stale(producer, older_than)
    if not lost_sessions and not lost_comparisons:
        return Pass()
    first = alive(producer)
    time.sleep(confirm_after)
    second = alive(producer)
    done = Pass()
    for row in lost_sessions:
        sid = str(row["session_id"])
        if sid in first.sessions or sid in second.sessions:
            continue
        if not _claim(producer, "sessions", row):
            continue  # a worker (or another reaper) moved it on meanwhile
        log.warning("session %s: its message is gone; sending it again", sid)
        try:
            producer.analyze(row["user_id"], row["session_id"], row["captured_at"], row["images"])
        except JobError as err:  # a row no job can come from: fail it, go on with the rest
            _fail(producer, row["session_id"], err)
            continue
        done.sessions.append(sid)
    for row in lost_comparisons:
        pair = _pair(row)
        if pair in first.pairs or pair in second.pairs:
            continue
        if not _claim(producer, "comparisons", row):
            continue
        log.warning("comparison %s of %s: its message is gone; sending it again", *pair)
        try:
            producer.compare(row["user_id"], *pair)
        except JobError as err:
            log.warning("comparison %s of %s cannot be sent again: %s", *pair, err.code)
            continue
        done.comparisons.append(pair)
    return done


def reap_forever(producer: Producer, older_than: float, every: float) -> Iterator[Pass]:
    """A pass every ``every`` seconds; a pass that fails (broker or database down) waits."""
    while True:
        try:
            yield reap(producer, older_than)
        except Exception as exc:  # an outage must not stop the reaper
            log.warning("reaper pass failed: %s: %s", type(exc).__name__, exc)
        time.sleep(every)
