"""The broker fails over, on each supported broker; every session ends final, once.

- Redis Sentinel: a primary, one replica and three sentinels (bench.harness.faults.
  sentinel, from Debian's redis-server/redis-sentinel), about 30 sessions, one SIGKILL
  of the primary mid-run. A sentinel promotes the replica; the workers, the producer,
  the recovery sweep and the reaper follow it through the same ``sentinel://`` URL and
  master name. Replication is asynchronous, so a message the old primary took just
  before dying can be gone: the reaper re-sends those from Postgres. Afterwards every
  session succeeded, each stored once, jobs completed again within 30 s of the kill,
  and the same worker process ran throughout.
- RabbitMQ (quorum queues, a vhost of the machine's RabbitMQ): a SIGKILLed worker's
  jobs are redelivered by the broker and done within 15 s, and forget-user stays final
  with the person's jobs still queued: the worker refuses each when it is consumed.

Skips locally when a server is missing; fails in CI.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.harness.faults import (
    FaultStack,
    audit,
    finished_count,
    have,
    kill9,
    postgres_bindir,
    send_histories,
    series_jobs,
    wait_final_reaping,
)
from bench.harness.faults.rabbitmq import rabbitmq_up
from bench.harness.faults.sentinel import SentinelCluster, sentinel_binary
from bench.harness.services import ROOT
from changewatch.producer import Producer, admin
from changewatch.schema import brokers
from changewatch.settings import Settings
from tests.helpers import query, require

DEADLINE_S = 300.0
BACK_WITHIN_S = 30.0


def _stack(broker: str, root: Path) -> FaultStack:
    require(have("redis-server"), "redis-server is not installed")
    require(postgres_bindir() is not None, "PostgreSQL server binaries (initdb) not found")
    if broker == "sentinel":
        require(sentinel_binary() is not None, "redis-sentinel is not installed")
    if broker == "amqp":
        require(rabbitmq_up(), "RabbitMQ (and rabbitmqctl) is not available on 127.0.0.1:5672")
    return FaultStack(root, broker=broker)


@pytest.fixture
def make_stack() -> Iterator[Callable[[str], FaultStack]]:
    made: list[tuple[FaultStack, Path]] = []

    def make(broker: str) -> FaultStack:
        root = Path(tempfile.mkdtemp(prefix=f"changewatch-{broker}-"))
        stack = _stack(broker, root)
        made.append((stack, root))
        return stack.start()

    yield make
    for stack, root in made:
        stack.close()
        logs = ROOT / "artifacts" / "failover"
        logs.mkdir(parents=True, exist_ok=True)
        for log in root.glob("worker-*.log"):
            (logs / f"{stack.broker}-{log.name}").write_bytes(log.read_bytes())
        shutil.rmtree(root, ignore_errors=True)


def _succeeded(stack: FaultStack, ids: list[uuid.UUID]) -> int:
    try:
        return finished_count(stack.database_url, ids).get("succeeded", 0)
    except Exception:  # the database is not what breaks here, but never fail on a read
        return -1


def test_sentinel_failover_mid_run(make_stack: Callable[[str], FaultStack], photos: Path) -> None:
    stack = make_stack("sentinel")
    worker = stack.start_worker("f0", concurrency=2)
    pid = worker.process.pid if worker.process else None
    producer = Producer(dsn=stack.database_url, celery=stack.app)
    expected = send_histories(stack.s3_client(), producer, photos, users=6)
    ids = list(expected)
    while _succeeded(stack, ids) < 4:
        time.sleep(0.1)
    assert isinstance(stack.redis, SentinelCluster)
    done_at_kill = _succeeded(stack, ids)
    promoted = stack.redis.kill_primary()
    began = time.monotonic()
    # More than the worker held at the kill (its concurrency): jobs delivered afterwards.
    while _succeeded(stack, ids) <= done_at_kill + 2 and time.monotonic() - began < 120:
        time.sleep(0.1)
    back = time.monotonic() - began + promoted
    print(f"promoted in {promoted:.1f}s; a job completed {back:.1f}s after the kill")
    counts = wait_final_reaping(stack.database_url, producer, ids, DEADLINE_S)
    report = audit(stack.database_url, expected)
    assert counts == {"succeeded": len(ids)}, (counts, report)
    assert report.missing == 0 and report.clean, report  # one row each: 0 lost, 0 twice
    assert back <= BACK_WITHIN_S, back
    assert worker.process is not None and worker.process.poll() is None
    assert worker.process.pid == pid
    # The queue-depth metric's client follows the promotion from the same settings.
    settings = Settings(broker_url=stack.broker_url, redis_master_name=stack.master_name)
    client = brokers.redis_client(settings)
    assert client is not None and client.llen("changewatch") == 0
    assert client.connection_pool.get_master_address()[1] == stack.redis.primary_port()


def _running(stack: FaultStack, ids: list[uuid.UUID]) -> list[uuid.UUID]:
    sql = "SELECT session_id FROM sessions WHERE session_id = ANY(%s) AND status = 'running'"
    return [r[0] for r in query(stack.database_url, sql, (ids,))]


def test_rabbitmq_worker_killed_and_a_comparison(
    make_stack: Callable[[str], FaultStack], photos: Path
) -> None:
    """Quorum queues: the broker itself gives a SIGKILLed worker's jobs to the other."""
    stack = make_stack("amqp")
    victim = stack.start_worker("k0", concurrency=2)
    stack.start_worker("k1", concurrency=2)
    producer = Producer(dsn=stack.database_url, celery=stack.app)
    expected = send_histories(stack.s3_client(), producer, photos, users=2)
    ids = list(expected)
    deadline = time.monotonic() + 120
    while len(_running(stack, ids)) < 3 or _succeeded(stack, ids) < 1:
        assert time.monotonic() < deadline, finished_count(stack.database_url, ids)
        time.sleep(0.05)
    assert victim.process is not None
    in_flight = _running(stack, ids)
    kill9(victim.process)
    killed_at = time.monotonic()
    while finished_count(stack.database_url, in_flight).get("succeeded", 0) < len(in_flight):
        assert time.monotonic() - killed_at < 60, finished_count(stack.database_url, in_flight)
        time.sleep(0.1)
    took = time.monotonic() - killed_at
    print(f"{len(in_flight)} jobs in flight at the kill, all done {took:.1f}s later")
    assert took <= 15.0, took
    counts = wait_final_reaping(stack.database_url, producer, ids, DEADLINE_S)
    report = audit(stack.database_url, expected)
    assert counts == {"succeeded": len(ids)}, (counts, report)
    assert report.missing == 0 and report.clean, report
    ((user,),) = query(
        stack.database_url, "SELECT user_id FROM sessions WHERE session_id = %s", (ids[1],)
    )
    producer.compare(user, ids[1], ids[0])
    assert producer.wait_comparison(ids[1], ids[0], timeout=120)["status"] == "succeeded"


