"""The words a job's state is told in, each declared once.

``Status`` is what ``sessions.status``, ``comparisons.status``, ``backfill_jobs.status``
and task results say; ``Outcome`` is how a task ended, as ``changewatch_jobs_total``
counts it. Both are ``StrEnum``: a member *is* its string on the wire and in Postgres.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    PENDING = "pending"  # a backfill not yet sent
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SUPERSEDED = "superseded"  # a newer request for the session wrote instead
    FORGOTTEN = "forgotten"  # forget-user ran; nothing of the person was written
    DELETED = "deleted"  # delete-session ran; nothing of the session was written
    ENROLLED = "enrolled"


# The states a job no longer leaves by itself.
FINISHED = (Status.SUCCEEDED, Status.FAILED)


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRIED = "retried"
    REJECTED = "rejected"
    SUPERSEDED = "superseded"
    FORGOTTEN = "forgotten"
    DELETED = "deleted"
