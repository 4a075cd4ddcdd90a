"""The public tasks: analyze a session, compare two sessions, re-embed a session, and
delete one session.

Each reads as parse -> stages -> result: the stages live in their own modules (fetch ->
decode -> batch -> embed -> score -> store), and what a failure means is decided once
for all of them in ``worker.outcome``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

from celery import Task
from celery.exceptions import Reject

from ..schema import levels
from ..schema.contract import (
    ANALYZE_TASK,
    COMPARE_TASK,
    DELETE_TASK,
    EMBED_TASK,
    QUEUE,
    AnalyzeJob,
    CompareJob,
    DeleteJob,
    EmbedJob,
    parse_analyze,
    parse_compare,
    parse_delete,
    parse_embed,
    parse_images,
)
from ..schema.errors import Code, JobError
from ..schema.status import Status
from . import compare, metrics, pipeline, score, store
from .outcome import (
    TRANSIENT_ERRORS,
    Policy,
    Refused,
    describe,
    job_task,
    superseded,
)
from .pipeline import timed
from .resources import Resources
from .score import Analysis

log = logging.getLogger(__name__)


def _hand_back(task: Task, res: Resources, why: str) -> Reject:
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


def _start(res: Resources, job: AnalyzeJob, task_id: str | None) -> int | store.Superseded:
    """The request recorded; another person's session, or no such person: touch nothing."""
    try:
        return store.start_job(res.db, job, task_id)
    except JobError as err:
        raise Refused(err) from err


def _read_back(res: Resources, analysis: Analysis) -> dict[str, Any]:
    """The result as ``producer result`` reads it; the analysis is stored either way."""
    sid = analysis.session_id
    stored = {"session_id": str(sid), "status": Status.SUCCEEDED}
    try:
        with res.db.connection() as conn:
            return pipeline.read_result(res, conn, sid) or stored
    except TRANSIENT_ERRORS as exc:
        log.warning("session %s: stored, but not read back: %s", sid, describe(exc))
        return stored


ANALYZE = Policy(
    name=ANALYZE_TASK,
    kind="analyze",
    parse=lambda res, payload: parse_analyze(payload),
    record_failure=lambda res, job, err, task_id: store.fail_job(
        res.db,
        job.session_id,
        job.user_id,
        err.code,
        err.message,
        task_id,
        notify_queue=res.settings.notify_queue,
    ),
    ids=lambda job: {"session_id": str(job.session_id), "images": len(job.images)},
    stored_message="analysis stored",
    seconds=metrics.SESSION_SECONDS,
)


@job_task(ANALYZE)
def analyze_session(task: Task, res: Resources, job: AnalyzeJob) -> dict[str, Any]:
    if not res.model_is_active():
        raise _hand_back(task, res, "its model is not the active model")
    request = _start(res, job, task.request.id)
    if isinstance(request, store.Superseded):
        return _superseded(res, job, task.request.id, request)
    try:
        analysis = pipeline.analyze(res, job, request)
    except store.ModelNotActive as exc:
        raise _hand_back(task, res, str(exc)) from exc
    except JobError as err:  # its photos may be missing because the session was deleted
        deleted = store.deleted_or(res.db, job.user_id, job.session_id, err)
        if deleted is err:
            raise
        raise deleted from err
    if isinstance(analysis, store.Superseded):
        return _superseded(res, job, task.request.id, analysis)
    return _read_back(res, analysis)


def _superseded(
    res: Resources, job: AnalyzeJob, task_id: str | None, newer: store.Superseded
) -> dict[str, Any]:
    """Ended by a newer request: told so, unless the newer one's ending told it first."""
    if res.settings.notify_queue and task_id:
        store.outbox.tell_superseded(
            res.db,
            res.settings.notify_queue,
            job.session_id,
            job.user_id,
            task_id,
            newer.newest_task_id or "",
        )
    return superseded(newer)


COMPARE = Policy(
    name=COMPARE_TASK,
    kind="compare",
    parse=lambda res, payload: parse_compare(payload),
    record_failure=lambda res, job, err, task_id: store.finish_comparison(
        res.db, job, None, err, notify=(res.settings.notify_queue, task_id)
    ),
    ids=lambda job: {"session_id": str(job.current_session_id)},
    stored_message="comparison stored",
    # Sent right after its analyses: give them time to finish.
    wait_for=frozenset({Code.SESSION_NOT_READY}),
)