def test_rabbitmq_results_redis_crash_stalls_no_worker(
    make_stack: Callable[[str], FaultStack], photos: Path
) -> None:
    """On RabbitMQ the results live in Redis: a crash of that Redis while jobs run must
    not leave a worker holding messages it never acknowledges (it would get no more: its
    prefetch window full). Every job ends, the same worker process throughout."""
    from bench.harness.faults.redis_server import RedisServer

    stack = make_stack("amqp")
    worker = stack.start_worker("r0", concurrency=2)
    producer = Producer(dsn=stack.database_url, celery=stack.app)
    expected = send_histories(stack.s3_client(), producer, photos, users=2)
    ids = list(expected)
    deadline = time.monotonic() + 120
    while len(_running(stack, ids)) < 2 or _succeeded(stack, ids) < 1:
        assert time.monotonic() < deadline, finished_count(stack.database_url, ids)
        time.sleep(0.02)
    assert isinstance(stack.redis, RedisServer)
    stack.redis.stop(hard=True)  # SIGKILL: the jobs running now cannot store their results
    time.sleep(3.0)
    stack.redis.start()
    back = time.monotonic()
    counts = wait_final_reaping(stack.database_url, producer, ids, DEADLINE_S)
    took = time.monotonic() - back
    print(f"every job final {took:.1f}s after Redis was back: {counts}")
    assert counts == {"succeeded": len(ids)}, counts
    assert took < 60, took
    assert worker.process is not None and worker.process.poll() is None
    report = audit(stack.database_url, expected)
    assert report.missing == 0 and report.clean, report


