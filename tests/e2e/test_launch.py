"""``python -m changewatch.worker launch``: one supervised worker per device, against real Redis,
Postgres and S3 (two CPU workers here). The device counting and supervision it relies on are
tested without services in tests/unit/test_launch.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import psycopg
import pytest

from bench.harness.services import ROOT, Worker, free_port
from changewatch.producer import Producer
from changewatch.schema.contract import QUEUE
from tests.helpers import ARTIFACTS, BUCKET, MAX_IMAGE_BYTES, SERIES, T0, Uploader, query

T = TypeVar("T")
GRACE_S = 30
NODES = ("cpu0", "cpu1")
LOG = ARTIFACTS / "launch.log"
WORKER_ENV = {
    "CHANGEWATCH_MODEL_WEIGHTS": "random",
    "CHANGEWATCH_ALLOWED_BUCKETS": BUCKET,
    "CHANGEWATCH_MAX_IMAGE_BYTES": str(MAX_IMAGE_BYTES),
    "CHANGEWATCH_METRICS_ADDR": "127.0.0.1",
}

# -- the launcher with two real CPU workers ----------------------------------------------


def _two_free_ports() -> int:
    """A base port whose successor is free too (worker i serves base + i)."""
    for _ in range(50):
        base = free_port()
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", base + 1))
            return base
        except OSError:
            continue
    raise RuntimeError("no two consecutive free ports")


def _nodes(producer: Producer) -> dict[str, int]:
    """Live node name prefix (cpu0) -> its pid, from Celery's own remote control."""
    stats = producer.celery.control.inspect(timeout=1.0).stats() or {}
    return {name.split("@")[0]: int(info["pid"]) for name, info in stats.items()}


def _wait_for(what: str, check: Callable[[], T], timeout: float) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.2)
    raise TimeoutError(f"{what} not after {timeout}s; see {LOG}")


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _succeeded(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    key = 'changewatch_jobs_total{error_code="",outcome="succeeded",task="analyze"} '
    return sum(float(line[len(key) :]) for line in text.splitlines() if line.startswith(key))


def _enqueue(producer: Producer, uploader: Uploader, photos: Path, count: int) -> list[uuid.UUID]:
    """One session of three real photos per new user, so no two contend for a user lock.

    Uploads first, then enqueues all at once: the jobs reach the workers as one burst.
    """
    series = [photos / "series" / name for name in SERIES]
    jobs = []
    for i in range(count):
        user = uuid.uuid4()
        files = {a: series[(i + j) % len(series)] for j, a in enumerate(("front", "left", "right"))}
        jobs.append((user, uuid.uuid4(), T0 + timedelta(days=i), uploader.session(user, files)))
    for user, session, at, images in jobs:
        producer.analyze(user, session, at, images)
    return [session for _, session, _, _ in jobs]


def _statuses(producer: Producer, ids: list[uuid.UUID]) -> dict[str, int]:
    with psycopg.connect(producer.dsn) as conn:
        rows = conn.execute(
            "SELECT status, count(*) FROM sessions WHERE session_id = ANY(%s) GROUP BY status",
            (ids,),
        ).fetchall()
    return dict(rows)


@pytest.fixture(scope="module")
def only_ours(producer: Producer) -> Iterator[None]:
    """Workers other test modules left running (the session ``worker``) stop consuming."""
    others = [name for reply in producer.celery.control.ping(timeout=1.0) for name in reply]
    if others:
        producer.celery.control.cancel_consumer(QUEUE, destination=others, reply=True)
    try:
        yield
    finally:
        if others:
            producer.celery.control.add_consumer(QUEUE, destination=others, reply=True)


class Launched:
    def __init__(self, process: subprocess.Popen[bytes], base_port: int) -> None:
        self.process, self.base_port = process, base_port


@pytest.fixture(scope="module")
def launched(only_ours: None, producer: Producer, s3: object) -> Iterator[Launched]:
    """``launch --cpu 2`` with the tests' broker, database and S3 (the fixtures' env)."""
    ARTIFACTS.mkdir(exist_ok=True)
    base = _two_free_ports()
    with LOG.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "changewatch.worker", "launch", "--cpu", "2",
             "--metrics-port", str(base), "--grace", str(GRACE_S), "--", "--loglevel", "INFO"],
            cwd=ROOT,
            env={**os.environ, **WORKER_ENV},
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        _wait_for("cpu0@ and cpu1@ online", lambda: set(NODES) <= set(_nodes(producer)), 120)
        yield Launched(process, base)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(GRACE_S + 10)
            except subprocess.TimeoutExpired:
                process.kill()