@job_task(COMPARE)
def compare_sessions(task: Task, res: Resources, job: CompareJob) -> dict[str, Any]:
    try:
        store.start_comparison(res.db, job, task.request.id)
    except JobError as err:  # no such person, or forgotten
        raise Refused(err) from err
    current = store.load_for_comparison(res.db, job.current_session_id, job.user_id)
    previous = store.load_for_comparison(res.db, job.previous_session_id, job.user_id)
    at = current.captured_at or datetime.now(UTC)
    windows = store.load_windows(res.db, job.user_id, current.model_id, at)
    earlier = store.load_earlier_scores(res.db, job.user_id, current.model_id, at)
    scale = levels.scale_for(current.model_id, earlier, res.settings.variation, res.settings.trend)
    result = {
        "user_id": str(job.user_id),
        **compare.compare(current, previous, scale),
        "layers": compare.layers(current, windows, scale),
        "variation_levels": scale.as_json(),
    }
    store.finish_comparison(
        res.db,
        job,
        result,
        inputs=(current, previous),
        notify=(res.settings.notify_queue, task.request.id),
    )
    return result


def _parse_embed(res: Resources, payload: dict[str, Any]) -> EmbedJob:
    job = parse_embed(payload)
    if job.model_id != res.model_id:
        raise JobError(
            Code.WRONG_MODEL, f"sent for model {job.model_id}; this worker runs {res.model_id}"
        )
    return job


EMBED = Policy(
    name=EMBED_TASK,
    kind="embed",
    parse=_parse_embed,
    record_failure=lambda res, job, err, task_id: store.finish_backfill(
        res.db, job.session_id, job.model_id, err
    ),
    ids=lambda job: {"session_id": str(job.session_id)},
    stored_message="backfill stored",
)


@job_task(EMBED)
def embed_session(task: Task, res: Resources, job: EmbedJob) -> dict[str, Any]:
    """Backfill: re-embed a stored session's good request with this worker's model."""
    source = store.start_backfill(res.db, job.session_id, job.model_id)
    if source is None:
        none = JobError(
            Code.SESSION_NOT_ANALYZED, f"session {job.session_id} has no good analysis to re-embed"
        )
        raise store.deleted_or(res.db, None, job.session_id, none)
    done = {"session_id": str(job.session_id), "model_id": job.model_id, "status": Status.SUCCEEDED}
    if source.done:
        store.finish_backfill(res.db, job.session_id, job.model_id)
        return done
    analyze = AnalyzeJob(
        source.user_id, source.session_id, source.captured_at, parse_images(source.images)
    )
    embeddings, _, regions = pipeline.embeddings(res, analyze)
    with timed("store"), store.backfill_write(res.db, source, job.model_id) as w:
        if not isinstance(w, store.Superseded):
            with timed("score"):
                scored = score.rescore(w.history, w.session(embeddings, regions))
            store.save_backfill(w, scored, embeddings)
            return done
    # A newer good analysis landed meanwhile: the next backfill pass takes it.
    why = JobError(Code.SUPERSEDED, "a newer analysis arrived during the backfill")
    store.finish_backfill(res.db, job.session_id, job.model_id, why)
    return superseded(w)


DELETE = Policy(
    name=DELETE_TASK,
    kind="delete",
    parse=lambda res, payload: parse_delete(payload, res.settings.delete_secret),
    # The sender reads a failed delete's code here, by the task's id.
    record_failure=lambda res, job, err, task_id: store.reject_message(
        res.db, DELETE_TASK, task_id, job.to_payload(), err, mark_job=False
    ),
    ids=lambda job: {"session_id": str(job.session_id)},
    stored_message="session deleted",
)


@job_task(DELETE)
def delete_session(task: Task, res: Resources, job: DeleteJob) -> dict[str, Any]:
    """Delete one session as if it had never been analyzed: out of every model's sums,
    the later sessions rescored, its rows gone behind a tombstone, in one transaction
    under the person's lock. The photos and Celery's results are the sender's to delete
    (the result lists them). Destructive: any authority rule for it applies here."""
    try:
        with timed("store"):
            deleted = store.delete_session(res.db, job)
    except JobError as err:
        if err.code in (Code.SESSION_OF_OTHER_USER, Code.UNKNOWN_USER, Code.USER_FORGOTTEN):
            raise Refused(err) from err  # touches nothing of anyone's
        raise
    return deleted.report(job)
