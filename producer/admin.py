"""Operator actions: replay failed jobs, and forget a person completely."""

from __future__ import annotations

from typing import Any

from ..schema.contract import parse_person, parse_uuid
from ..schema.errors import Code, JobError
from ..schema.forgetting import forget_everywhere
from .api import Producer
from .store import sessions


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


def forget_user(
    producer: Producer, user_id: str, delete_objects: bool = True, s3: Any = None
) -> dict[str, Any]:
    """Forget a person everywhere changewatch keeps them, and count what is left
    (schema.forgetting: the same procedure the worker's forget_person task runs)."""
    person = parse_person({"user_id": user_id}).user_id
    return forget_everywhere(
        producer.connect,
        producer.brokers,
        person,
        delete_objects,
        s3,
        queues=(producer.notify_queue,),
    )
