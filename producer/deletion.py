"""delete-session: remove one session as if it had never been analyzed, then prove it.

The producer writes no analysis (migration 0002), and the later sessions' numbers must
change when one goes, so the rows are the worker's to delete: this sends the public
task ``changewatch.delete_session`` and waits for its outcome. In one transaction under
the person's lock the worker takes the session out of every model's running sums,
rescores the later sessions (``score.rescore_suffix``, as an analysis write does) and
deletes its rows behind a tombstone. Then, as forget-user does, the producer takes the
session's jobs out of Redis, deletes its photos and Celery's stored results naming it,
and counts what is left (all zeros).

Every job of the session ends as ``{"status": "deleted"}`` without writing anything: one
taken out of Redis here at once; one a worker runs when the delete commits, at its write
(which finds the session gone and the tombstone); a later one when it starts.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import boto3
from celery import Celery, states

from ..schema import authority, objects
from ..schema.broker import readable, still_held
from ..schema.contract import DELETE_TASK, DELETED_RESULT, QUEUE, DeleteJob, parse_uuid
from ..schema.errors import Code, JobError
from ..schema.status import Status
from .errors import JobFailed, NotFound
from .store import sessions

if TYPE_CHECKING:
    from .api import Producer


def _outcome(producer: Producer, job: DeleteJob, task_id: str, timeout: float) -> dict[str, Any]:
    """The delete task's result, once it ended: the worker's report, or the reason it
    refused (``rejected_messages``, by the task's id) as ``NotFound``/``JobFailed``."""
    result = producer.celery_for(job.user_id).AsyncResult(task_id)
    deadline, delay = time.monotonic() + timeout, 0.05
    while not result.ready():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"delete of session {job.session_id} still {result.state}")
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)
    if result.state == states.SUCCESS and result.result.get("status") == Status.SUCCEEDED:
        return dict(result.result)
    error = {"code": Code.USER_FORGOTTEN, "message": "the person was forgotten"}
    if result.state != states.SUCCESS:
        with producer.connect() as conn:
            row = sessions.rejected_task(conn, task_id)
        error = {
            "code": row["error_code"] if row else Code.INTERNAL_ERROR,
            "message": row["error_message"] if row else str(result.result),
        }
    if error["code"] == Code.SESSION_NOT_FOUND:
        raise NotFound(error["message"])
    raise JobFailed({**job.to_payload(), "status": Status.FAILED, "error": error})


def _drop_messages(
    apps: list[Celery], session_id: uuid.UUID
) -> tuple[dict[str, int], set[str], set[str]]:
    """The session's jobs still in a queue of any broker (one routed there before the
    list of brokers changed included), or delivered and not acknowledged (not the delete
    itself). Returns the counts, the dropped jobs' photo URIs and their task ids."""
    dropped, uris, ids = {"queued": 0, "delivered": 0}, set(), set()
    for held in readable(apps):
        for where, key, message in _jobs_in(held, session_id):
            if where == "queued":
                dropped["queued"] += held.drop_queued(key, message)
            else:
                held.drop_delivered(key)
                dropped["delivered"] += 1
            ids.add(message.task_id or "")
            images = message.kwargs.get("images")
            uris.update(images.values() if isinstance(images, dict) else [])
    ids.discard("")
    return dropped, {u for u in uris if isinstance(u, str) and u.startswith("s3://")}, ids


def _jobs_in(held: Any, session_id: uuid.UUID) -> Iterator[tuple[str, str, Any]]:
    needle = {str(session_id)}
    for key, message in list(held.queued()):
        if message.task != DELETE_TASK and message.mentions(needle):
            yield "queued", key, message
    for item in list(held.delivered()):
        if item.message.task != DELETE_TASK and item.message.mentions(needle):
            yield "delivered", item.tag, item.message


def _delete_objects(uris: Iterable[str], s3: Any) -> tuple[int, int]:
    """The photos by their exact URIs. Returns (deleted, left)."""
    client = s3 or boto3.client("s3")
    named = objects.by_bucket(uris)
    deleted = sum(objects.delete_keys(client, bucket, keys) for bucket, keys in named.items())
    left = sum(objects.exists(client, b, k) for b, keys in named.items() for k in keys)
    return deleted, left


