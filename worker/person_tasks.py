"""The people tasks, for upstream services in any language: enroll a person, forget one.

``changewatch.enroll_person`` does what ``producer enroll`` does; ``changewatch.forget_person``
runs the very procedure ``producer forget-user`` runs (``schema.forgetting``), here in
the worker because it holds the database, the broker and the storage. Forgetting is
destructive: its payload carries a token (``schema.authority``) checked when the message
is parsed, so a sender without one is refused and recorded before anything is read.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from celery import Task
from psycopg.rows import dict_row

from ..schema.contract import ENROLL_TASK, FORGET_TASK, PersonJob, parse_forget, parse_person
from ..schema.forgetting import forget_everywhere
from ..schema.routing import Brokers
from ..schema.status import Status
from . import store
from .outcome import Policy, job_task
from .resources import Resources


def _nothing_to_record(res: Resources, job: PersonJob, err: Any, task_id: str | None) -> None:
    """A person task has no job row: its failure is the task's result (and its log line)."""


ENROLL = Policy(
    name=ENROLL_TASK,
    kind="enroll",
    parse=lambda res, payload: parse_person(payload),
    record_failure=_nothing_to_record,
    ids=lambda job: {"session_id": None},
    stored_message="person enrolled",
)


@job_task(ENROLL)
def enroll_person(task: Task, res: Resources, job: PersonJob) -> dict[str, Any]:
    """Make the person known, so their analyze and compare jobs are accepted."""
    store.enroll(res.db, job.user_id)
    return {"user_id": str(job.user_id), "status": Status.ENROLLED}


FORGET = Policy(
    name=FORGET_TASK,
    kind="forget",
    parse=lambda res, payload: parse_forget(payload, res.settings.delete_secret),
    record_failure=_nothing_to_record,
    ids=lambda job: {"session_id": None},
    stored_message="person forgotten",
)


@contextmanager
def _connect(res: Resources) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """A connection of its own (dict rows, autocommit), as the producer's forget uses."""
    with psycopg.connect(res.settings.database_url, row_factory=dict_row, autocommit=True) as c:
        yield c


@job_task(FORGET)
def forget_person(task: Task, res: Resources, job: PersonJob) -> dict[str, Any]:
    """Forget the person everywhere, as ``producer forget-user`` does, and prove it: what
    was deleted and what is left (all zeros). The result names nobody: the sender knows
    whom it asked for, and Celery keeps results in Redis for a day."""
    every = Brokers(res.settings, task.app)
    try:
        report = forget_everywhere(
            lambda: _connect(res),
            every,
            job.user_id,
            s3=res.s3,
            spare={task.request.id or ""},
            buckets=res.settings.allowed_buckets,
            queues=(res.settings.notify_queue,),
        )
    finally:
        every.close()
    return {
        "status": Status.FORGOTTEN,
        "deleted": report["deleted"],
        "remaining": report["remaining"],
    }
