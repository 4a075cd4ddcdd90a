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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from changewatch.producer.api import Producer
from changewatch.schema.broker import broker
from changewatch.schema.contract import ANALYZE_TASK, COMPARE_TASK, JobError

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
    sessions: set[str] = set()
    pairs: set[tuple[str, str]] = set()
    with broker(producer.celery) as held:
        messages = [m for _, m in held.queued()] + [d.message for d in held.delivered()]
    for message in messages:
        kwargs = message.kwargs
        if message.task == ANALYZE_TASK and "session_id" in kwargs:
            sessions.add(str(kwargs["session_id"]).lower())
        elif message.task == COMPARE_TASK:
            pair = (kwargs.get("current_session_id"), kwargs.get("previous_session_id"))
            pairs.add((str(pair[0]).lower(), str(pair[1]).lower()))
    return Alive(frozenset(sessions), frozenset(pairs))


def _stale(producer: Producer, older_than: float) -> tuple[list[dict], list[dict]]:
    with producer.connect() as conn:
        sessions = conn.execute(
            "SELECT session_id, user_id, captured_at, images, updated_at FROM sessions"
            " WHERE status IN ('queued', 'running')"
            " AND updated_at < now() - make_interval(secs => %s) ORDER BY captured_at",
            (older_than,),
        ).fetchall()
        comparisons = conn.execute(
            "SELECT current_session_id, previous_session_id, user_id, updated_at"
            " FROM comparisons WHERE status IN ('queued', 'running')"
            " AND updated_at < now() - make_interval(secs => %s)",
            (older_than,),
        ).fetchall()
    return sessions, comparisons


def _pair(row: dict[str, Any]) -> tuple[str, str]:
    return str(row["current_session_id"]), str(row["previous_session_id"])


def _claim(producer: Producer, table: str, keys: Iterable[Any], updated_at: datetime) -> bool:
    """Touch the row only if nobody changed it since it was read: one reaper wins."""
    where = {
        "sessions": "session_id = %s",
        "comparisons": "current_session_id = %s AND previous_session_id = %s",
    }[table]
    with producer.connect() as conn:
        row = conn.execute(
            f"UPDATE {table} SET updated_at = now() WHERE {where}"  # fixed names
            " AND status IN ('queued', 'running') AND updated_at = %s RETURNING 1",
            (*keys, updated_at),
        ).fetchone()
    return row is not None


def _fail(producer: Producer, session_id: Any, err: JobError) -> None:
    log.warning("session %s: cannot be sent again: %s (%s)", session_id, err.message, err.code)
    with producer.connect() as conn:
        conn.execute(
            "UPDATE sessions SET status = 'failed', error_code = %s, error_message = %s,"
            " updated_at = now() WHERE session_id = %s AND status IN ('queued', 'running')",
            (err.code, f"lost, and cannot be sent again: {err.message}", session_id),
        )


def reap(
    producer: Producer, older_than: float = DEFAULT_OLDER_THAN_S, confirm_after: float = 1.0
) -> Pass:
    """One pass: find the jobs whose message is gone and send them again."""
    sessions, comparisons = _stale(producer, older_than)
    if not sessions and not comparisons:
        return Pass()
    first = alive(producer)
    time.sleep(confirm_after)
    second = alive(producer)
    done = Pass()
    for row in sessions:
        sid = str(row["session_id"])
        if sid in first.sessions or sid in second.sessions:
            continue
        if not _claim(producer, "sessions", [row["session_id"]], row["updated_at"]):
            continue  # a worker (or another reaper) moved it on meanwhile
        log.warning("session %s: its message is gone; sending it again", sid)
        try:
            producer.analyze(row["user_id"], row["session_id"], row["captured_at"], row["images"])
        except JobError as err:  # a row no job can come from: fail it, go on with the rest
            _fail(producer, row["session_id"], err)
            continue
        done.sessions.append(sid)
    for row in comparisons:
        pair = _pair(row)
        if pair in first.pairs or pair in second.pairs:
            continue
        if not _claim(producer, "comparisons", pair, row["updated_at"]):
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
