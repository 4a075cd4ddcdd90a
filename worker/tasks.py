"""The two public tasks: analyze a session, compare two sessions.

Each stage lives in its own module (fetch -> decode -> batch -> embed -> score ->
store); a task only wires them together and decides what a failure means: a
``JobError`` is permanent and recorded on the job at once, a transient fault (storage
or database unreachable) is retried with Celery's exponential backoff and jitter, and
recorded as failed only when the retries are spent.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg
import psycopg_pool
from botocore.exceptions import BotoCoreError, ClientError
from celery import Task
from celery.exceptions import Reject, Retry
from celery.utils.time import get_exponential_backoff_interval

from changewatch.schema import results
from changewatch.schema.contract import (
    ANALYZE_TASK,
    COMPARE_TASK,
    EMBED_TASK,
    FORGOTTEN_RESULT,
    QUEUE,
    AnalyzeJob,
    JobError,
    parse_analyze,
    parse_compare,
    parse_embed,
    parse_images,
)
from changewatch.worker import metrics, resources, score, store
from changewatch.worker.app import app
from changewatch.worker.decode import DRAFT_SIDE, decode_photo
from changewatch.worker.fetch import fetch_images
from changewatch.worker.logs import job_event

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


def _backoff(task: Task) -> float:
    """Seconds before retry n: half of min(120, 2 * 2**n) fixed, the other half random.

    With full jitter (anything from 0 to the step) five draws near 0 spend every retry
    within seconds, and an outage of S3 or Postgres of ~15 s failed one queued job in
    twenty (boto's retry quota drains, so each attempt then fails at once). With half
    fixed, the eight retries of a job span at least 1+2+4+8+16+32+60+60 = 183 s (366 s
    at most), and the jitter still spreads the jobs that failed together.
    """
    step = get_exponential_backoff_interval(factor=2, retries=task.request.retries, maximum=120)
    return step / 2 + random.uniform(0, step / 2)  # noqa: S311  # jitter, not a secret


def _retry(task: Task, exc: BaseException | None, **options: Any) -> Retry:
    """Celery's ``retry()``, but a retry that cannot be published keeps this message.

    ``retry()`` publishes a copy with the countdown, then the original is acknowledged.
    When that publish fails (the broker is down) Celery raises ``Reject(requeue=False)``
    and the job is dropped with its row left ``running``. Requeue instead: if the broker
    takes the reject, the job runs again at once; if not, the message stays unacked and
    comes back after the visibility timeout. Either way nothing is lost.
    """
    try:
        return task.retry(exc=exc, countdown=_backoff(task), throw=False, **options)
    except Reject as rejected:
        log.warning(
            "task %s: could not publish its retry (%s); requeueing it", task.request.id, rejected
        )
        raise Reject(rejected.reason, requeue=True) from exc


def _describe(exc: BaseException) -> str:
    # Exception text from boto3/psycopg names hosts and objects, never credentials.
    return f"{type(exc).__name__}: {exc}"[:500]


@contextmanager
def _stage(name: str, job: AnalyzeJob, task_id: str | None) -> Iterator[None]:
    """Time a stage into its histogram and log one JSON line for it."""
    started = time.perf_counter()
    with metrics.stage(name):
        yield
    job_event(
        f"{name} done",
        event="stage",
        stage=name,
        task_id=task_id,
        session_id=str(job.session_id),
        seconds=round(time.perf_counter() - started, 4),
    )


def _embed(
    res: resources.Resources, job: AnalyzeJob, task_id: str | None
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
    """fetch -> decode -> batch/embed, each stage timed: the job's embeddings by angle,
    and what each photo says about itself (quality, camera)."""
    reference = res.settings.pipeline == "reference"
    with _stage("fetch", job, task_id):
        images = fetch_images(res.s3, job, res.settings, res.fetch_pool)
    photos = []
    with _stage("decode", job, task_id):
        for angle, data in images.items():
            try:
                photos.append(
                    decode_photo(data, None if reference else DRAFT_SIDE, res.settings.quality)
                )
            except JobError as err:
                raise JobError(err.code, f"image {angle!r} ({job.images[angle]}): {err}") from None
    arrays = [p.pixels for p in photos]
    if reference:  # the seed's way, kept as the benchmark's and fidelity tests' yardstick
        with _stage("embed", job, task_id):
            vectors = np.concatenate([res.embedder.predict(a[None], fp32=True) for a in arrays])
    else:
        # The batcher times its own wait and embed stages into the histograms.
        with _stage("batch_and_embed", job, task_id):
            vectors = res.batcher.embed(np.stack(arrays))
    facts = {angle: p.facts() for angle, p in zip(images, photos, strict=True)}
    return dict(zip(images, vectors, strict=True)), facts


def _hand_back(task: Task, res: resources.Resources, why: str) -> Reject:
    """This worker's model is not the active one: stop taking jobs and put this one back.

    ``producer model activate`` moves the jobs queue between models; a worker that missed
    that broadcast (or started before it) finds out here, before writing anything.
    """
    log.warning("model %s: %s; handing the job back and leaving %s", res.model_id, why, QUEUE)
    res.forget_active_model()
    with contextlib.suppress(Exception):
        task.app.control.cancel_consumer(QUEUE, destination=[task.request.hostname])
    time.sleep(1)  # let the cancel land before the message is back in the queue
    return Reject(why, requeue=True)


def _forgotten(
    task: Task, res: resources.Resources, task_name: str, err: JobError
) -> dict[str, Any]:
    """The person was forgotten before or while this job ran: it ends having written
    nothing of theirs; the record of the refusal and the task's result carry no ids."""
    store.reject_message(res.db, task_name, task.request.id, {}, err)
    metrics.JOBS.labels(task_name.rsplit(".", 1)[-1].split("_")[0], "forgotten", "").inc()
    log.info("task %s: its person was forgotten; it wrote nothing", task.request.id)
    return dict(FORGOTTEN_RESULT)


def _superseded(newer: store.Superseded) -> dict[str, Any]:
    log.info(
        "session %s: a newer request (%s) exists; this one wrote nothing",
        newer.session_id,
        newer.newest_task_id,
    )
    return {
        "session_id": str(newer.session_id),
        "status": "superseded",
        "superseded_by": newer.newest_task_id,
    }


def _retry_or_fail(
    task: Task, res: resources.Resources, job: AnalyzeJob, exc: BaseException
) -> None:
    """A transient fault: raise Celery's Retry with backoff, or, once the retries are
    spent, record ``dependency_unavailable`` and return (the caller re-raises ``exc``).

    Every transient fault must come through here, including one in ``start_job``: an
    exception that escapes the task is acknowledged (acks_late acks failures too) and the
    job is gone, its row left ``queued`` or ``running`` forever.
    """
    if task.request.retries >= task.max_retries:
        _fail(task, res, job, "dependency_unavailable", _describe(exc))
        metrics.JOBS.labels("analyze", "failed", "dependency_unavailable").inc()
        return
    metrics.JOBS.labels("analyze", "retried", type(exc).__name__).inc()
    log.warning("session %s: transient %s; retrying", job.session_id, _describe(exc))
    raise _retry(task, exc) from exc


def _fail(task: Task, res: resources.Resources, job: AnalyzeJob, code: str, message: str) -> None:
    """Record the job as failed; if the database cannot take even that, retry the job.

    The task is about to end with an exception and Celery will acknowledge its message:
    with the failure unrecorded, the row would stay ``running`` forever (seen when the
    retries ran out during a Postgres outage). One more retry past ``max_retries``
    keeps the message until the database answers; then the job runs again and either
    succeeds or records its failure.
    """
    try:
        store.fail_job(res.db, job.session_id, job.user_id, code, message, task.request.id)
    except TRANSIENT_ERRORS as exc:
        log.warning(
            "session %s: cannot record %s (%s); retrying the job",
            job.session_id,
            code,
            _describe(exc),
        )
        raise _retry(task, exc, max_retries=task.request.retries + 1) from exc


def _internal_error(task: Task, res: resources.Resources, job: AnalyzeJob, exc: Exception) -> None:
    """A bug or a missing grant: say so on the job (the caller re-raises), never hang."""
    _fail(task, res, job, "internal_error", _describe(exc))
    metrics.JOBS.labels("analyze", "failed", "internal_error").inc()


# throws: a JobError is an expected outcome, logged without a traceback.
@app.task(name=ANALYZE_TASK, bind=True, max_retries=MAX_RETRIES, throws=(JobError,))
def analyze_session(self: Task, **payload: Any) -> dict[str, Any]:
    res = resources.current()
    try:
        job = parse_analyze(payload)
    except JobError as err:
        store.reject_message(res.db, ANALYZE_TASK, self.request.id, payload, err)
        metrics.JOBS.labels("analyze", "rejected", err.code).inc()
        log.warning("rejected analyze message: %s (%s)", err.message, err.code)
        raise
    started = time.perf_counter()
    try:
        if not res.model_is_active():
            raise _hand_back(self, res, "its model is not the active model")
        request = store.start_job(res.db, job, self.request.id)
    except Reject:
        raise
    except JobError as err:  # another user's session, or no such person: touch nothing
        if err.code == store.FORGOTTEN:
            return _forgotten(self, res, ANALYZE_TASK, err)
        store.reject_message(res.db, ANALYZE_TASK, self.request.id, payload, err, mark_job=False)
        metrics.JOBS.labels("analyze", "rejected", err.code).inc()
        raise
    except TRANSIENT_ERRORS as exc:  # the database is down: this job must not be dropped
        _retry_or_fail(self, res, job, exc)
        raise
    except Exception as exc:
        _internal_error(self, res, job, exc)
        raise
    if isinstance(request, store.Superseded):
        metrics.JOBS.labels("analyze", "superseded", "").inc()
        return _superseded(request)
    try:
        embeddings, photos = _embed(res, job, self.request.id)
        with _stage("write", job, self.request.id):
            analysis = store.save_analysis(res.db, job, request, res.model_id, embeddings, photos)
    except store.ModelNotActive as exc:
        raise _hand_back(self, res, str(exc)) from exc
    except JobError as err:
        if err.code == store.FORGOTTEN:
            return _forgotten(self, res, ANALYZE_TASK, err)
        _fail(self, res, job, err.code, err.message)
        metrics.JOBS.labels("analyze", "failed", err.code).inc()
        job_event(
            f"job failed: {err.message}",
            event="job",
            task="analyze",
            outcome="failed",
            error_code=err.code,
            task_id=self.request.id,
            session_id=str(job.session_id),
        )
        raise
    except TRANSIENT_ERRORS as exc:
        _retry_or_fail(self, res, job, exc)
        raise
    except Exception as exc:
        _internal_error(self, res, job, exc)
        raise
    if isinstance(analysis, store.Superseded):
        metrics.JOBS.labels("analyze", "superseded", "").inc()
        return _superseded(analysis)
    metrics.SESSION_SECONDS.observe(time.perf_counter() - started)
    metrics.JOBS.labels("analyze", "succeeded", "").inc()
    job_event(
        "analysis stored",
        event="job",
        task="analyze",
        outcome="succeeded",
        task_id=self.request.id,
        session_id=str(job.session_id),
        seconds=round(time.perf_counter() - started, 4),
        images=len(job.images),
    )
    stored = {"session_id": str(job.session_id), "status": "succeeded"}
    try:  # the result as `producer result` reads it; the analysis is stored either way
        with res.db.connection() as conn:
            return results.session_result(conn, job.session_id) or stored
    except TRANSIENT_ERRORS as exc:
        log.warning("session %s: stored, but not read back: %s", job.session_id, _describe(exc))
        return stored


@app.task(name=COMPARE_TASK, bind=True, max_retries=MAX_RETRIES, throws=(JobError,))
def compare_sessions(self: Task, **payload: Any) -> dict[str, Any]:
    res = resources.current()
    try:
        job = parse_compare(payload)
    except JobError as err:
        store.reject_message(res.db, COMPARE_TASK, self.request.id, payload, err)
        metrics.JOBS.labels("compare", "rejected", err.code).inc()
        raise
    try:
        store.start_comparison(res.db, job, self.request.id)
        current = store.load_for_comparison(res.db, job.current_session_id, job.user_id)
        previous = store.load_for_comparison(res.db, job.previous_session_id, job.user_id)
        windows = store.load_windows(
            res.db, job.user_id, current.model_id, current.captured_at or datetime.now(UTC)
        )
        result = {
            "user_id": str(job.user_id),
            **score.compare(current, previous, res.settings.trend),
            "layers": score.layers(current, windows, res.settings.variation.level),
            "variation_levels": res.settings.variation.as_json(),
        }
        # Inside the try: a database fault here is retried, not acknowledged as done.
        store.finish_comparison(res.db, job, result, inputs=(current, previous))
    except JobError as err:
        if err.code == store.FORGOTTEN:
            return _forgotten(self, res, COMPARE_TASK, err)
        if err.code == "unknown_user":
            store.reject_message(res.db, COMPARE_TASK, self.request.id, payload, err)
            metrics.JOBS.labels("compare", "rejected", err.code).inc()
            raise
        if err.code == "session_not_ready" and self.request.retries < self.max_retries:
            # Sent right after its analyses: give them time to finish. Not a fault, so
            # no exception is reported as the retry's reason.
            raise _retry(self, None) from err
        store.finish_comparison(res.db, job, None, err)
        metrics.JOBS.labels("compare", "failed", err.code).inc()
        raise
    except TRANSIENT_ERRORS as exc:
        if self.request.retries >= self.max_retries:
            store.finish_comparison(
                res.db, job, None, JobError("dependency_unavailable", _describe(exc))
            )
            raise
        raise _retry(self, exc) from exc
    metrics.JOBS.labels("compare", "succeeded", "").inc()
    return result


@app.task(name=EMBED_TASK, bind=True, max_retries=MAX_RETRIES, throws=(JobError,))
def embed_session(self: Task, **payload: Any) -> dict[str, Any]:
    """Backfill: re-embed a stored session's good request with this worker's model.

    Every outcome is recorded on the session's ``backfill_jobs`` row, so one session's
    failure never stops the backfill, and a finished session is never embedded twice.
    """
    res = resources.current()
    try:
        job = parse_embed(payload)
        if job.model_id != res.model_id:
            raise JobError(
                "wrong_model", f"sent for model {job.model_id}; this worker runs {res.model_id}"
            )
    except JobError as err:
        store.reject_message(res.db, EMBED_TASK, self.request.id, payload, err, mark_job=False)
        metrics.JOBS.labels("embed", "rejected", err.code).inc()
        raise
    try:
        source = store.start_backfill(res.db, job.session_id, job.model_id)
        if source is None:
            raise JobError(
                "session_not_analyzed", f"session {job.session_id} has no good analysis to re-embed"
            )
        if not source.done:
            analyze = AnalyzeJob(
                source.user_id, source.session_id, source.captured_at, parse_images(source.images)
            )
            embeddings, _ = _embed(res, analyze, self.request.id)
            with _stage("write", analyze, self.request.id):
                saved = store.save_backfill(res.db, source, job.model_id, embeddings)
            if isinstance(saved, store.Superseded):
                # A newer good analysis landed meanwhile: the next backfill pass takes it.
                store.finish_backfill(
                    res.db,
                    job.session_id,
                    job.model_id,
                    JobError("superseded", "a newer analysis arrived during the backfill"),
                )
                return _superseded(saved)
        else:
            store.finish_backfill(res.db, job.session_id, job.model_id)
    except JobError as err:
        store.finish_backfill(res.db, job.session_id, job.model_id, err)
        metrics.JOBS.labels("embed", "failed", err.code).inc()
        raise
    except TRANSIENT_ERRORS as exc:
        if self.request.retries >= self.max_retries:
            with contextlib.suppress(*TRANSIENT_ERRORS):
                store.finish_backfill(
                    res.db,
                    job.session_id,
                    job.model_id,
                    JobError("dependency_unavailable", _describe(exc)),
                )
            raise
        raise _retry(self, exc) from exc
    except Exception as exc:
        store.finish_backfill(
            res.db, job.session_id, job.model_id, JobError("internal_error", _describe(exc))
        )
        metrics.JOBS.labels("embed", "failed", "internal_error").inc()
        raise
    metrics.JOBS.labels("embed", "succeeded", "").inc()
    return {"session_id": str(job.session_id), "model_id": job.model_id, "status": "succeeded"}