def test_rabbitmq_forget_user_with_jobs_queued(
    make_stack: Callable[[str], FaultStack], photos: Path
) -> None:
    """RabbitMQ cannot list a queue: the person's queued jobs are refused when consumed."""
    stack = make_stack("amqp")
    producer = Producer(dsn=stack.database_url, celery=stack.app)
    jobs = series_jobs(stack.s3_client(), photos, uuid.uuid4())
    tasks = [
        producer.analyze(j.user_id, j.session_id, j.captured_at, j.images)["task_id"] for j in jobs
    ]
    report = admin.forget_user(producer, str(jobs[0].user_id), s3=stack.s3_client())
    assert set(report["remaining"].values()) == {0}, report
    stack.start_worker("g0", concurrency=2)  # only now are the jobs consumed
    ended: dict[str, object] = {}
    deadline = time.monotonic() + 120
    while len(ended) < len(tasks) and time.monotonic() < deadline:
        for task_id in tasks:
            result = stack.app.AsyncResult(task_id)
            if result.ready():
                ended[task_id] = result.result
        time.sleep(0.5)
    assert ended == {key: {"status": "forgotten"} for key in tasks}, ended
    ids = [j.session_id for j in jobs]
    assert finished_count(stack.database_url, ids) == {}, "the person's sessions came back"


def test_rabbitmq_poison_message_ends_failed(
    make_stack: Callable[[str], FaultStack], photos: Path
) -> None:
    """A job whose worker dies each time it takes it (the shipped delivery limit, 10):
    RabbitMQ dead-letters it, a worker's dead-letter pass records it and ends its
    session ``failed`` with ``delivery_limit_exceeded``; the next job runs as usual."""
    from kombu import Connection

    from changewatch.schema.amqp_broker import jobs_queue

    stack = make_stack("amqp")
    producer = Producer(dsn=stack.database_url, celery=stack.app)
    poison, fine = series_jobs(stack.s3_client(), photos, uuid.uuid4())[:2]
    task_id = producer.analyze(poison.user_id, poison.session_id, poison.captured_at, poison.images)
    limit = Settings.from_env({}).amqp_delivery_limit
    # A worker that takes the message and dies before acknowledging it: its channel goes.
    taken = 0
    with Connection(stack.broker_url) as conn:
        while taken <= limit + 2:
            channel = conn.channel()
            message = jobs_queue(limit)(channel).get(no_ack=False)
            channel.close()
            if message is None:
                break
            assert message.headers["id"] == task_id["task_id"]
            taken += 1
    # Once, then again after each of ``limit`` deaths; then never again.
    assert taken == limit + 1, f"the broker handed the message out {taken} times"
    producer.analyze(fine.user_id, fine.session_id, fine.captured_at, fine.images)
    stack.start_worker("p0", concurrency=2)
    ids = [poison.session_id, fine.session_id]
    deadline = time.monotonic() + 120
    while finished_count(stack.database_url, ids) != {"failed": 1, "succeeded": 1}:
        assert time.monotonic() < deadline, finished_count(stack.database_url, ids)
        time.sleep(0.5)
    ((status, code, message),) = query(
        stack.database_url,
        "SELECT status, error_code, error_message FROM sessions WHERE session_id = %s",
        (poison.session_id,),
    )
    assert (status, code) == ("failed", "delivery_limit_exceeded"), message
    assert f"{limit + 1} times" in message
    rejected = query(
        stack.database_url,
        "SELECT task_id, error_code FROM rejected_messages WHERE task_id = %s",
        (task_id["task_id"],),
    )
    assert rejected == [(task_id["task_id"], "delivery_limit_exceeded")]
