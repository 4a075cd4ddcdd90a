"""End-to-end runs: N sessions of real camera photos through Redis, a real worker, S3 and
Postgres; throughput from the database's own timestamps, stages from the worker's metrics."""

from __future__ import annotations

import os
import statistics
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from prometheus_client.parser import text_string_to_metric_families

from bench.harness.services import Worker, free_port
from changewatch.producer import Producer
from changewatch.producer.store import models
from changewatch.schema.contract import ANGLES
from changewatch.worker import launch
from changewatch.worker import store as worker_store

T0 = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Upload:
    """One session's photos, already in S3."""

    user_id: uuid.UUID
    captured_at: datetime
    images: dict[str, str]


def upload_sessions(s3: Any, bucket: str, photos: list[Path], count: int) -> list[Upload]:
    """``count`` six-angle sessions from real photos, a few sessions per user."""
    blobs = [p.read_bytes() for p in photos]
    users = [uuid.uuid4() for _ in range(max(1, count // 4))]
    out = []
    for i in range(count):
        user = users[i % len(users)]
        images = {}
        for j, angle in enumerate(ANGLES):
            key = f"{user}/bench/{i:04d}-{angle}.jpg"
            s3.put_object(Bucket=bucket, Key=key, Body=blobs[(i + j) % len(blobs)])
            images[angle] = f"s3://{bucket}/{key}"
        out.append(Upload(user, T0 + timedelta(weeks=i // len(users)), images))
    return out


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def wait_all(dsn: str, sessions: list[uuid.UUID], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM sessions WHERE session_id = ANY(%s)"
                " AND status IN ('succeeded', 'failed')",
                (sessions,),
            ).fetchone()
            if row is not None and row[0] == len(sessions):
                return
            time.sleep(0.05)
    raise TimeoutError(f"{len(sessions)} sessions not finished after {timeout}s")


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            label = sample.labels.get("stage", "")
            samples[f"{sample.name}{'/' + label if label else ''}"] = sample.value
    return samples


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float:
    """Busy CPU time of the whole machine so far: the worker plus the S3 server, Redis,
    Postgres and this process, which all share the same cores in a local run."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass
class RunResult:
    label: str
    pipeline: str
    concurrency: int
    sessions: int
    succeeded: int
    wall_s: float
    sessions_per_s: float
    s_per_session: float
    latency_p50_s: float
    latency_p95_s: float
    # Started -> stored, without the time queued behind the burst.
    service_p50_s: float
    service_p95_s: float
    stage_s_per_session: dict[str, float] = field(default_factory=dict)
    mean_batch_images: float = 0.0
    peak_rss_bytes: int = 0
    worker_cpu_s_per_session: float = 0.0
    # Everything on the machine, worker included: what the cores really had to do.
    machine_cpu_s_per_session: float = 0.0
    gpu_memory_bytes: float = 0.0
    # Worker process start -> its first job finished (a job waiting in the queue).
    cold_start_s: float = 0.0
    model: str = "resnet50"
    precision: str = "auto"
    # Worker processes sharing the cores, as ``launch --cpu N`` runs them: worker CPU and
    # RSS are their sums, the stages per session over all of them.
    processes: int = 1

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Measured:
    """What one run's worker did while it analyzed the sessions sent to it."""

    sessions: list[uuid.UUID]
    wall_s: float
    before: dict[str, float]  # the worker's metrics before the burst, then after it
    after: dict[str, float]
    peak_rss_bytes: int
    worker_cpu_s: float
    machine_cpu_s: float

    def delta(self, name: str) -> float:
        return self.after.get(name, 0.0) - self.before.get(name, 0.0)


def _scrape_all(ports: list[int]) -> dict[str, float]:
    """Every worker's metrics, summed: the run's totals."""
    total: dict[str, float] = {}
    for port in ports:
        for name, value in scrape(port).items():
            total[name] = total.get(name, 0.0) + value
    return total


def _burst(
    workers: list[tuple[Worker, int]], producer: Producer, uploads: list[Upload]
) -> Measured:
    """Send every session at once and wait for all: wall time, metrics, CPU, memory."""
    pids = [w.process.pid for w, _ in workers if w.process is not None]
    ports = [port for _, port in workers]
    before = _scrape_all(ports)
    cpu_before = sum(cpu_seconds(pid) for pid in pids)
    machine_before = machine_cpu_seconds()
    sessions = [uuid.uuid4() for _ in uploads]
    started = time.perf_counter()
    for sid, up in zip(sessions, uploads, strict=True):
        producer.analyze(up.user_id, sid, up.captured_at, up.images)
    wait_all(producer.dsn, sessions, timeout=1800)
    wall = time.perf_counter() - started
    after = _scrape_all(ports)
    return Measured(
        sessions,
        wall,
        before,
        after,
        sum(peak_rss_bytes(pid) for pid in pids),
        sum(cpu_seconds(pid) for pid in pids) - cpu_before,
        machine_cpu_seconds() - machine_before,
    )


def _workers(
    label: str, env: dict[str, str], pipeline: str, concurrency: int, processes: int, log_dir: Path
) -> Iterator[tuple[Worker, int]]:
    """The run's workers, not yet started, each with its metrics port: on a CPU host the
    layout ``launch --cpu N`` gives (N workers, each with its share of the cores);
    elsewhere one worker."""
    if env.get("CHANGEWATCH_DEVICE", "cpu") != "cpu":
        if processes != 1:
            raise ValueError("several worker processes are a CPU layout; GPUs get one each")
        layout: list[dict[str, str]] = [{}]
    else:
        layout = [spec.env for spec in launch.plan(cpu=processes, metrics_port=0)]
    for index, own in enumerate(layout):
        port = free_port()
        name = f"bench-{label}" + (f"-{index}" if processes > 1 else "")
        settings = {
            "CHANGEWATCH_PIPELINE": pipeline,
            "CHANGEWATCH_WORKER_CONCURRENCY": str(concurrency),
            "CHANGEWATCH_METRICS_PORT": str(port),
        }
        log_path = log_dir / f"worker-{name.removeprefix('bench-')}.log"
        yield Worker(env={**own, **env, **settings}, name=name, log_path=log_path), port


def _times(dsn: str, sessions: list[uuid.UUID]) -> tuple[list[float], list[float]]:
    """Sorted latencies (created -> finished) and service times (started -> finished) of
    the sessions that succeeded, from the database's own clock."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT extract(epoch FROM finished_at - created_at),"
            "       extract(epoch FROM finished_at - started_at) FROM sessions"
            " WHERE session_id = ANY(%s) AND status = 'succeeded'",
            (sessions,),
        ).fetchall()
    return sorted(float(r[0]) for r in rows), sorted(float(r[1]) for r in rows)


def activate(dsn: str, model_id: str, dim: int) -> None:
    """Make the run's model the active one before its worker starts (registered as a
    worker registers it, switched as ``model activate --force`` switches), so the worker
    consumes the jobs queue from its first second."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        worker_store.register_model(conn, model_id, dim)
        with conn.transaction():
            models.make_active(conn, model_id)


def run(
    label: str,
    producer: Producer,
    uploads: list[Upload],
    env: dict[str, str],
    pipeline: str,
    concurrency: int,
    log_dir: Path,
    first: Upload | None = None,
    processes: int = 1,
) -> RunResult:
    """Start the workers, send every session at once, wait for all, stop the workers.

    With ``first``: that session waits in the queue before the workers start, and the
    time from their process start to its end is the cold start.
    """
    from changewatch.settings import Settings
    from changewatch.worker.embed import architecture, model_id_for

    settings = Settings.from_env({**os.environ, **env})
    model_id = model_id_for(settings.model_weights, settings.model, settings.precision)
    activate(producer.dsn, model_id, architecture(settings.model).dim)
    cold: list[uuid.UUID] = []
    if first is not None:
        cold.append(uuid.uuid4())
        producer.analyze(first.user_id, cold[0], first.captured_at, first.images)
    started = time.perf_counter()
    workers: list[tuple[Worker, int]] = []
    cold_start_s = 0.0
    try:
        for worker, port in _workers(label, env, pipeline, concurrency, processes, log_dir):
            workers.append((worker.start(), port))
        if cold:
            wait_all(producer.dsn, cold, timeout=600)
            cold_start_s = time.perf_counter() - started
        for worker, _ in workers:
            worker.wait_ready(producer.celery)
        m = _burst(workers, producer, uploads)
    finally:
        for worker, _ in workers:
            worker.stop()
    latencies, service = _times(producer.dsn, m.sessions)
    ok = len(latencies)
    stages = {
        stage: m.delta(f"changewatch_stage_seconds_sum/{stage}") / max(ok, 1)
        for stage in ("fetch", "decode", "batch", "embed", "score", "store")
    }
    batches = m.delta("changewatch_batch_images_count")
    return RunResult(
        label=label,
        pipeline=pipeline,
        concurrency=concurrency,
        sessions=len(m.sessions),
        succeeded=ok,
        wall_s=m.wall_s,
        sessions_per_s=ok / m.wall_s,
        s_per_session=m.wall_s / max(ok, 1),
        latency_p50_s=percentile(latencies, 0.50),
        latency_p95_s=percentile(latencies, 0.95),
        service_p50_s=percentile(service, 0.50),
        service_p95_s=percentile(service, 0.95),
        stage_s_per_session=stages,
        mean_batch_images=m.delta("changewatch_batch_images_sum") / batches if batches else 0.0,
        peak_rss_bytes=m.peak_rss_bytes,
        worker_cpu_s_per_session=m.worker_cpu_s / max(ok, 1),
        machine_cpu_s_per_session=m.machine_cpu_s / max(ok, 1),
        gpu_memory_bytes=m.after.get("changewatch_gpu_memory_bytes", 0.0),
        cold_start_s=cold_start_s,
        model=settings.model,
        precision=settings.precision,
        processes=processes,
    )
