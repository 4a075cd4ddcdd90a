"""Re-send jobs whose message the broker lost, so none stays ``queued`` or ``running``.

Late acks keep a job's message in Redis until the job is done: waiting in the queue's
list, or delivered and kept in kombu's ``unacked`` hash (restored to the queue after the
visibility timeout if its worker died). Two things can still lose a message:

- a Redis crash in the instant between a worker popping it and writing it to
  ``unacked`` (seen about one SIGKILL in five in tests/test_faults.py);
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

import base64
import json
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from producer.api import Producer
from producer.contract import ANALYZE_TASK, COMPARE_TASK, QUEUE

log = logging.getLogger(__name__)

DEFAULT_OLDER_THAN_S = 120.0
_CHUNK = 1000  # messages per LRANGE/HSCAN call: bounded memory for a long queue


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


def _task_and_kwargs(raw: str | bytes) -> tuple[str | None, dict[str, Any]]:
    """The task name and keyword arguments of a kombu message (protocol 2 or 1)."""
    try:
        message = json.loads(raw)
        if isinstance(message, list):  # an ``unacked`` entry: [message, exchange, key]
            message = message[0]
        body: Any = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        body = json.loads(body) if isinstance(body, str | bytes) else body
        task = message.get("headers", {}).get("task")
        if isinstance(body, list) and len(body) >= 2 and isinstance(body[1], dict):
            return task, body[1]  # protocol 2: [args, kwargs, embed]
        if isinstance(body, dict):  # protocol 1: {"task", "id", "args", "kwargs"}
            return task or body.get("task"), body.get("kwargs") or {}
    except (ValueError, KeyError, TypeError, IndexError):
        pass  # not a job message: the worker rejects and records those itself
    return None, {}


def _messages(producer: Producer) -> Iterator[str | bytes]:
    """Every message of the queue (all priority levels) and of ``unacked``."""
    with producer.celery.connection_for_read() as conn:
        channel: Any = conn.default_channel
        client = channel.client
        # kombu's own key naming for the priority levels of one queue.
        keys = {channel._q_for_pri(QUEUE, pri) for pri in channel.priority_steps}
        for key in sorted(keys):
            for start in range(0, int(client.llen(key)), _CHUNK):
                yield from client.lrange(key, start, start + _CHUNK - 1)
        for _, value in client.hscan_iter(channel.unacked_key, count=_CHUNK):
            yield value


def alive(producer: Producer) -> Alive:
    sessions: set[str] = set()
    pairs: set[tuple[str, str]] = set()
    for raw in _messages(producer):
        task, kwargs = _task_and_kwargs(raw)
        if task == ANALYZE_TASK and "session_id" in kwargs:
            sessions.add(str(kwargs["session_id"]).lower())
        elif task == COMPARE_TASK:
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
        producer.analyze(row["user_id"], row["session_id"], row["captured_at"], row["images"])
        done.sessions.append(sid)
    for row in comparisons:
        pair = _pair(row)
        if pair in first.pairs or pair in second.pairs:
            continue
        if not _claim(producer, "comparisons", pair, row["updated_at"]):
            continue
        log.warning("comparison %s of %s: its message is gone; sending it again", *pair)
        producer.compare(row["user_id"], *pair)
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
