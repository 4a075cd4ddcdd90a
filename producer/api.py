"""The Python producer: validate a job, record it as queued, send the task by name.

It imports neither torch nor the worker's tasks: a Celery app configured from the same
settings sends messages by task name, exactly as non-Python producers do.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import psycopg
from celery import Celery
from psycopg.rows import dict_row

from ..schema import results
from ..schema.contract import (
    ANALYZE_TASK,
    COMPARE_TASK,
    QUEUE,
    CompareJob,
    check_compared,
    parse_analyze,
    parse_compare,
    parse_person,
    parse_uuid,
)
from ..schema.errors import Code
from ..schema.routing import Brokers, sending_app
from ..schema.status import FINISHED, Status
from ..settings import Settings
from .deletion import delete_session
from .errors import JobFailed, NotFound
from .store import comparisons, people, sessions

# What status says of a session delete-session removed (its tombstone is all that is left).
_DELETED = {"code": Code.SESSION_DELETED, "message": "the session was deleted (delete-session)"}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _error(row: dict[str, Any]) -> dict[str, str] | None:
    """A row's recorded failure as the API reports it; None when it has none."""
    if not row["error_code"]:
        return None
    return {"code": row["error_code"], "message": row["error_message"]}


class Producer:
    """``settings``: where the broker and database are (default: read from the
    environment now, as the CLI does)."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        dsn: str | None = None,
        celery: Celery | None = None,
    ) -> None:
        settings = settings or Settings.from_env()
        self.settings = settings
        self.dsn = dsn or settings.database_url
        self.celery = celery or sending_app(settings)
        # Every message about a person goes to their broker (schema/routing.py).
        self.brokers = Brokers(settings, self.celery)
        self.notify_queue = settings.notify_queue  # forget-user empties it of the person

    def _reading(self) -> dict[str, Any]:
        """How results are read (schema.results): the settings that shape the evidence."""
        return {"fixed": self.settings.variation, "trend_sessions": self.settings.trend_sessions}

    def celery_for(self, user_id: str | uuid.UUID) -> Celery:
        """The app whose broker takes this person's messages (the only one, unless
        ``CHANGEWATCH_BROKERS`` lists several)."""
        return self.brokers.for_user(user_id)

    def connect(self) -> psycopg.Connection[dict[str, Any]]:
        return psycopg.connect(self.dsn, row_factory=dict_row, autocommit=True)

    # -- people ------------------------------------------------------------------

    def enroll(self, user_id: str | uuid.UUID) -> dict[str, Any]:
        """Make the person known, so jobs for them from any sender are accepted.

        ``analyze`` enrolls by itself; senders that write to the broker directly enroll
        each person once with this (or ``python -m changewatch.producer enroll``) before their first
        job: a job for a person never enrolled is refused with ``unknown_user``.
        """
        user = parse_person({"user_id": str(user_id)}).user_id
        with self.connect() as conn, conn.transaction():
            people.enroll(conn, user)
        return {"user_id": str(user), "status": Status.ENROLLED}

    # -- analyze -----------------------------------------------------------------

    def analyze(
        self,
        user_id: str | uuid.UUID,
        session_id: str | uuid.UUID,
        captured_at: str | datetime,
        images: Mapping[str, str] | list[dict[str, str]],
    ) -> dict[str, Any]:
        job = parse_analyze(
            {
                "user_id": str(user_id),
                "session_id": str(session_id),
                "captured_at": captured_at
                if isinstance(captured_at, str)
                else captured_at.isoformat(),
                "images": images,
            }
        )
        task_id = str(uuid.uuid4())
        payload = job.to_payload()
        with self.connect() as conn:
            sessions.record_request(conn, job, task_id)
            try:
                self.celery_for(job.user_id).send_task(
                    ANALYZE_TASK, kwargs=payload, queue=QUEUE, task_id=task_id
                )
            except Exception as exc:
                why = f"could not send the task: {type(exc).__name__}: {exc}"
                sessions.enqueue_failed(conn, job.user_id, job.session_id, task_id, why)
                raise
        return {"session_id": str(job.session_id), "status": Status.QUEUED, "task_id": task_id}

    def status(self, session_id: str | uuid.UUID) -> dict[str, Any]:
        sid = parse_uuid(str(session_id), "session_id")
        with self.connect() as conn:
            row = sessions.find(conn, sid)
            if row is None:
                rejected = sessions.last_rejected(conn, sid)
                deleted = sessions.is_deleted(conn, sid)
        if row is None:
            if deleted:  # a waiter on one of its jobs stops here
                return {"session_id": str(sid), "status": Status.FAILED, "error": _DELETED}
            if rejected is None:
                raise NotFound(f"no session {sid}")
            # A message sent straight to the broker that was not a valid job.
            return {
                "session_id": str(sid),
                "status": Status.FAILED,
                "error": _error(rejected),
                "rejected_message": True,
                "task_id": rejected["task_id"],
                "finished_at": _iso(rejected["received_at"]),
            }
        return {
            "session_id": str(row["session_id"]),
            "user_id": str(row["user_id"]),
            "status": row["status"],
            "error": _error(row),
            "attempts": row["attempts"],
            "captured_at": _iso(row["captured_at"]),
            "created_at": _iso(row["created_at"]),
            "started_at": _iso(row["started_at"]),
            "finished_at": _iso(row["finished_at"]),
            "task_id": row["task_id"],
        }

    def result(self, session_id: str | uuid.UUID) -> dict[str, Any]:
        sid = parse_uuid(str(session_id), "session_id")
        with self.connect() as conn:
            found = results.session_result(conn, sid, **self._reading())
        if found is None:
            status = self.status(sid)  # raises NotFound for an unknown session
            if status["status"] == Status.FAILED:
                raise JobFailed(status)
            raise NotFound(f"session {sid} has no analysis yet (status {status['status']})")
        return found

    def history(self, user_id: str | uuid.UUID) -> list[dict[str, Any]]:
        """The person's analyzed sessions in capture order, each as ``result`` gives it."""
        with self.connect() as conn:
            return results.person_history(
                conn, parse_uuid(str(user_id), "user_id"), **self._reading()
            )

    def delete_session(
        self,
        session_id: str | uuid.UUID,
        timeout: float = 300.0,
        *,
        delete_objects: bool = True,
        s3: Any = None,
    ) -> dict[str, Any]:
        """Remove one session as if it had never been analyzed, and count what is left
        (``producer.deletion``): a worker rescores the person's later sessions."""
        return delete_session(self, session_id, timeout, delete_objects=delete_objects, s3=s3)

    def wait(self, session_id: str | uuid.UUID, timeout: float = 300.0) -> dict[str, Any]:
        """Poll Postgres, the source of truth, until the job finished; its result or JobFailed."""
        status = self._poll(lambda: self.status(session_id), timeout, f"session {session_id}")
        if status["status"] == Status.FAILED:
            raise JobFailed(status)
        return self.result(session_id)

    # -- compare -----------------------------------------------------------------

    def compare(
        self,
        user_id: str | uuid.UUID,
        current: str | uuid.UUID,
        previous: str | uuid.UUID,
    ) -> dict[str, Any]:
        job = parse_compare(
            {
                "user_id": str(user_id),
                "current_session_id": str(current),
                "previous_session_id": str(previous),
            }
        )
        with self.connect() as conn:
            owners = sessions.owners(conn, [job.current_session_id, job.previous_session_id])
            for sid in (job.current_session_id, job.previous_session_id):
                check_compared(sid, owners.get(sid), job.user_id)
            task_id = str(uuid.uuid4())
            comparisons.record(conn, job, task_id)
        self.celery_for(job.user_id).send_task(
            COMPARE_TASK, kwargs=job.to_payload(), queue=QUEUE, task_id=task_id
        )
        return {**job.to_payload(), "status": Status.QUEUED, "task_id": task_id}

    def comparison(self, current: str | uuid.UUID, previous: str | uuid.UUID) -> dict[str, Any]:
        """The stored comparison, if it still follows from the current analyses.

        A comparison remembers the analysis revisions it was computed from; when either
        session was re-analyzed or rescored since (or the active model changed), its
        numbers are stale: it is sent again and reported as queued with ``stale: true``.
        """
        cur = parse_uuid(str(current), "current")
        prev = parse_uuid(str(previous), "previous")
        with self.connect() as conn:
            row = comparisons.find(conn, cur, prev)
            if row is not None and row["status"] == Status.SUCCEEDED and row["stale"]:
                task_id = str(uuid.uuid4())
                comparisons.requeue_succeeded(conn, row["user_id"], cur, prev, task_id)
                job = CompareJob(row["user_id"], cur, prev)
                self.celery_for(job.user_id).send_task(
                    COMPARE_TASK, kwargs=job.to_payload(), queue=QUEUE, task_id=task_id
                )
                row = {**row, "status": Status.QUEUED, "error_code": None}
        if row is None:
            raise NotFound(f"no comparison of {current} with {previous}")
        if row["status"] == Status.SUCCEEDED:
            return {**row["result"], "status": Status.SUCCEEDED}
        out = {
            "user_id": str(row["user_id"]),
            "current_session_id": str(row["current_session_id"]),
            "previous_session_id": str(row["previous_session_id"]),
            "status": row["status"],
            "error": _error(row),
        }
        if row["stale"] and row["status"] == Status.QUEUED:
            out["stale"] = True
        return out

    def wait_comparison(
        self, current: str | uuid.UUID, previous: str | uuid.UUID, timeout: float = 300.0
    ) -> dict[str, Any]:
        out = self._poll(lambda: self.comparison(current, previous), timeout, "comparison")
        if out["status"] == Status.FAILED:
            raise JobFailed(out)
        return out

    @staticmethod
    def _poll(read: Any, timeout: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            try:
                out: dict[str, Any] = read()
                state = out["status"]
            except NotFound:
                # A job sent straight to the broker has no row until a worker picks it up.
                state = "not yet recorded"
            if state in FINISHED:
                return out
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{what} still {state} after {timeout:g}s")
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)
