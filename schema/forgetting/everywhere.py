"""Forget a person everywhere changewatch keeps them, and count what is left.

One procedure for the producer's ``forget-user`` (an operator with the producer's
database login) and the worker's ``changewatch.forget_person`` task (an upstream service
holding a delete token): rows behind a tombstone, jobs queued or delivered in Redis,
Celery's stored results, and the photos. Neither side imports the other; each passes in
its own connections, Celery app and S3 client.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import boto3
from celery import Celery, states

from .. import objects
from ..broker import Broker, Message, readable, still_held
from ..contract import FORGOTTEN_RESULT
from ..routing import Brokers
from . import rows

Connect = Callable[[], AbstractContextManager[rows.Conn]]


@dataclass
class _Person:
    """What forget-user found of one person, to delete everywhere it may be."""

    user_id: uuid.UUID
    sessions: list[uuid.UUID] = field(default_factory=list)
    task_ids: set[str] = field(default_factory=set)
    uris: set[str] = field(default_factory=set)
    dropped: set[str] = field(default_factory=set)  # tasks taken out of the broker
    spare: set[str] = field(default_factory=set)  # the forget task's own message
    queues: tuple[str, ...] = ()  # besides changewatch's own: the notification queue

    @property
    def needles(self) -> set[str]:
        return {str(self.user_id)} | {str(s) for s in self.sessions}

    def jobs_in(self, held: Broker) -> Iterator[tuple[str, str, Message]]:
        """The person's jobs in Redis: ("queued", queue key, message) for those waiting,
        ("delivered", tag, message) for those a worker took and has not acknowledged."""
        ids = {n.lower() for n in self.needles}
        for key, message in list(held.queued(self.queues)):
            if message.mentions(ids) and message.task_id not in self.spare:
                yield "queued", key, message
        for item in list(held.delivered()):
            if item.message.mentions(ids) and item.message.task_id not in self.spare:
                yield "delivered", item.tag, item.message


def _forget_rows(connect: Connect, person: _Person) -> dict[str, int]:
    """The person's rows, gone in one transaction behind a tombstone (rows.forget)."""
    with connect() as conn:
        found = rows.forget(conn, person.user_id)
    person.sessions.extend(found.sessions)
    person.uris |= found.uris
    person.task_ids |= found.task_ids
    return found.counts


def _forget_messages(held: Broker, person: _Person) -> dict[str, int]:
    """The person's jobs still in a queue of this broker, or delivered and not
    acknowledged."""
    dropped = {"queued": 0, "delivered": 0}
    for where, key, message in person.jobs_in(held):
        if where == "queued":
            dropped["queued"] += held.drop_queued(key, message)
        else:
            held.drop_delivered(key)
            dropped["delivered"] += 1
        person.dropped.add(message.task_id or "")
        person.uris.update(_uris(message.kwargs))
    person.dropped.discard("")
    person.task_ids |= person.dropped
    return dropped


def _uris(kwargs: dict[str, Any]) -> set[str]:
    images = kwargs.get("images")
    values = images.values() if isinstance(images, dict) else []
    if isinstance(images, list):
        values = [i.get("uri") for i in images if isinstance(i, dict)]
    return {v for v in values if isinstance(v, str) and v.startswith("s3://")}


def _results_naming(backend: Any, person: _Person) -> Iterator[list[bytes]]:
    """Batches of stored result keys whose value names the person or their sessions."""
    needles = [n.encode() for n in person.needles]
    client = backend.client
    for keys in _chunks(client.scan_iter(match=f"{backend.task_keyprefix}*", count=1000), 500):
        values = client.mget(keys)
        named = [k for k, v in zip(keys, values, strict=True) if v and any(n in v for n in needles)]
        if named:
            yield named


