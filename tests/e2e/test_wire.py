"""The whole contract over the wire, as a sender in another language uses it: enroll and
forget by task (forgetting only with a token), and a notification for every request,
pushed to the sender's own queue through the outbox."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import redis
from referencing import Registry, Resource

from bench.harness.services import Worker
from changewatch.producer import Producer
from changewatch.schema import authority, json_schemas
from changewatch.schema.broker import Message
from changewatch.schema.contract import ANALYZE_TASK, ENROLL_TASK, FORGET_TASK, QUEUE
from tests.helpers import DELETE_SECRET, NOTIFY_QUEUE, Uploader, query, series_sessions


def _send(producer: Producer, task: str, timeout: float = 120, **kwargs: Any) -> Any:
    """Send a task by name and wait for its Celery result, as any Celery client does."""
    sent = producer.celery.send_task(task, kwargs=kwargs, queue=QUEUE)
    return sent.get(timeout=timeout, propagate=False), sent


def _notifications(producer: Producer, session: uuid.UUID, want: int) -> list[dict[str, Any]]:
    """The notifications for one session in the order they were queued (oldest first)."""
    client = redis.Redis.from_url(producer.celery.conf.broker_url)
    deadline = time.monotonic() + 60
    while True:
        # LPUSH puts the newest first: read the list backwards.
        found = [Message.parse(raw) for raw in reversed(client.lrange(NOTIFY_QUEUE, 0, -1))]
        mine = [m for m in found if m.kwargs.get("session_id") == str(session)]
        if (want and len(mine) >= want) or (not want and not mine) or time.monotonic() > deadline:
            for m in mine:
                assert m.task == "changewatch.notification"
                assert m.task_id == m.kwargs["notification_id"]
            return [m.kwargs for m in mine]
        time.sleep(0.2)


def _validator() -> jsonschema.Draft202012Validator:
    folder = json_schemas.FOLDER
    schemas = {p.name: json.loads(p.read_text()) for p in folder.glob("*.json")}
    registry: Registry[Any] = Registry().with_resources(
        (s["$id"], Resource.from_contents(s)) for s in schemas.values()
    )
    return jsonschema.Draft202012Validator(
        schemas["changewatch.notification.json"], registry=registry
    )


def test_enroll_analyze_and_notified_once_per_request_in_order(
    worker: Worker, photos: Path, uploader: Uploader, producer: Producer
) -> None:
    """A sender enrolls by task, re-analyzes a session, and gets one notification per
    request on its own queue: the older one superseded or done, then the newer, each
    valid against the published schema, the last carrying the result ``producer result``
    reads. The outbox is empty once they are sent."""
    user, session = uuid.uuid4(), uuid.uuid4()
    enrolled, _ = _send(producer, ENROLL_TASK, user_id=str(user))
    assert enrolled == {"user_id": str(user), "status": "enrolled"}
    images = uploader.session(user, series_sessions(photos)[0])
    first = producer.celery.send_task(
        ANALYZE_TASK,
        kwargs={"user_id": str(user), "session_id": str(session),
                "captured_at": "2026-02-01T08:00:00Z", "images": images},
        queue=QUEUE,
    )  # fmt: skip
    first.get(timeout=180)
    second = producer.analyze(user, session, "2026-02-02T08:00:00Z", images)
    told = _notifications(producer, session, 2)
    assert [n["request_task_id"] for n in told] == [first.id, second["task_id"]]
    assert [n["status"] for n in told] == ["succeeded", "succeeded"]
    assert len({n["notification_id"] for n in told}) == 2
    validator = _validator()
    for n in told:
        validator.validate(n)
    assert told[-1]["result"] == producer.result(session)
    deadline = time.monotonic() + 10
    while query(producer.dsn, "SELECT count(*) FROM outbox")[0][0] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert query(producer.dsn, "SELECT count(*) FROM outbox") == [(0,)]


def test_a_malformed_job_is_notified_as_failed_with_its_code(
    worker: Worker, producer: Producer
) -> None:
    user, session = uuid.uuid4(), uuid.uuid4()
    producer.enroll(user)
    sent = producer.celery.send_task(
        ANALYZE_TASK,
        kwargs={"user_id": str(user), "session_id": str(session),
                "captured_at": "2026-02-01T08:00:00Z", "images": {"front": "s3://b/k.jpg"}},
        queue=QUEUE,
    )  # fmt: skip
    (told,) = _notifications(producer, session, 1)
    assert told["status"] == "failed" and told["request_task_id"] == sent.id
    assert told["error"]["code"] == "too_few_images"
    assert producer.status(session)["error"]["code"] == "too_few_images"


def _token(user: uuid.UUID, **options: Any) -> str:
    return authority.sign(DELETE_SECRET, FORGET_TASK, user, **options)


def test_forgetting_needs_a_token_for_that_person(
    worker: Worker, photos: Path, uploader: Uploader, producer: Producer
) -> None:
    """Without a valid token for that very person, forget_person is refused with its code,
    recorded, and deletes nothing; with one, the person is gone everywhere."""
    user, other, session = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    images = uploader.session(user, series_sessions(photos)[0])
    producer.wait(producer.analyze(user, session, "2026-02-01T08:00:00Z", images)["session_id"])
    assert _notifications(producer, session, 1)  # unread on the sender's queue
    forged = authority.sign("not-the-secret", FORGET_TASK, user)
    refusals = {
        "none": ("", "not_authorized"),
        "forged": (forged, "not_authorized"),
        "another person's": (_token(other), "not_authorized"),
        "expired": (_token(user, now=time.time() - 4000), "token_expired"),
    }
    for token, code in refusals.values():
        result, sent = _send(producer, FORGET_TASK, user_id=str(user), token=token)
        assert sent.state == "FAILURE", result
        assert query(
            producer.dsn,
            "SELECT error_code, payload ? 'token' FROM rejected_messages WHERE task_id = %s",
            (sent.id,),
        ) == [(code, False)]
    assert producer.result(session)["session_id"] == str(session)  # nothing deleted
    report, _ = _send(producer, FORGET_TASK, user_id=str(user), token=_token(user))
    assert report["status"] == "forgotten"
    assert report["deleted"]["sessions"] == 1 and report["deleted"]["objects"] >= 4
    assert set(report["remaining"].values()) == {0}, report["remaining"]
    assert str(user) not in json.dumps(report)
    assert _notifications(producer, session, 0) == []  # taken out of the sender's queue too
    again, _ = _send(producer, ENROLL_TASK, user_id=str(user))
    assert again == {"status": "forgotten"}
