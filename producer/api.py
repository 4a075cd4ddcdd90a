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
from psycopg.types.json import Jsonb

from changewatch.celeryconfig import celery_config
from changewatch.schema import results
from changewatch.schema.contract import (
    ANALYZE_TASK,
    COMPARE_TASK,
    QUEUE,
    AnalyzeJob,
    CompareJob,
    check_compared,
    other_users_session,
    parse_analyze,
    parse_compare,
    parse_uuid,
)
from changewatch.schema.errors import Code, JobError
from changewatch.schema.status import FINISHED, Status
from changewatch.settings import Settings


class JobFailed(RuntimeError):
    """The job ran and failed; ``status`` holds the recorded code and message."""

    def __init__(self, status: dict[str, Any]) -> None:
        error = status.get("error") or {}
        super().__init__(f"{error.get('code', 'failed')}: {error.get('message', '')}")
        self.status = status


class NotFound(LookupError):
    pass


def celery_app(settings: Settings) -> Celery:
    """A Celery app that only sends: configured like the workers', no tasks imported."""
    app = Celery("changewatch-producer")
    app.config_from_object(celery_config(settings))
    return app


def _enroll(conn: psycopg.Connection[Any], user_id: uuid.UUID) -> None:
    """Enroll the person (idempotent), unless forget-user was run for them."""
    row = conn.execute("SELECT enroll_user(%s) AS standing", (user_id,)).fetchone()
    assert row is not None
    if row["standing"] == Status.FORGOTTEN:
        raise JobError(Code.USER_FORGOTTEN, "this person was forgotten (forget-user); not enqueued")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


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
        self.dsn = dsn or settings.database_url
        self.celery = celery or celery_app(settings)

    def connect(self) -> psycopg.Connection[dict[str, Any]]:
        return psycopg.connect(self.dsn, row_factory=dict_row, autocommit=True)

    # -- people ------------------------------------------------------------------

    def enroll(self, user_id: str | uuid.UUID) -> dict[str, Any]:
        """Make the person known, so jobs for them from any sender are accepted.

        ``analyze`` enrolls by itself; senders that write to the broker directly enroll
        each person once with this (or ``python -m changewatch.producer enroll``) before their first
        job: a job for a person never enrolled is refused with ``unknown_user``.
        """
        user = parse_uuid(str(user_id), "user_id")
        with self.connect() as conn, conn.transaction():
            _enroll(conn, user)
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
            self._record_request(conn, job, task_id)
            try:
                self.celery.send_task(ANALYZE_TASK, kwargs=payload, queue=QUEUE, task_id=task_id)
            except Exception as exc:
                # Never leave a "queued" job that no message will ever pick up.
                # Only this attempt's own row: never overwrite a result a worker stored.
                conn.execute(
                    "UPDATE sessions SET status = 'failed', error_code = 'enqueue_failed',"
                    " error_message = %s, updated_at = now()"
                    " WHERE session_id = %s AND task_id = %s AND status = 'queued'",
                    (
                        f"could not send the task: {type(exc).__name__}: {exc}",
                        job.session_id,
                        task_id,
                    ),
                )
                raise
        return {"session_id": str(job.session_id), "status": Status.QUEUED, "task_id": task_id}

    @staticmethod
    def _record_request(
        conn: psycopg.Connection[dict[str, Any]], job: AnalyzeJob, task_id: str
    ) -> None:
        """The session as queued, and the request numbered: newer than every one recorded
        before it, whatever order the workers run them in."""
        with conn.transaction():
            _enroll(conn, job.user_id)
            row = conn.execute(
                """
                INSERT INTO sessions (session_id, user_id, captured_at, images, status, task_id)
                VALUES (%(sid)s, %(uid)s, %(at)s, %(images)s, 'queued', %(task)s)
                ON CONFLICT (session_id) DO UPDATE
                   SET status = 'queued', captured_at = EXCLUDED.captured_at,
                       images = EXCLUDED.images, task_id = EXCLUDED.task_id,
                       error_code = NULL, error_message = NULL, finished_at = NULL,
                       updated_at = now()
                 WHERE sessions.user_id = EXCLUDED.user_id
                RETURNING session_id
                """,
                {
                    "sid": job.session_id,
                    "uid": job.user_id,
                    "at": job.captured_at,
                    "images": Jsonb(job.to_payload()["images"]),
                    "task": task_id,
                },
            ).fetchone()
            if row is None:
                raise other_users_session()
            conn.execute(
                """
                WITH request AS (
                    INSERT INTO analysis_requests (task_id, session_id) VALUES (%s, %s)
                    RETURNING seq, session_id)
                UPDATE sessions s SET request_seq = request.seq
                  FROM request WHERE s.session_id = request.session_id
                """,
                (task_id, job.session_id),
            )

    def status(self, session_id: str | uuid.UUID) -> dict[str, Any]:
        sid = parse_uuid(str(session_id), "session_id")
        with self.connect() as conn:
            row = conn.execute("SELECT * FROM sessions WHERE session_id = %s", (sid,)).fetchone()
            if row is None:
                rejected = conn.execute(
                    "SELECT task_id, error_code, error_message, received_at"
                    " FROM rejected_messages WHERE session_id = %s"
                    " ORDER BY received_at DESC LIMIT 1",
                    (sid,),
                ).fetchone()
        if row is None:
            if rejected is None:
                raise NotFound(f"no session {sid}")
            # A message sent straight to the broker that was not a valid job.
            return {
                "session_id": str(sid),
                "status": Status.FAILED,
                "error": {"code": rejected["error_code"], "message": rejected["error_message"]},
                "rejected_message": True,
                "task_id": rejected["task_id"],
                "finished_at": _iso(rejected["received_at"]),
            }
        return {
            "session_id": str(row["session_id"]),
            "user_id": str(row["user_id"]),
            "status": row["status"],
            "error": {"code": row["error_code"], "message": row["error_message"]}
            if row["error_code"]
            else None,
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
            found = results.session_result(conn, sid)
        if found is None:
            status = self.status(sid)  # raises NotFound for an unknown session
            if status["status"] == Status.FAILED:
                raise JobFailed(status)
            raise NotFound(f"session {sid} has no analysis yet (status {status['status']})")
        return found

    def history(self, user_id: str | uuid.UUID) -> list[dict[str, Any]]:
        """The person's analyzed sessions in capture order, each as ``result`` gives it."""
        with self.connect() as conn:
            return results.person_history(conn, parse_uuid(str(user_id), "user_id"))

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
            owners = {
                r["session_id"]: r["user_id"]
                for r in conn.execute(
                    "SELECT session_id, user_id FROM sessions WHERE session_id = ANY(%s)",
                    ([job.current_session_id, job.previous_session_id],),
                )
            }
            for sid in (job.current_session_id, job.previous_session_id):
                check_compared(sid, owners.get(sid), job.user_id)
            task_id = str(uuid.uuid4())
            conn.execute(
                """
                INSERT INTO comparisons (current_session_id, previous_session_id, user_id, task_id)
                VALUES (%s, %s, %s, %s)
                ON CONFLICT (current_session_id, previous_session_id) DO UPDATE
                   SET status = 'queued', result = NULL, error_code = NULL,
                       error_message = NULL, task_id = EXCLUDED.task_id, updated_at = now()
                """,
                (job.current_session_id, job.previous_session_id, job.user_id, task_id),
            )
        self.celery.send_task(COMPARE_TASK, kwargs=job.to_payload(), queue=QUEUE, task_id=task_id)
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
            row = conn.execute(
                """
                SELECT c.*,
                       c.current_revision IS NOT NULL
                       AND (c.model_id, c.current_revision, c.previous_revision)
                           IS DISTINCT FROM (m.model_id, ac.revision, ap.revision) AS stale
                  FROM comparisons c
                  LEFT JOIN models m ON m.active
                  LEFT JOIN analyses ac ON ac.session_id = c.current_session_id
                                       AND ac.model_id = m.model_id
                  LEFT JOIN analyses ap ON ap.session_id = c.previous_session_id
                                       AND ap.model_id = m.model_id
                 WHERE c.current_session_id = %s AND c.previous_session_id = %s
                """,
                (cur, prev),
            ).fetchone()
            if row is not None and row["status"] == Status.SUCCEEDED and row["stale"]:
                task_id = str(uuid.uuid4())
                conn.execute(
                    "UPDATE comparisons SET status = 'queued', task_id = %s, updated_at = now()"
                    " WHERE current_session_id = %s AND previous_session_id = %s"
                    " AND status = 'succeeded'",
                    (task_id, cur, prev),
                )
                job = CompareJob(row["user_id"], cur, prev)
                self.celery.send_task(
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
            "error": {"code": row["error_code"], "message": row["error_message"]}
            if row["error_code"]
            else None,
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
