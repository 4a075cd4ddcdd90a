"""Operator actions: replay failed jobs, and forget a person completely."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.exceptions import ClientError
from celery import states

from ..schema import brokers
from ..schema.broker import Broker, Message, broker
from ..schema.contract import FORGOTTEN_RESULT, parse_uuid
from ..schema.errors import Code, JobError
from .api import Producer
from .store import people, sessions


def retry_failed(producer: Producer, session_id: str | None = None) -> list[dict[str, Any]]:
    """Enqueue failed jobs again from what was recorded of them (one, or all failed)."""
    sid = None if session_id is None else parse_uuid(session_id, "session_id")
    with producer.connect() as conn:
        rows = sessions.failed(conn, sid)
    if session_id is not None and not rows:
        raise JobError(Code.NOT_FAILED, f"session {session_id} is not a failed job")
    return [
        producer.analyze(r["user_id"], r["session_id"], r["captured_at"], r["images"]) for r in rows
    ]


@dataclass
class _Person:
    """What forget-user found of one person, to delete everywhere it may be."""

    user_id: uuid.UUID
    sessions: list[uuid.UUID] = field(default_factory=list)
    task_ids: set[str] = field(default_factory=set)
    uris: set[str] = field(default_factory=set)
    dropped: set[str] = field(default_factory=set)  # tasks taken out of the broker

    @property
    def needles(self) -> set[str]:
        return {str(self.user_id)} | {str(s) for s in self.sessions}

    def jobs_in(self, held: Broker) -> Iterator[tuple[str, str, Message]]:
        """The person's jobs in Redis: ("queued", queue key, message) for those waiting,
        ("delivered", tag, message) for those a worker took and has not acknowledged."""
        ids = {n.lower() for n in self.needles}
        for key, message in list(held.queued()):
            if message.mentions(ids):
                yield "queued", key, message
        for item in list(held.delivered()):
            if item.message.mentions(ids):
                yield "delivered", item.tag, item.message


def _forget_rows(producer: Producer, person: _Person) -> dict[str, int]:
    """The person's rows, gone in one transaction behind a tombstone (store.people)."""
    with producer.connect() as conn:
        found = people.forget(conn, person.user_id)
    person.sessions.extend(found.sessions)
    person.uris |= found.uris
    person.task_ids |= found.task_ids
    return found.counts


def _forget_messages(producer: Producer, person: _Person) -> dict[str, int]:
    """The person's jobs still in a queue, or delivered and not acknowledged."""
    dropped = {"queued": 0, "delivered": 0}
    if not brokers.app_keeps_jobs_in_redis(producer.celery):
        return dropped  # RabbitMQ cannot list a queue: the worker refuses them when consumed
    with broker(producer.celery) as held:
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


def _forget_results(producer: Producer, person: _Person) -> tuple[int, int]:
    """Celery's stored results of the person's tasks: by task id, and any other result
    that names them (a sender's own task ids, messages no worker recorded).

    Returns (deleted, left).
    """
    backend: Any = producer.celery.backend
    if getattr(backend, "client", None) is None:  # not a key-value backend: ids only
        for task_id in person.task_ids:
            producer.celery.AsyncResult(task_id).forget()
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


def _forget_objects(person: _Person, s3: Any) -> tuple[int, int]:
    """The photos the person's jobs named, and everything under ``<bucket>/<user_id>/``.

    Returns (deleted, left).
    """
    client = s3 or boto3.client("s3")
    exact: dict[str, set[str]] = {}
    for uri in person.uris:
        bucket, _, key = uri[len("s3://") :].partition("/")
        exact.setdefault(bucket, set()).add(key)
    prefix = f"{person.user_id}/"
    removed = 0
    for bucket, keys in exact.items():
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys.update(o["Key"] for o in page.get("Contents", []))
        ordered = sorted(keys)
        for start in range(0, len(ordered), 1000):  # delete_objects takes 1,000 at most
            chunk = [{"Key": k} for k in ordered[start : start + 1000]]
            client.delete_objects(Bucket=bucket, Delete={"Objects": chunk, "Quiet": True})
        removed += len(ordered)
    left = 0
    for bucket, keys in exact.items():
        left += client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("KeyCount", 0)
        left += sum(_exists(client, bucket, k) for k in keys if not k.startswith(prefix))
    return removed, left


def _exists(client: Any, bucket: str, key: str) -> bool:
    try:
        client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


def forget_user(
    producer: Producer, user_id: str, delete_objects: bool = True, s3: Any = None
) -> dict[str, Any]:
    """Forget a person everywhere changewatch keeps them, and count what is left.

    Rows (behind a tombstone that refuses any later job for them), queued and delivered
    messages, Celery's stored results and, unless ``delete_objects`` is False, the
    photos. Every job of theirs ends as ``{"status": "forgotten"}``: one taken out of the
    broker here at once, one a worker is running or holds for a retry when it reaches its
    write, which finds the person gone; neither writes anything.
    """
    person = _Person(parse_uuid(user_id, "user_id"))
    rows = _forget_rows(producer, person)
    deleted: dict[str, int] = {
        "sessions": rows["sessions"],
        "comparisons": rows["comparisons"],
        "baseline_sums": rows["baseline_sums"],
        "rejected_messages": rows["rejected_messages"],
    }
    messages = _forget_messages(producer, person)
    deleted["queued_messages"] = messages["queued"]
    deleted["delivered_messages"] = messages["delivered"]
    report: dict[str, Any] = {"user_id": str(person.user_id), "deleted": deleted}
    remaining: dict[str, int] = {}
    if delete_objects and person.uris:
        deleted["objects"], remaining["objects"] = _forget_objects(person, s3)
    # Last: a job that finished just before the forget may store its result late.
    deleted["results"], remaining["results"] = _forget_results(producer, person)
    for task_id in sorted(person.dropped):
        # Whoever waits on one of these tasks sees it end, as a running one ends.
        producer.celery.backend.store_result(task_id, FORGOTTEN_RESULT, states.SUCCESS)
    with producer.connect() as conn:
        remaining |= people.left(conn, person.user_id, person.sessions)
    if brokers.app_keeps_jobs_in_redis(producer.celery):
        with broker(producer.celery) as held:
            remaining["messages"] = sum(1 for _ in person.jobs_in(held))
    report["remaining"] = remaining
    return report
