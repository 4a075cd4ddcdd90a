"""Rolling a model out and back: list models, backfill one, make it the active one.

Results report one model, the active one (``models.active``). Workers of any other model
consume only their own backfill queue, so a person's history is never split between two
models. A rollout: start workers of the new model, ``backfill --wait`` (they re-embed
every stored session, oldest first), then ``model activate`` (refused while sessions are
missing) moves the jobs queue to them. Rolling back is the same with the old model.
"""

from __future__ import annotations

import time
from typing import Any

from tqdm import tqdm

from ..schema.contract import (
    BACKFILL_QUEUE_PREFIX,
    EMBED_TASK,
    QUEUE,
    backfill_queue,
    parse_uuid,
)
from ..schema.errors import Code, JobError
from .api import Producer
from .store import models

# A backfill row queued or running for less than this is taken to have its message in
# the broker still: a resumed backfill waits for it instead of sending it again.
IN_FLIGHT_S = 600.0


def consuming_models(producer: Producer, timeout: float = 2.0) -> dict[str, list[str]]:
    """model id -> the live workers running it, read from the backfill queues they consume."""
    replies: dict[str, Any] = {}
    for app in producer.brokers.every():  # each broker has its own workers
        replies |= app.control.inspect(timeout=timeout).active_queues() or {}
    found: dict[str, list[str]] = {}
    for worker, queues in replies.items():
        for queue in queues or []:
            name = str(queue.get("name", ""))
            if name.startswith(BACKFILL_QUEUE_PREFIX):
                found.setdefault(name[len(BACKFILL_QUEUE_PREFIX) :], []).append(worker)
    return found


def list_models(producer: Producer) -> dict[str, Any]:
    workers = consuming_models(producer)
    with producer.connect() as conn:
        rows = models.listing(conn)
        for row in rows:
            row["missing"] = models.missing(conn, row["model_id"])
            row["workers"] = sorted(workers.get(row["model_id"], []))
    return {"models": rows}


def _choose_model(producer: Producer, model_id: str | None) -> str:
    with producer.connect() as conn:
        known = models.known(conn)
    if model_id is not None:
        if model_id not in known:
            raise JobError(
                Code.UNKNOWN_MODEL,
                f"no worker has ever registered model {model_id!r}; start its workers first",
            )
        return model_id
    live = [m for m in consuming_models(producer) if m in known]
    if not live:
        raise JobError(
            Code.NO_WORKERS, "no worker is consuming; start workers of the model to backfill"
        )
    inactive = [m for m in live if not known[m]]
    if len(inactive) == 1 or len(live) == 1:
        return inactive[0] if inactive else live[0]
    raise JobError(
        Code.AMBIGUOUS_MODEL,
        f"workers of several models are consuming ({', '.join(sorted(live))}); name one with"
        " --model",
    )


def _enqueue(producer: Producer, model_id: str, todo: list[dict[str, Any]]) -> tuple[int, int]:
    """Send each session not already in flight; returns (sent, in flight)."""
    sent = in_flight = 0
    with producer.connect() as conn:
        for row in tqdm(todo, desc="enqueue", unit="session", dynamic_ncols=True):
            if not models.claim_backfill(conn, row, model_id, IN_FLIGHT_S):
                in_flight += 1
                continue
            producer.celery_for(row["user_id"]).send_task(
                EMBED_TASK,
                kwargs={"session_id": str(row["session_id"]), "model_id": model_id},
                queue=backfill_queue(model_id),
            )
            sent += 1
    return sent, in_flight


def backfill(
    producer: Producer,
    model_id: str | None = None,
    user_id: str | None = None,
    wait: bool = False,
    timeout: float = 24 * 3600.0,
) -> dict[str, Any]:
    """Re-embed every stored session that lacks ``model_id``'s analysis of its good request.

    Oldest first; safe to stop (Ctrl+C) and run again: finished sessions are not sent
    again, and sessions still in flight are waited for, not re-sent.
    """
    user = None if user_id is None else parse_uuid(str(user_id), "user_id")
    model = _choose_model(producer, model_id)
    started = time.time()
    with producer.connect() as conn:
        todo = models.pending(conn, model, user)
    sent, in_flight = _enqueue(producer, model, todo)
    out: dict[str, Any] = {
        "model_id": model,
        "pending": len(todo),
        "enqueued": sent,
        "in_flight": in_flight,
    }
    if not wait:
        return out
    ids = [row["session_id"] for row in todo]
    deadline = time.monotonic() + timeout
    failed: list[dict[str, Any]] = []
    done = 0
    try:
        with tqdm(total=len(ids), desc="backfill", unit="session", dynamic_ncols=True) as bar:
            while True:
                with producer.connect() as conn:
                    done, failed = models.backfill_outcomes(conn, model, ids, started)
                bar.update(done + len(failed) - bar.n)
                bar.set_postfix(failed=len(failed))
                if done + len(failed) >= len(ids) or time.monotonic() >= deadline:
                    break
                time.sleep(0.5)
    except KeyboardInterrupt:
        out["interrupted"] = True
    out |= {
        "succeeded": done,
        "failed": len(failed),
        "unfinished": len(ids) - done - len(failed),
        "errors": [
            {
                "session_id": str(r["session_id"]),
                "code": r["error_code"],
                "message": r["error_message"],
            }
            for r in failed[:50]
        ],
    }
    return out


def activate(producer: Producer, model_id: str, force: bool = False) -> dict[str, Any]:
    """Make ``model_id`` the model results report, and move the jobs queue to its workers."""
    with producer.connect() as conn, conn.transaction():
        known = models.known(conn, lock=True)
        if model_id not in known:
            raise JobError(Code.UNKNOWN_MODEL, f"no worker has ever registered model {model_id!r}")
        previous = next((m for m, active in known.items() if active), None)
        missing = models.missing(conn, model_id)
        if missing and not force:
            raise JobError(
                Code.BACKFILL_INCOMPLETE,
                f"{missing} stored sessions have no analysis of {model_id}; run `python -m "
                f"producer backfill --model {model_id} --wait` first (or --force)",
            )
        models.make_active(conn, model_id)
    workers = consuming_models(producer)
    joining = sorted(workers.get(model_id, []))
    leaving = sorted(w for m, names in workers.items() if m != model_id for w in names)
    for app in producer.brokers.every():  # a broadcast reaches one broker's workers
        if joining:
            app.control.add_consumer(QUEUE, destination=joining, reply=True, timeout=5)
        if leaving:
            app.control.cancel_consumer(QUEUE, destination=leaving, reply=True, timeout=5)
    return {
        "active": model_id,
        "previous": previous,
        "missing_sessions": missing,
        "jobs_queue_consumers_added": joining,
        "jobs_queue_consumers_removed": leaving,
    }