def _delete_results(app: Celery, session_id: uuid.UUID, task_ids: set[str]) -> tuple[int, int]:
    """Celery's stored results of the session's tasks in ``app``'s result backend, and
    any other naming it (the delete's own report among them). Returns (deleted, left)."""
    backend: Any = app.backend
    if getattr(backend, "client", None) is None:  # not a key-value backend: ids only
        for task_id in task_ids:
            app.AsyncResult(task_id).forget()
        return len(task_ids), 0
    client, needle = backend.client, str(session_id).encode()
    keys = [backend.get_key_for_task(t) for t in sorted(task_ids)]
    removed = sum(int(client.delete(*keys[i : i + 500])) for i in range(0, len(keys), 500))
    named = _naming(backend, needle)
    removed += int(client.delete(*named)) if named else 0
    return removed, len(_naming(backend, needle))


def _naming(backend: Any, needle: bytes) -> list[bytes]:
    """Stored result keys whose value contains ``needle``, read 500 at a time."""
    client, found = backend.client, []
    keys = list(client.scan_iter(match=f"{backend.task_keyprefix}*", count=1000))
    for start in range(0, len(keys), 500):
        batch = keys[start : start + 500]
        values = client.mget(batch)
        found += [k for k, v in zip(batch, values, strict=True) if v and needle in v]
    return found


def delete_session(
    producer: Producer,
    session_id: str | uuid.UUID,
    timeout: float = 300.0,
    *,
    delete_objects: bool = True,
    s3: Any = None,
) -> dict[str, Any]:
    """Delete the session everywhere changewatch keeps it, rescore the person's later
    sessions, and count what is left. Run it again after a timeout: it is idempotent."""
    sid = parse_uuid(str(session_id), "session_id")
    with producer.connect() as conn:
        user_id = sessions.owner(conn, sid)
    if user_id is None:
        raise NotFound(f"no session {sid}")
    try:  # the worker deletes only with a token signed by the shared secret
        token = authority.sign(producer.settings.delete_secret, DELETE_TASK, sid)
    except ValueError as exc:
        raise JobError(Code.NOT_AUTHORIZED, str(exc)) from None
    job, task_id = DeleteJob(user_id, sid, token), str(uuid.uuid4())
    producer.celery_for(user_id).send_task(
        DELETE_TASK, kwargs=job.to_payload(), queue=QUEUE, task_id=task_id
    )
    done = _outcome(producer, job, task_id, timeout)
    deleted: dict[str, int] = dict(done["deleted"])
    every = producer.brokers.every()
    dropped, uris, dropped_ids = _drop_messages(every, sid)
    deleted |= {"queued_messages": dropped["queued"], "delivered_messages": dropped["delivered"]}
    remaining: dict[str, int] = {}
    if delete_objects:
        with producer.connect() as conn:
            kept = sessions.photos_in_use(conn, user_id)
        doomed = (set(done["objects"]) | uris) - kept
        deleted["objects"], remaining["objects"] = _delete_objects(doomed, s3)
    # Last: a job that finished just before the delete may store its result late.
    ids = set(done["task_ids"]) | {task_id}
    counted = [_delete_results(app, sid, ids) for app in producer.brokers.every_backend()]
    deleted["results"] = sum(removed for removed, _ in counted)
    remaining["results"] = sum(left for _, left in counted)
    backend = producer.celery_for(user_id).backend  # where the person's senders wait
    for dropped_id in dropped_ids:  # whoever waits on one sees it end, as a running one does
        backend.store_result(dropped_id, DELETED_RESULT, states.SUCCESS)
    with producer.connect() as conn:
        remaining |= sessions.session_left(conn, user_id, sid)
    left = still_held(every, lambda held: _jobs_in(held, sid))
    if left is not None:
        remaining["messages"] = left
    return {
        **job.to_payload(),
        "status": Status.DELETED,
        "already_deleted": done["already_deleted"],
        "rescored": done["rescored"],
        "deleted": deleted,
        "remaining": remaining,
    }