def _forget_results(celery: Celery, person: _Person) -> tuple[int, int]:
    """Celery's stored results of the person's tasks: by task id, and any other result
    that names them (a sender's own task ids, messages no worker recorded).

    Returns (deleted, left).
    """
    backend: Any = celery.backend
    if getattr(backend, "client", None) is None:  # not a key-value backend: ids only
        for task_id in person.task_ids:
            celery.AsyncResult(task_id).forget()
        return len(person.task_ids), 0
    client = backend.client
    keys = [backend.get_key_for_task(t) for t in sorted(person.task_ids)]
    removed = sum(int(client.delete(*keys[i : i + 500])) for i in range(0, len(keys), 500))
    removed += sum(int(client.delete(*named)) for named in _results_naming(backend, person))
    return removed, sum(len(named) for named in _results_naming(backend, person))


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _forget_objects(person: _Person, s3: Any, buckets: Iterable[str]) -> tuple[int, int]:
    """The photos the person's jobs named, and everything under ``<bucket>/<user_id>/``
    in those buckets and in ``buckets`` (a re-run finds no rows to name any).

    Returns (deleted, left).
    """
    client = s3 or boto3.client("s3")
    exact = {b: set() for b in buckets} | objects.by_bucket(person.uris)
    prefix = f"{person.user_id}/"
    removed = 0
    for bucket, keys in exact.items():
        listed = set(keys)
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            listed.update(o["Key"] for o in page.get("Contents", []))
        removed += objects.delete_keys(client, bucket, listed)
    left = 0
    for bucket, keys in exact.items():
        left += client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("KeyCount", 0)
        left += sum(objects.exists(client, bucket, k) for k in keys if not k.startswith(prefix))
    return removed, left


def forget_everywhere(
    connect: Connect,
    deployment: Brokers,
    user_id: uuid.UUID,
    delete_objects: bool = True,
    s3: Any = None,
    spare: Iterable[str] = (),
    buckets: Iterable[str] = (),
    queues: Iterable[str] = (),
) -> dict[str, Any]:
    """Forget a person everywhere changewatch keeps them, and count what is left.

    Rows (behind a tombstone that refuses any later job for them), queued and delivered
    messages, Celery's stored results and, unless ``delete_objects`` is False, the
    photos. Every job of theirs ends as ``{"status": "forgotten"}``: one taken out of the
    broker here at once, one a worker is running or holds for a retry when it reaches its
    write, which finds the person gone; neither writes anything. ``spare``: task ids
    left alone (the forget_person task running this, whose own result is the report);
    ``buckets``: where to look under ``<user_id>/`` besides the buckets their jobs named;
    ``queues``: other queues to take their messages from (unread notifications);
    ``deployment``: its brokers and result backends (schema/routing.py), every one
    searched, since a person's messages and results can sit on a broker they were
    routed to before the list of brokers changed.
    """
    apps = deployment.every()
    celery = deployment.for_user(user_id)  # where their senders wait for results
    person = _Person(user_id, spare=set(spare), queues=tuple(q for q in queues if q))
    found = _forget_rows(connect, person)
    deleted: dict[str, int] = {
        "sessions": found["sessions"],
        "comparisons": found["comparisons"],
        "baseline_sums": found["baseline_sums"],
        "rejected_messages": found["rejected_messages"],
    }
    messages = [_forget_messages(held, person) for held in readable(apps)]
    deleted["queued_messages"] = sum(m["queued"] for m in messages)
    deleted["delivered_messages"] = sum(m["delivered"] for m in messages)
    report: dict[str, Any] = {"user_id": str(person.user_id), "deleted": deleted}
    remaining: dict[str, int] = {}
    buckets = tuple(buckets)
    if delete_objects and (person.uris or buckets):
        deleted["objects"], remaining["objects"] = _forget_objects(person, s3, buckets)
    # Last: a job that finished just before the forget may store its result late.
    person.task_ids -= person.spare
    counted = [_forget_results(app, person) for app in deployment.every_backend()]
    deleted["results"] = sum(removed for removed, _ in counted)
    remaining["results"] = sum(left for _, left in counted)
    for task_id in sorted(person.dropped):
        # Whoever waits on one of these tasks sees it end, as a running one ends.
        celery.backend.store_result(task_id, FORGOTTEN_RESULT, states.SUCCESS)
    with connect() as conn:
        remaining |= rows.left(conn, person.user_id, person.sessions)
    left = still_held(apps, person.jobs_in)
    if left is not None:
        remaining["messages"] = left
    report["remaining"] = remaining
    return report
