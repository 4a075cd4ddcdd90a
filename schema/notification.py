"""The notification a finished job sends back to the upstream service that asked for it.

It is a Celery task message (``changewatch.notification``, keyword arguments only, JSON)
sent to the queue the upstream service names (``CHANGEWATCH_NOTIFY_QUEUE``), so its own
worker consumes it: celery-node's, or any Celery port's. Each analysis request is told
once, when it ends: ``succeeded`` with the result ``producer result`` reads, ``failed``
with the error, or ``superseded`` when a newer request for the session ended first
(told just before that newer one, so a session's notifications come in request order).
A message refused before it became a request (a malformed job with a person's valid ids)
is told ``failed`` with its code too, and so is every comparison that ends (``kind``
``comparison``, its ``session_id`` the current session's).

Delivery is at least once: ``notification_id`` is also the Celery task id, fixed when
the notification is written (transactional outbox, migration 0009), so a re-send carries
the same id and the receiver deduplicates on it.
"""

from __future__ import annotations

import uuid
from typing import Any

from .contract import CONTRACT_VERSION, VERSION_FIELD
from .status import Status

KIND_ANALYSIS = "analysis"
KIND_COMPARISON = "comparison"  # session_id: the current session; result: the comparison
# notification ids are UUIDv5 of the request's task id in this namespace: stable.
NAMESPACE = uuid.UUID("5d1f4a9e-3c2b-5e8f-9a7d-6b0c1e2f3a4b")


def notification_id(request_task_id: str, status: str) -> uuid.UUID:
    """One id per request and ending: the same ending sent twice has the same id."""
    return uuid.uuid5(NAMESPACE, f"{request_task_id}:{status}")


def body(
    *,
    session_id: uuid.UUID,
    user_id: uuid.UUID,
    request_task_id: str,
    status: str,
    result: dict[str, Any] | None = None,
    error: dict[str, str] | None = None,
    superseded_by: str | None = None,
    kind: str = KIND_ANALYSIS,
) -> dict[str, Any]:
    """The notification's keyword arguments (``changewatch.notification.json``)."""
    return {
        "notification_id": str(notification_id(request_task_id, status)),
        "kind": kind,
        "session_id": str(session_id),
        "user_id": str(user_id),
        "request_task_id": request_task_id,
        "status": status,
        "result": result,
        "error": error,
        "superseded_by": superseded_by,
        VERSION_FIELD: CONTRACT_VERSION,
    }


def superseded(
    session_id: uuid.UUID, user_id: uuid.UUID, request_task_id: str, newer: str
) -> dict[str, Any]:
    return body(
        session_id=session_id,
        user_id=user_id,
        request_task_id=request_task_id,
        status=Status.SUPERSEDED,
        superseded_by=newer,
    )
