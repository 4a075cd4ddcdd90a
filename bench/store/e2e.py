"""``python -m bench.store``'s real-worker part: does a long history slow a job down?

Jobs of people with no history against jobs of one person with a long history,
alternated, one at a time (no queueing), through Redis, the S3 server and a real worker.
"""

from __future__ import annotations

import json
import os
import statistics
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg

from bench.harness.services import Worker, flush_redis, free_port, s3_bucket
from bench.store import DIM, T0, prefill
from changewatch.schema.contract import ANGLES

# Redis databases of their own (override where 6 and 7 are taken).
BROKER = os.environ.get("CHANGEWATCH_BENCH_STORE_BROKER_URL", "redis://127.0.0.1:6379/6")
BACKEND = os.environ.get("CHANGEWATCH_BENCH_STORE_RESULT_BACKEND", "redis://127.0.0.1:6379/7")
BUCKET = "bench"


def _worker_env(dsn: str) -> dict[str, str]:
    return {
        "CELERY_BROKER_URL": BROKER,
        "CELERY_RESULT_BACKEND": BACKEND,
        "DATABASE_URL": dsn,
        "CHANGEWATCH_MODEL_WEIGHTS": "random",
        "CHANGEWATCH_DEVICE": "cpu",
        "CHANGEWATCH_METRICS_PORT": str(free_port()),
        "CHANGEWATCH_METRICS_ADDR": "127.0.0.1",
    }


def _make_active(dsn: str, model: str) -> None:
    """The worker's model reports results in the benchmark's own database."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE models SET active = false")
        conn.execute(
            "INSERT INTO models (model_id, embedding_dim, active) VALUES (%s, %s, true)"
            " ON CONFLICT (model_id) DO UPDATE SET active = true",
            (model, DIM),
        )


def _write_seconds(log: Path) -> dict[str, float]:
    """Each session's write stage, from the worker's JSON log lines."""
    writes: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        if '"stage": "store"' in line:
            event = json.loads(line)
            writes[event["session_id"]] = float(event["seconds"])
    return writes


def _service_seconds(dsn: str, ids: list[uuid.UUID]) -> dict[uuid.UUID, float]:
    """Each job's time in the database's own clock, the write included."""
    with psycopg.connect(dsn) as conn:
        return dict(
            conn.execute(
                "SELECT session_id, extract(epoch FROM finished_at - started_at)::float8"
                " FROM sessions WHERE session_id = ANY(%s) AND status = 'succeeded'",
                (ids,),
            ).fetchall()
        )


def _one(producer: Any, s3: Any, blobs: list[bytes], user: uuid.UUID, index: int) -> uuid.UUID:
    """One session of ``user`` at position ``index``, uploaded, analyzed, waited for."""
    sid = uuid.uuid4()
    images = {}
    for angle, blob in zip(ANGLES, blobs, strict=False):
        key = f"{user}/{sid}/{angle}.jpg"
        s3.put_object(Bucket=BUCKET, Key=key, Body=blob)
        images[angle] = f"s3://{BUCKET}/{key}"
    producer.analyze(user, sid, T0 + timedelta(hours=index), images)
    producer.wait(sid, timeout=300)
    return sid


def _medians(
    history: int,
    jobs: int,
    first: list[uuid.UUID],
    appended: list[uuid.UUID],
    writes: dict[str, float],
    service: dict[uuid.UUID, float],
) -> dict[str, Any]:
    result = {
        "history": history,
        "jobs_each": jobs,
        "first_service_s": statistics.median(service[sid] for sid in first),
        "appended_service_s": statistics.median(service[sid] for sid in appended),
        "first_write_s": statistics.median(writes[str(sid)] for sid in first),
        "appended_write_s": statistics.median(writes[str(sid)] for sid in appended),
    }
    result["service_ratio"] = result["appended_service_s"] / result["first_service_s"]
    result["write_ratio"] = result["appended_write_s"] / result["first_write_s"]
    return result


def e2e_history_cost(
    dsn: str, history: int, jobs: int, photos: list[Path], out: Path
) -> dict[str, Any]:
    """Through a real worker: jobs of people with no history against jobs of one person
    with ``history`` earlier sessions, alternated, one at a time (no queueing).

    Service time is the database's own (``finished_at - started_at``, the write included);
    the write stage comes from the worker's JSON log.
    """
    from changewatch.producer import Producer
    from changewatch.worker.embed import model_id_for

    env = _worker_env(dsn)
    os.environ.update(env)  # read by Producer() below, inherited by the worker
    flush_redis(BROKER, BACKEND)
    model = model_id_for("random")
    _make_active(dsn, model)
    veteran = uuid.uuid4()
    prefill(dsn, veteran, history, seed=7, model=model)
    blobs = [p.read_bytes() for p in photos[:6]]
    log = out / "e2e-worker.log"
    log.unlink(missing_ok=True)
    with s3_bucket(BUCKET) as s3:
        producer = Producer()
        worker = Worker(env=env, name="bench-store", log_path=log)
        try:
            worker.start().wait_ready(producer.celery)
            _one(producer, s3, blobs, uuid.uuid4(), 0)  # warm-up: first batch, first connection
            first, appended = [], []
            for k in range(jobs):
                first.append(_one(producer, s3, blobs, uuid.uuid4(), 0))
                appended.append(_one(producer, s3, blobs, veteran, history + k))
        finally:
            worker.stop()
    writes = _write_seconds(log)
    return _medians(history, jobs, first, appended, writes, _service_seconds(dsn, first + appended))
