"""Readiness: is this worker's model loaded, and are broker, database and storage reachable?

Used by compose healthchecks and orchestrators. Each check is bounded in time and says
what failed, never a credential.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import psycopg
from celery import Celery

from ..settings import Settings
from .fetch import make_s3_client


def _timed(check: Callable[[], str]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        detail, ok = check(), True
    except Exception as exc:
        detail, ok = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", False
    return {"ok": ok, "detail": detail, "seconds": round(time.perf_counter() - started, 3)}


def check_broker(app: Celery, timeout: float) -> str:
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=timeout)
        return f"connected to {conn.as_uri()}"  # as_uri() masks the password


def check_database(settings: Settings, timeout: float) -> str:
    with psycopg.connect(settings.database_url, connect_timeout=max(1, int(timeout))) as conn:
        row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
    return f"schema at {row[0] if row else 'none'}"


def check_storage(settings: Settings, timeout: float) -> str:
    quick = replace(
        settings, s3_max_attempts=1, s3_connect_timeout_s=timeout, s3_read_timeout_s=timeout
    )
    s3 = make_s3_client(quick)
    if not settings.allowed_buckets:
        s3.list_buckets()
        return "reachable (no CHANGEWATCH_ALLOWED_BUCKETS to check)"
    for bucket in settings.allowed_buckets:
        s3.head_bucket(Bucket=bucket)
    return f"buckets {', '.join(settings.allowed_buckets)} reachable"


def check_model(metrics_port: int, node: str | None, app: Celery, timeout: float) -> str:
    """The local worker's metrics show its model; else a named node answers a ping.

    A worker loads and warms its model before it serves metrics or consumes, so either
    answer means the model is ready.
    """
    if node:
        replies = app.control.ping(destination=[node], timeout=timeout)
        if not replies:
            raise RuntimeError(f"worker {node} did not answer")
        return f"{node} answered"
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith("changewatch_model_info{"):
            return line.split("{", 1)[1].split("}", 1)[0]
    raise RuntimeError("worker is up but reports no model")


def readiness(
    app: Celery, settings: Settings, metrics_port: int, node: str | None, timeout: float = 5.0
) -> dict[str, Any]:
    checks = {
        "model": _timed(lambda: check_model(metrics_port, node, app, timeout)),
        "broker": _timed(lambda: check_broker(app, timeout)),
        "database": _timed(lambda: check_database(settings, timeout)),
        "storage": _timed(lambda: check_storage(settings, timeout)),
    }
    return {"ready": all(c["ok"] for c in checks.values()), "checks": checks}
