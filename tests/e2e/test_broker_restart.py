"""A Redis restart ends no worker: the same processes, their models warm, finish every job.

kombu 5.7's Redis transport used to end the worker at the first broker restart
("Unrecoverable error: AttributeError: 'NoneType' object has no attribute 'hostname'",
see schema/redis_broker.py). Here two workers run on a private Redis (with its
append-only file) that is restarted twice, first with SIGTERM and then with SIGKILL,
each followed by a start, while jobs sent before, between and after the restarts run.
Afterwards the same two worker processes are alive, none logged an unrecoverable error,
and every session succeeded once. No supervisor restarts anything here.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.harness.faults import (
    FaultStack,
    audit,
    finished_count,
    have,
    postgres_bindir,
    series_jobs,
    wait_final_reaping,
)
from bench.harness.services import ROOT
from changewatch.producer import Producer
from tests.helpers import require

DEADLINE_S = 240.0


@pytest.fixture(scope="module")
def stack(photos: Path) -> Iterator[tuple[FaultStack, Producer]]:
    require(have("redis-server"), "redis-server is not installed")
    require(postgres_bindir() is not None, "PostgreSQL server binaries (initdb) not found")
    root = Path(tempfile.mkdtemp(prefix="changewatch-restart-"))
    faults = FaultStack(root)
    try:
        faults.start()
        for name in ("r0", "r1"):
            faults.start_worker(name, concurrency=1)
        yield faults, Producer(dsn=faults.database_url, celery=faults.app)
    finally:
        faults.close()
        logs = ROOT / "artifacts" / "restart"
        logs.mkdir(parents=True, exist_ok=True)
        for log in root.glob("worker-*.log"):
            (logs / log.name).write_bytes(log.read_bytes())
        shutil.rmtree(root, ignore_errors=True)


def _send(faults: FaultStack, producer: Producer, photos: Path, users: int) -> dict:
    """``users`` whole histories; session id -> expected embeddings."""
    expected = {}
    for _ in range(users):
        for job in series_jobs(faults.s3_client(), photos, uuid.uuid4()):
            producer.analyze(job.user_id, job.session_id, job.captured_at, job.images)
            expected[job.session_id] = len(job.images)
    return expected


def test_two_redis_restarts_end_no_worker(stack: tuple[FaultStack, Producer], photos: Path) -> None:
    faults, producer = stack
    pids = [w.process.pid for w in faults.workers if w.process]
    expected: dict = {}
    for hard in (False, True):
        sent = _send(faults, producer, photos, users=2)
        expected |= sent
        deadline = time.monotonic() + 120
        while finished_count(faults.database_url, list(sent)).get("succeeded", 0) < 2:
            assert time.monotonic() < deadline, "no job finished before the restart"
            time.sleep(0.1)
        outage = faults.redis.restart(3.0, hard=hard)
        print(f"redis {'SIGKILL' if hard else 'SIGTERM'}ed and started again in {outage:.1f}s")
    expected |= _send(faults, producer, photos, users=1)  # after both restarts
    counts = wait_final_reaping(faults.database_url, producer, list(expected), DEADLINE_S)
    report = audit(faults.database_url, expected)
    assert counts == {"succeeded": len(expected)}, (counts, report)
    assert report.missing == 0 and report.clean, report
    for worker in faults.workers:
        assert worker.process is not None and worker.process.poll() is None, worker.name
        log = worker.log_path.read_text() if worker.log_path else ""
        assert "Unrecoverable error" not in log, worker.name
    assert [w.process.pid for w in faults.workers if w.process] == pids
