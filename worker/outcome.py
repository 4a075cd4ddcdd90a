"""What a task's ending means: one policy for every task, not one per task body.

- The message does not parse: it is recorded as rejected (and its session, if any,
  failed), and the task ends with that ``JobError``.
- A ``Refused`` job (another person's session, a person never enrolled) touches nothing:
  recorded as a rejected message only.
- The person was forgotten, or the job's session deleted: the job ends ``forgotten``
  (``deleted``) having written nothing of theirs.
- A ``JobError`` is permanent: recorded on the job at once, never retried, except the
  task's ``wait_for`` codes (a comparison sent before its analyses finished).
- A transient fault (storage or the database unreachable) is retried with Celery's
  backoff, and recorded as ``dependency_unavailable`` once the retries are spent.
- Anything else is a bug or a missing grant: recorded as ``internal_error``.
- When the failure itself cannot be recorded (the database is down), the job is retried
  once more, so its row never stays ``running`` with its message acknowledged.

Every ending counts once in ``changewatch_jobs_total`` and writes one JSON log line.
Task bodies get their resources passed down and read as parse -> stages -> result.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import psycopg_pool
from botocore.exceptions import BotoCoreError, ClientError
from celery import Task
from celery.exceptions import Reject, Retry
from celery.utils.time import get_exponential_backoff_interval

from ..schema.contract import DELETED_RESULT, FORGOTTEN_RESULT
from ..schema.errors import Code, JobError
from ..schema.status import Outcome, Status
from . import metrics, resources, store
from .app import app
from .logs import job_event, job_ids

log = logging.getLogger(__name__)

# Faults that may pass: the same job can succeed later without any change.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    BotoCoreError,
    ClientError,
    psycopg.OperationalError,
    psycopg_pool.PoolTimeout,
    TimeoutError,
    ConnectionError,
)
# Eight retries span 3 to 6 minutes (below). With five (31-62 s), the soak's schedule (a
# fault every 8 s, something down about half the time, a dead worker's jobs back after
# ~15 s) failed about one job in a hundred as dependency_unavailable.
MAX_RETRIES = 8
# Codes that end a job quietly, as written nothing, with the result that names no one.
GONE: dict[str, tuple[Outcome, dict[str, str]]] = {
    Code.USER_FORGOTTEN: (Outcome.FORGOTTEN, FORGOTTEN_RESULT),
    Code.SESSION_DELETED: (Outcome.DELETED, DELETED_RESULT),
}

Resources = resources.Resources


class Refused(Exception):
    """The job may not touch what it names (another person's session, a person never
    enrolled): recorded as a rejected message, and nothing else."""

    def __init__(self, error: JobError) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass(frozen=True)
class Policy:
    """What differs between tasks: how a message parses, where a failure is recorded."""

    name: str  # the public task name
    kind: str  # its metric label: analyze, compare, embed
    parse: Callable[[Resources, dict[str, Any]], Any]
    record_failure: Callable[[Resources, Any, JobError, str | None], None]
    ids: Callable[[Any], dict[str, Any]]  # for the log line: session_id, ...
    stored_message: str  # the success line's message (the soak counts "analysis stored")
    wait_for: frozenset[str] = frozenset()  # codes retried while retries are left
    seconds: Any = None  # a histogram of whole successful jobs, if any


def backoff(task: Task) -> float:
    """Seconds before retry n: half of min(120, 2 * 2**n) fixed, the other half random.

    With full jitter (anything from 0 to the step) five draws near 0 spend every retry
    within seconds, and an outage of S3 or Postgres of ~15 s failed one queued job in
    twenty (boto's retry quota drains, so each attempt then fails at once). With half
    fixed, the eight retries of a job span at least 1+2+4+8+16+32+60+60 = 183 s (366 s
    at most), and the jitter still spreads the jobs that failed together.
    """
    step = get_exponential_backoff_interval(factor=2, retries=task.request.retries, maximum=120)
    return step / 2 + random.uniform(0, step / 2)  # noqa: S311  # jitter, not a secret


def retry(task: Task, exc: BaseException | None, **options: Any) -> Retry:
    """Celery's ``retry()``, but a retry that cannot be published keeps this message.

    ``retry()`` publishes a copy with the countdown, then the original is acknowledged.
    When that publish fails (the broker is down) Celery raises ``Reject(requeue=False)``
    and the job is dropped with its row left ``running``. Requeue instead: if the broker
    takes the reject, the job runs again at once; if not, the message stays unacked and
    comes back after the visibility timeout. Either way nothing is lost.
    """
    try:
        return task.retry(exc=exc, countdown=backoff(task), throw=False, **options)
    except Reject as rejected:
        log.warning(
            "task %s: could not publish its retry (%s); requeueing it", task.request.id, rejected
        )
        raise Reject(rejected.reason, requeue=True) from exc


def describe(exc: BaseException) -> str:
    # Exception text from boto3/psycopg names hosts and objects, never credentials.
    return f"{type(exc).__name__}: {exc}"[:500]


def superseded(newer: store.Superseded) -> dict[str, Any]:
    log.info(
        "session %s: a newer request (%s) exists; this one wrote nothing",
        newer.session_id,
        newer.newest_task_id,
    )
    return {
        "session_id": str(newer.session_id),
        "status": Status.SUPERSEDED,
        "superseded_by": newer.newest_task_id,
    }


def job_task(policy: Policy) -> Callable[[Callable[..., dict[str, Any]]], Task]:
    """Declare ``body(task, res, job) -> result`` as the Celery task ``policy.name``.

    ``throws``: a JobError is an expected outcome, logged without a traceback.
    """

    def declare(body: Callable[..., dict[str, Any]]) -> Task:
        @app.task(name=policy.name, bind=True, max_retries=MAX_RETRIES, throws=(JobError,))
        def run(self: Task, **payload: Any) -> dict[str, Any]:
            return _Ending(self, policy, resources.current()).run(body, payload)

        run.__doc__ = body.__doc__
        return run

    return declare


@dataclass
class _Ending:
    """One run of one task under the policy."""

    task: Task
    policy: Policy
    res: Resources

    def run(self, body: Callable[..., dict[str, Any]], payload: dict[str, Any]) -> dict[str, Any]:
        try:
            job = self.policy.parse(self.res, payload)
        except JobError as err:
            self._reject(payload, err, mark_job=True)
            raise
        started = time.perf_counter()
        bound = job_ids(task_id=self.task.request.id, session_id=self.policy.ids(job)["session_id"])
        try:
            with bound:
                result = body(self.task, self.res, job)
        except Reject:
            raise
        except Refused as refused:
            return self._refused(payload, refused.error)
        except JobError as err:
            if err.code in GONE:
                return self._gone(err)
            if err.code in self.policy.wait_for and self._retries_left():
                # Not a fault, so no exception is reported as the retry's reason.
                raise retry(self.task, None) from err
            self._fail(job, err)
            raise
        except TRANSIENT_ERRORS as exc:
            if self._retries_left():
                self._count(Outcome.RETRIED, type(exc).__name__)
                log.warning("task %s: transient %s; retrying", self.task.request.id, describe(exc))
                raise retry(self.task, exc) from exc
            self._fail(job, JobError(Code.DEPENDENCY_UNAVAILABLE, describe(exc)))
            raise
        except Exception as exc:
            self._fail(job, JobError(Code.INTERNAL_ERROR, describe(exc)))
            raise
        self._succeeded(job, result, time.perf_counter() - started)
        return result

    def _retries_left(self) -> bool:
        return bool(self.task.request.retries < self.task.max_retries)

    def _count(self, outcome: Outcome, code: str = "") -> None:
        metrics.JOBS.labels(self.policy.kind, outcome, code).inc()

    def _reject(self, payload: dict[str, Any], err: JobError, *, mark_job: bool) -> None:
        store.reject_message(
            self.res.db,
            self.policy.name,
            self.task.request.id,
            payload,
            err,
            mark_job=mark_job,
            notify_queue=self.res.settings.notify_queue,
        )
        self._count(Outcome.REJECTED, err.code)
        log.warning("rejected %s message: %s (%s)", self.policy.kind, err.message, err.code)

    def _refused(self, payload: dict[str, Any], err: JobError) -> dict[str, Any]:
        if err.code in GONE:
            return self._gone(err)
        self._reject(payload, err, mark_job=False)
        raise err

    def _gone(self, err: JobError) -> dict[str, Any]:
        """Before or while this job ran its person was forgotten, or its session deleted:
        it ends having written nothing of theirs; the record of the refusal and the
        result carry no ids."""
        outcome, result = GONE[err.code]
        store.reject_message(self.res.db, self.policy.name, self.task.request.id, {}, err)
        self._count(outcome)
        log.info("task %s: %s; it wrote nothing", self.task.request.id, err.message)
        return dict(result)

    def _fail(self, job: Any, err: JobError) -> None:
        """Record the job as failed; if the database cannot take even that, retry it.

        The task is about to end with an exception and Celery will acknowledge its
        message: with the failure unrecorded, the row would stay ``running`` forever
        (seen when the retries ran out during a Postgres outage). One more retry past
        ``max_retries`` keeps the message until the database answers.
        """
        task = self.task
        try:
            self.policy.record_failure(self.res, job, err, task.request.id)
        except TRANSIENT_ERRORS as exc:
            log.warning(
                "task %s: cannot record %s (%s); retrying the job",
                task.request.id,
                err.code,
                describe(exc),
            )
            raise retry(task, exc, max_retries=task.request.retries + 1) from exc
        self._count(Outcome.FAILED, err.code)
        job_event(
            f"job failed: {err.message}",
            event="job",
            task=self.policy.kind,
            outcome=Outcome.FAILED,
            error_code=err.code,
            task_id=task.request.id,
            **self.policy.ids(job),
        )

    def _succeeded(self, job: Any, result: dict[str, Any], seconds: float) -> None:
        status = result.get("status")
        ended = (Outcome.SUPERSEDED, Outcome.FORGOTTEN, Outcome.DELETED)
        outcome = Outcome(status) if status in ended else Outcome.SUCCEEDED
        self._count(outcome)
        if outcome != Outcome.SUCCEEDED:
            return
        if self.policy.seconds is not None:
            self.policy.seconds.observe(seconds)
        job_event(
            self.policy.stored_message,
            event="job",
            task=self.policy.kind,
            outcome=outcome,
            task_id=self.task.request.id,
            seconds=round(seconds, 4),
            **self.policy.ids(job),
        )
