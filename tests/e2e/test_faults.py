"""Faults injected mid-run, on a private stack: afterwards every session succeeded once.

Each test enqueues a burst of real-photo sessions for several users (shuffled, so later
sessions often run before earlier ones), breaks one part of the stack while jobs are
running and others wait in the queue, and then checks Postgres:

- every session is ``succeeded`` with ``attempts >= 1``;
- exactly one ``analyses`` row per session, and one ``angle_embeddings`` row per image
  (no duplicates), and running baseline sums equal to the sums of the stored embeddings;
- no embeddings, analyses or comparisons whose session is gone (no orphans);
- every user's scores equal those of an undisturbed in-order run of the same photos.

The stack is this module's own (``bench.harness.faults.FaultStack``): a ``redis-server`` with an
append-only file on a free port, a throwaway Postgres cluster, moto's S3 server behind a
TCP proxy, and real Celery workers, all with the shipped Celery settings (no shortened
visibility timeout: a killed worker's jobs come back through the workers' recovery sweep).
The reaper runs with its shipped ``older_than`` every 30 s, as compose runs it. The
machine's Redis (6379) and Postgres (5432) are never touched.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bench.harness.faults import (
    BUCKET,
    SERIES_PLAN,
    FaultStack,
    Job,
    Scores,
    audit,
    finished_count,
    have,
    kill9,
    paused,
    postgres_bindir,
    scores,
    series_jobs,
    whereabouts,
)
from bench.harness.services import ROOT, Worker, free_port
from changewatch.producer import Producer, reaper
from tests.helpers import query, require

USERS = 6  # 30 sessions per test: a few seconds of work on two cores
DEADLINE_S = 240.0
REAP_EVERY_S = 30.0  # compose's reaper service
RECOVERY_BOUND_S = 120.0  # issue 11: a killed worker's job runs again within 2 minutes


@dataclass
class Burst:
    """The sessions one test enqueued: per user, its sessions in capture order."""

    users: dict[uuid.UUID, list[uuid.UUID]] = field(default_factory=dict)

    @property
    def expected(self) -> dict[uuid.UUID, int]:
        return {
            sid: len(SERIES_PLAN[i]) for ids in self.users.values() for i, sid in enumerate(ids)
        }

    @property
    def ids(self) -> list[uuid.UUID]:
        return list(self.expected)


@dataclass
class Fixture:
    stack: FaultStack
    producer: Producer
    photos: Path

    def live_workers(self) -> list[Worker]:
        return [w for w in self.stack.workers if w.process is not None and w.process.poll() is None]

    def enqueue(self, users: int, seed: int) -> Burst:
        """``users`` users' whole histories, enqueued in a shuffled order."""
        burst = Burst()
        jobs: list[Job] = []
        client = self.stack.s3_client()
        for _ in range(users):
            history = series_jobs(client, self.photos, uuid.uuid4())
            burst.users[history[0].user_id] = [job.session_id for job in history]
            jobs += history
        random.Random(seed).shuffle(jobs)
        for job in jobs:
            self.producer.analyze(job.user_id, job.session_id, job.captured_at, job.images)
        return burst

    def progress(self, burst: Burst) -> dict[str, int]:
        return finished_count(self.stack.database_url, burst.ids)

    def wait_for(self, burst: Burst, ready: Callable[[dict[str, int]], bool]) -> dict[str, int]:
        """Poll until ``ready(status counts)``; the counts at that moment."""
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            counts = self.progress(burst)
            if ready(counts):
                return counts
            time.sleep(0.05)
        raise TimeoutError(f"never reached the fault's trigger: {self.progress(burst)}")

    def supervise(self) -> None:
        """Start a worker when none is left, as the deployment's supervisor would.

        kombu 5.7's Redis transport can die on a broker crash ("Unrecoverable error:
        AttributeError: 'NoneType' object has no attribute 'hostname'"; the worker exits 1).
        """
        if not self.live_workers():
            dead = [w.name for w in self.stack.workers if w.process is not None]
            print(f"no live worker ({dead} exited); starting another")
            self.stack.start_worker(f"w{len(self.stack.workers)}")

    def reap(self) -> None:
        """A reaper pass with its shipped defaults, as compose's ``reaper`` service runs."""
        try:
            done = reaper.reap(self.producer)
        except Exception as exc:  # the broker or the database may be the thing still down
            print(f"reaper pass failed: {exc!r}")
            return
        if done.sessions or done.comparisons:
            print(f"reaper re-sent {done.report()}")

    def wait_done(self, burst: Burst) -> float:
        """Seconds until every session finished (or the deadline; the audit says what)."""
        began = time.monotonic()
        last_reap = began
        while time.monotonic() - began < DEADLINE_S:
            self.supervise()
            if time.monotonic() - last_reap > REAP_EVERY_S:
                self.reap()
                last_reap = time.monotonic()
            try:
                counts = self.progress(burst)
            except Exception:  # the database may be the thing still down
                counts = {}
            if counts.get("succeeded", 0) + counts.get("failed", 0) == len(burst.ids):
                break
            time.sleep(0.1)
        return time.monotonic() - began

    def check(self, burst: Burst, reference: list[Scores]) -> None:
        """The whole promise: succeeded once, no duplicates, no orphans, same numbers."""
        report = audit(self.stack.database_url, burst.expected)
        assert report.missing == 0, report
        assert report.status == {"succeeded": len(burst.ids)}, (
            report,
            whereabouts(self.stack.database_url, self.stack.redis.client(), burst.ids),
        )
        assert report.min_attempts >= 1, report
        assert report.bad_analyses == 0, report
        assert report.bad_embeddings == 0, report
        assert report.bad_sums == 0, report
        assert not any(report.orphans.values()), report
        assert report.unordered == 0, report  # per_angle in the contract's angle order
        assert report.clean
        for user, ids in burst.users.items():
            got = scores(self.stack.database_url, ids)
            for i, ((a, na, pa), (b, nb, pb)) in enumerate(zip(got, reference, strict=True)):
                assert na == nb, (user, i)
                assert a == pytest.approx(b, abs=1e-6), (user, i)
                assert pa == pytest.approx(pb, abs=1e-6), (user, i)  # by angle name

    def attempts(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
        with psycopg.connect(self.stack.database_url) as conn:
            return dict(
                conn.execute(
                    "SELECT session_id, attempts FROM sessions WHERE session_id = ANY(%s)", (ids,)
                ).fetchall()
            )

    def requests(self, burst: Burst) -> dict[uuid.UUID, int]:
        """Requests recorded per session: 1 unless somebody sent the job again."""
        with psycopg.connect(self.stack.database_url) as conn:
            return dict(
                conn.execute(
                    "SELECT session_id, count(*) FROM analysis_requests"
                    " WHERE session_id = ANY(%s) GROUP BY session_id",
                    (burst.ids,),
                ).fetchall()
            )

    def redelivered(self, burst: Burst) -> int:
        return sum(n > 1 for n in self.attempts(burst.ids).values())

    def running(self, burst: Burst) -> list[uuid.UUID]:
        with psycopg.connect(self.stack.database_url) as conn:
            return [
                r[0]
                for r in conn.execute(
                    "SELECT session_id FROM sessions WHERE session_id = ANY(%s)"
                    " AND status = 'running'",
                    (burst.ids,),
                )
            ]


def _mid_run(counts: dict[str, int]) -> bool:
    """Some sessions done, some running, many still queued."""
    return (
        counts.get("succeeded", 0) >= 4
        and counts.get("running", 0) >= 1
        and counts.get("queued", 0) >= 8
    )


@pytest.fixture(scope="module")
def faults(photos: Path) -> Iterator[Fixture]:
    require(have("redis-server"), "redis-server is not installed")
    require(postgres_bindir() is not None, "PostgreSQL server binaries (initdb) not found")
    root = Path(tempfile.mkdtemp(prefix="changewatch-faults-"))
    stack = FaultStack(root)
    try:
        stack.start()
        producer = Producer(dsn=stack.database_url, celery=stack.app)
        stack.start_worker("w0")
        yield Fixture(stack, producer, photos)
    finally:
        stack.close()
        logs = ROOT / "artifacts" / "faults"
        logs.mkdir(parents=True, exist_ok=True)
        for log in root.glob("worker-*.log"):
            (logs / log.name).write_bytes(log.read_bytes())
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def reference(faults: Fixture) -> list[Scores]:
    """One user's sessions, one at a time in capture order, nothing broken."""
    ids = []
    for job in series_jobs(faults.stack.s3_client(), faults.photos, uuid.uuid4()):
        faults.producer.analyze(job.user_id, job.session_id, job.captured_at, job.images)
        faults.producer.wait(job.session_id, timeout=120)
        ids.append(job.session_id)
    out = scores(faults.stack.database_url, ids)
    assert out[0][0] == 0.0 and out[-1][1] == len(SERIES_PLAN) - 1
    return out


def _run(
    faults: Fixture, reference: list[Scores], seed: int, fault: Callable[[], object]
) -> dict[str, int]:
    """Enqueue a burst, wait for the middle of it, inject ``fault``, check the outcome."""
    burst = faults.enqueue(USERS, seed=seed)
    at_fault = faults.wait_for(burst, _mid_run)
    began = time.monotonic()
    fault()
    print(f"fault with {at_fault} took {time.monotonic() - began:.1f}s")
    took = faults.wait_done(burst)
    print(f"all finished {took:.1f}s later; attempts > 1: {faults.redelivered(burst)}")
    faults.check(burst, reference)
    return at_fault


def test_worker_killed_mid_batch(faults: Fixture, reference: list[Scores]) -> None:
    """kill -9 of the only worker with jobs running and a queue waiting, then a new one,
    all with the shipped settings (an hour's visibility timeout).

    The killed worker's jobs were never acknowledged (acks_late), so Redis holds them in
    its unacked hash. The new worker's recovery sweep finds that no live worker holds them
    and puts them back in the queue: every job succeeds once, within two minutes of the
    new worker being up, under its original request (the reaper re-sends nothing).
    """
    burst = faults.enqueue(USERS, seed=1)
    (victim,) = faults.live_workers()
    at_kill = faults.wait_for(burst, _mid_run)
    kill9(victim.process)
    in_flight = faults.running(burst)  # frozen now: started, never committed
    faults.stack.start_worker("w1")
    print(f"killed with {at_kill}; {len(in_flight)} in flight")
    took = faults.wait_done(burst)
    print(f"all finished {took:.1f}s after the new worker was up")
    assert took <= RECOVERY_BOUND_S, (took, faults.progress(burst))
    faults.check(burst, reference)
    attempts = faults.attempts(in_flight)
    assert in_flight and all(attempts[sid] >= 2 for sid in in_flight), attempts
    assert faults.requests(burst) == dict.fromkeys(burst.ids, 1)  # nothing re-sent


@pytest.mark.parametrize("hard", [False, True], ids=["sigterm", "sigkill"])
def test_redis_restarted_mid_run(faults: Fixture, reference: list[Scores], hard: bool) -> None:
    """The broker goes away for 3 s and comes back from its append-only file.

    SIGTERM flushes the AOF; SIGKILL is a crash (what Redis wrote to the kernel stays).
    Queued jobs and unacknowledged ones survive in the AOF; the worker reconnects. A
    crash can still lose the one message a worker had popped but not yet written to
    ``unacked`` (about one run in five): the reaper finds that session and re-sends it.
    """
    _run(faults, reference, 2 + hard, lambda: faults.stack.redis.restart(3.0, hard=hard))


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_restarted_mid_run(faults: Fixture, reference: list[Scores], mode: str) -> None:
    """``pg_ctl stop -m fast`` (or ``-m immediate``, a crash with WAL recovery), 4 s down.

    Every open connection is cut. Jobs that hit the dead database, at start or at the
    write, are retried with backoff (psycopg's OperationalError is transient); the
    transaction of a job cut mid-write rolls back whole.
    """
    _run(faults, reference, 4, lambda: faults.stack.postgres.restart(4.0, mode=mode))


def test_s3_hangs_mid_run(faults: Fixture, reference: list[Scores]) -> None:
    """The S3 server is frozen (SIGSTOP) for 5 s: requests hang, then complete."""
    _run(faults, reference, 5, lambda: _freeze(faults.stack, 5.0))


def test_s3_refuses_connections_mid_run(faults: Fixture, reference: list[Scores]) -> None:
    """S3 is unreachable for 5 s: connections refused, open ones reset; data intact."""
    _run(faults, reference, 6, lambda: _unreachable(faults.stack, 5.0))


def _freeze(stack: FaultStack, seconds: float) -> None:
    assert stack.s3.process is not None
    with paused(stack.s3.process, seconds):
        pass


def _unreachable(stack: FaultStack, seconds: float) -> None:
    with stack.proxy.down(seconds):
        pass


def test_a_retry_that_cannot_be_published_keeps_the_job() -> None:
    """Celery's ``retry()`` drops the job (``Reject(requeue=False)``) when the broker
    refuses the retry's publish; worker.outcome requeues the original message instead."""
    from celery import Celery
    from celery.exceptions import Reject

    from changewatch.worker.outcome import retry

    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    app = Celery("refused")
    # The write URL, because $CELERY_BROKER_URL (set for the tests) beats broker_url.
    app.conf.update(broker_write_url=nowhere, task_publish_retry=False)

    @app.task(bind=True, max_retries=5)
    def job(self: Any) -> None: ...

    job.push_request(id="t-1", retries=0, called_directly=False, delivery_info={}, kwargs={})
    try:
        with pytest.raises(Reject) as rejected:
            retry(job, ConnectionError("S3 unreachable"))
    finally:
        job.pop_request()
    assert rejected.value.requeue is True


def _left_of(
    stack: FaultStack, producer: Producer, user: uuid.UUID, sessions: list[uuid.UUID]
) -> dict[str, int]:
    """Everything changewatch could still hold of the person: rows, messages, results."""
    from changewatch.producer.store import people
    from changewatch.schema.broker import broker

    with psycopg.connect(stack.database_url) as conn:
        left = people.left(conn, user, sessions)
    with broker(producer.celery) as held:
        left["messages"] = sum(str(user) in str(m.raw) for _, m in held.queued()) + sum(
            str(user) in str(d.message.raw) for d in held.delivered()
        )
    results = stack.redis.client(1)
    left["results"] = sum(
        str(user).encode() in (results.get(k) or b"")
        for k in results.scan_iter("celery-task-meta-*")
    )
    return left


def test_forget_user_with_jobs_queued_running_and_retrying(faults: Fixture) -> None:
    """forget-user while the person's jobs are in every state: two analyses running
    (their photo reads hang on a frozen S3), a comparison waiting out a retry countdown
    (its sessions are not analyzed yet), and two analyses still queued.

    When it returns nothing of theirs is left: no row, queued or delivered message,
    stored result or photo. Every one of those jobs ends as ``{"status": "forgotten"}``
    without writing anything (the running ones when they reach their write, recorded
    with no ids); the worker goes on.
    """
    import threading

    from changewatch.producer.admin import forget_user
    from changewatch.schema.contract import ANALYZE_TASK, COMPARE_TASK

    stack, producer = faults.stack, faults.producer
    faults.supervise()
    jobs = series_jobs(stack.s3_client(), faults.photos, uuid.uuid4())
    user = jobs[0].user_id
    producer.analyze(user, jobs[0].session_id, jobs[0].captured_at, jobs[0].images)
    producer.wait(jobs[0].session_id, timeout=120)

    assert stack.s3.process is not None
    with paused(stack.s3.process):
        tasks = [producer.analyze(user, jobs[1].session_id, jobs[1].captured_at, jobs[1].images)]
        compare = producer.compare(user, jobs[1].session_id, jobs[0].session_id)
        tasks += [
            producer.analyze(user, job.session_id, job.captured_at, job.images) for job in jobs[2:4]
        ]
        deadline = time.monotonic() + 60
        while len(faults.running(Burst({user: [j.session_id for j in jobs]}))) < 2:
            assert time.monotonic() < deadline, "the person's jobs never started"
            time.sleep(0.1)
        time.sleep(1.0)  # the comparison has taken its retry
        running = faults.running(Burst({user: [j.session_id for j in jobs]}))
        report: dict[str, Any] = {}
        forgetting = threading.Thread(
            target=lambda: report.update(forget_user(producer, str(user), s3=stack.s3_client()))
        )
        forgetting.start()
        deadline = time.monotonic() + 60
        while faults.running(Burst({user: [j.session_id for j in jobs]})):
            assert time.monotonic() < deadline, "forget-user never deleted the rows"
            time.sleep(0.1)
    forgetting.join(timeout=120)  # its photo deletion waited for S3
    assert report and set(report["remaining"].values()) == {0}, report

    ended: dict[str, Any] = {}
    deadline = time.monotonic() + 180  # the comparison's countdown, the hung reads' end
    ids = [t["task_id"] for t in tasks] + [compare["task_id"]]
    while len(ended) < len(ids) and time.monotonic() < deadline:
        for task_id in ids:
            result = stack.app.AsyncResult(task_id)
            if result.ready():
                ended[task_id] = result.result
        time.sleep(0.5)
    assert ended == {key: {"status": "forgotten"} for key in ids}, (ended, compare)
    deadline = time.monotonic() + 120  # the running ones reach their write after S3 is back
    while True:
        refused = query(
            stack.database_url,
            "SELECT task_name, error_code, session_id, payload FROM rejected_messages"
            " WHERE task_id = ANY(%s)",
            (ids,),
        )
        if len(refused) >= len(running) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    # The analyses that were running reached their write and were refused there; the
    # comparison too if the worker held its retry (else forget-user took it out of Redis).
    assert {r[0] for r in refused} in ({ANALYZE_TASK}, {ANALYZE_TASK, COMPARE_TASK}), refused
    assert len(refused) >= len(running)
    assert all(r[1] == "user_forgotten" and r[2] is None for r in refused), refused
    assert str(user) not in json.dumps([r[3] for r in refused])
    left = _left_of(stack, producer, user, [j.session_id for j in jobs])
    assert set(left.values()) == {0}, left
    assert stack.s3_client().list_objects_v2(Bucket=BUCKET, Prefix=f"{user}/")["KeyCount"] == 0

    other = series_jobs(stack.s3_client(), faults.photos, uuid.uuid4(), count=1)[0]
    producer.analyze(other.user_id, other.session_id, other.captured_at, other.images)
    assert producer.wait(other.session_id, timeout=120)["is_first_session"] is True
