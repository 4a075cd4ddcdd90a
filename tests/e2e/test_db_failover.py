"""The database fails over under Patroni; no committed result is lost, every session ends.

A private etcd and two Postgres nodes under Patroni with synchronous replication
(bench.harness.faults.patroni, from Debian's patroni and etcd-server), about 30 sessions,
one SIGKILL of the primary's postmaster mid-run. Patroni promotes the sync standby. The
worker's pool, the producer, the reaper and migrate are given one multi-host
``DATABASE_URL`` with ``target_session_attrs=read-write`` and find the new primary by
themselves; a job whose transaction died with the old primary is retried (the
transient-error policy) and succeeds, and the pool replaces a connection the kill broke
before a job gets it. Afterwards: every session that had succeeded before the kill is
still succeeded on the new primary, a session sent after it goes through, a reaper pass
and migrate run, every session is final and stored once, jobs completed again within
45 s of the kill, and the same worker process ran throughout.

Skips locally when Patroni, etcd or Postgres is missing; fails in CI.
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
    committed_lost,
    have,
    send_histories,
    series_jobs,
    succeeded_attempts,
    wait_final_reaping,
)
from bench.harness.faults.patroni import PatroniCluster, patroni_available
from bench.harness.services import ROOT
from changewatch.producer import Producer, reaper
from changewatch.schema.migrate import migrate
from tests.helpers import query, require

DEADLINE_S = 300.0
BACK_WITHIN_S = 45.0


@pytest.fixture
def stack() -> Iterator[FaultStack]:
    require(have("redis-server"), "redis-server is not installed")
    missing = patroni_available()
    require(missing is None, missing or "")
    root = Path(tempfile.mkdtemp(prefix="changewatch-patroni-stack-"))
    made = FaultStack(root, database="patroni")
    try:
        yield made.start()
    finally:
        made.close()
        logs = ROOT / "artifacts" / "failover"
        logs.mkdir(parents=True, exist_ok=True)
        for log in root.glob("worker-*.log"):
            (logs / f"patroni-{log.name}").write_bytes(log.read_bytes())
        shutil.rmtree(root, ignore_errors=True)


def _succeeded(stack: FaultStack, ids: list[uuid.UUID]) -> list[uuid.UUID]:
    """Sessions succeeded with their analysis stored, as the primary sees them now."""
    sql = (
        "SELECT s.session_id FROM sessions s JOIN analyses a USING (session_id)"
        " WHERE s.session_id = ANY(%s) AND s.status = 'succeeded'"
    )
    try:
        return [r[0] for r in query(stack.database_url, sql, (ids,))]
    except Exception:  # the primary may be the thing that is down right now
        return []


def _back_after(stack: FaultStack, ids: list[uuid.UUID], killed_at: float) -> float:
    """Seconds from the kill to the third job finished after it: more than the worker
    held at the kill (its concurrency), so one it started on the new primary."""
    sql = (
        "SELECT extract(epoch FROM finished_at) FROM sessions WHERE session_id = ANY(%s)"
        " AND status = 'succeeded' AND finished_at > to_timestamp(%s) ORDER BY finished_at"
    )
    deadline = time.monotonic() + 120
    while True:
        try:
            done = [float(r[0]) for r in query(stack.database_url, sql, (ids, killed_at))]
        except Exception:  # still failing over
            done = []
        if len(done) >= 3 or time.monotonic() > deadline:
            return done[2] - killed_at if len(done) >= 3 else float("inf")
        time.sleep(0.2)


def _retries(stack: FaultStack) -> int:
    """The worker's transient-error retries (its log), for the printout."""
    return sum(
        log.read_text(errors="replace").count("retrying") for log in stack.root.glob("worker-*.log")
    )


def test_patroni_failover_mid_run(stack: FaultStack, photos: Path) -> None:
    assert isinstance(stack.postgres, PatroniCluster)
    worker = stack.start_worker("d0", concurrency=2)
    pid = worker.process.pid if worker.process else None
    producer = Producer(dsn=stack.database_url, celery=stack.app)
    expected = send_histories(stack.s3_client(), producer, photos, users=6)
    ids = list(expected)
    while len(_succeeded(stack, ids)) < 4:
        time.sleep(0.1)
    old = stack.postgres.primary()
    committed = succeeded_attempts(stack.database_url)  # the sync standby has them: visible
    killed_at = time.time()
    times = stack.postgres.kill_primary("postgres")
    new = stack.postgres.primary()
    assert new is not None and new is not old
    # Nothing the old primary had committed is missing on the new one.
    assert len(committed) >= 4
    assert committed_lost(stack.database_url, committed) == []
    back = _back_after(stack, ids, killed_at)
    print(
        f"{len(committed)} committed at the kill; promoted in {times['promoted']}s, the old "
        f"primary streaming again after {times['healthy']}s; jobs completed again "
        f"{back:.1f}s after the kill; {_retries(stack)} transient retries"
    )
    # The producer, the reaper and migrate reach the new primary by the same URL.
    late = series_jobs(stack.s3_client(), photos, uuid.uuid4(), 1)[0]
    producer.analyze(late.user_id, late.session_id, late.captured_at, late.images)
    expected[late.session_id] = len(late.images)
    ids.append(late.session_id)
    print(f"reaper after the failover: {reaper.reap(producer).report()}")
    assert migrate(stack.database_url) == []
    counts = wait_final_reaping(stack.database_url, producer, ids, DEADLINE_S)
    report = audit(stack.database_url, expected)
    assert counts == {"succeeded": len(ids)}, (counts, report)
    assert report.missing == 0 and report.clean and report.duplicated == 0, report
    assert back <= BACK_WITHIN_S, back
    assert worker.process is not None and worker.process.poll() is None
    assert worker.process.pid == pid