def test_one_pinned_worker_per_device_and_both_consume(
    launched: Launched, producer: Producer, uploader: Uploader, photos: Path
) -> None:
    """Each child of the launcher is its own node, pinned to the CPU, with its own port."""
    pids = _nodes(producer)
    for index, name in enumerate(NODES):
        assert _parent(pids[name]) == launched.process.pid
        env = _environ(pids[name])
        assert env["CUDA_VISIBLE_DEVICES"] == "" and env["CHANGEWATCH_DEVICE"] == "cpu"
        assert env["CHANGEWATCH_METRICS_PORT"] == str(launched.base_port + index)
        assert int(env["OMP_NUM_THREADS"]) >= 1

    ids = _enqueue(producer, uploader, photos, 8)
    for session in ids:
        producer.wait(session, timeout=120)
    done = [_succeeded(launched.base_port + i) for i in range(len(NODES))]
    assert all(n >= 1 for n in done), f"jobs per worker: {done}"
    assert sum(done) == len(ids)


def test_a_killed_worker_is_restarted(launched: Launched, producer: Producer) -> None:
    """kill -9 (the OOM killer, a segfault): the same node comes back as a new process."""
    old = _nodes(producer)["cpu1"]
    os.kill(old, signal.SIGKILL)
    new = _wait_for(
        "cpu1@ back with a new pid",
        lambda: (pid := _nodes(producer).get("cpu1")) not in (None, old) and pid,
        60,
    )
    assert _parent(new) == launched.process.pid
    assert launched.process.poll() is None
    assert f"cpu1 (pid {old}) died (killed by SIGKILL)" in LOG.read_text()


def test_sigterm_finishes_in_flight_jobs_and_loses_none(
    launched: Launched, producer: Producer, uploader: Uploader, photos: Path
) -> None:
    """Warm shutdown: running jobs finish, the rest stay queued and run once, elsewhere."""
    children = [pid for name, pid in _nodes(producer).items() if name in NODES]
    assert len(children) == len(NODES)
    ids = _enqueue(producer, uploader, photos, 24)
    _wait_for("a job running", lambda: _statuses(producer, ids).get("running"), 60)
    started = time.monotonic()
    launched.process.send_signal(signal.SIGTERM)
    assert launched.process.wait(GRACE_S + 10) == 0
    took = time.monotonic() - started
    assert took < GRACE_S
    assert not any(Path(f"/proc/{pid}").exists() for pid in children)

    after = _statuses(producer, ids)
    # Nothing was cut off mid-job; some were still queued, so redelivery is exercised.
    assert set(after) <= {"succeeded", "queued"}, after
    assert after.get("queued", 0) >= 1, after

    drain = Worker(env=WORKER_ENV, name="drain", log_path=ARTIFACTS / "launch-drain.log")
    drain.start()
    try:
        drain.wait_ready(producer.celery)
        for session in ids:
            producer.wait(session, timeout=120)
    finally:
        drain.stop()
    attempts = query(
        producer.dsn,
        "SELECT status, attempts, count(*) FROM sessions WHERE session_id = ANY(%s) GROUP BY 1, 2",
        (ids,),
    )
    rows = query(
        producer.dsn,
        "SELECT (SELECT count(*) FROM analyses WHERE session_id = ANY(%(ids)s)),"
        " (SELECT count(*) FROM angle_embeddings WHERE session_id = ANY(%(ids)s))",
        {"ids": ids},
    )
    assert attempts == [("succeeded", 1, len(ids))]  # each job ran exactly once
    assert rows == [(len(ids), 3 * len(ids))]
    print(f"launcher stopped in {took:.1f}s; {after.get('queued')} of {len(ids)} redelivered")
