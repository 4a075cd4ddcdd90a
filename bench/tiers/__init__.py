"""``python -m bench.tiers``: what one session costs each shared tier, and where each
tier saturates.

A private stack (bench.harness.faults.FaultStack: its own redis-server on ``--redis-port``
or a free port, a Postgres cluster with full_page_writes on and pg_stat_statements,
moto's S3 server behind a counting proxy), the shipped Celery settings, migrations and
producer, and ``--workers`` real worker processes whose model costs nothing
(bench/tiers/zero_model: the forward pass is replaced, everything else is the product's).
After a warm-up, ``--sessions`` sessions of six photos are sent and waited for; each
tier's counters are read before and after:

- Redis: commands (INFO commandstats) and CPU seconds (INFO cpu, main thread and
  children), over every client (producer, workers, results).
- Postgres: statements (pg_stat_statements calls), CPU seconds of the postmaster and
  every backend (/proc), WAL bytes (pg_current_wal_lsn).
- S3: HTTP requests and bytes through the proxy the workers use.

With ``--brokers N`` (N > 1) it runs N Redis servers, each a broker with its results
beside it (``CHANGEWATCH_BROKERS``, ``CHANGEWATCH_RESULT_BACKENDS``), people routed to
one by user_id (schema/routing.py), the workers spread over them, and reports each
server's share of the sessions, commands and CPU: what routing by user buys.

Saturation, per tier, from the cost per session: Redis runs commands on one thread, so
it saturates near 1 CPU-second / (its CPU per session); Postgres near the cores it is
given / (its CPU per session); each is turned into GPUs at 1,000 photos/s (166.7
sessions/s each). The machine is shared by every process here (workers included), so the
sessions/s the run reached is a floor, not a tier's limit. Prints a table and one JSON
line.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import psycopg
import redis

from bench.harness.faults.audit import wait_final
from bench.harness.faults.redis_server import RedisServer
from bench.harness.faults.series import send_sessions
from bench.harness.faults.stack import FaultStack
from bench.harness.services import PHOTOS, ROOT, Worker
from bench.report import git_commit
from changewatch.producer import Producer
from changewatch.schema.contract import broker_index
from changewatch.settings import Settings

ZERO_MODEL = Path(__file__).parent / "zero_model"
PHOTOS_PER_GPU_S = 1000.0
PHOTOS_PER_SESSION = 6
_UNCOUNTED = {"info", "config|resetstat"}  # this bench's own reads
_TICK = os.sysconf("SC_CLK_TCK")


def redis_counters(client: redis.Redis) -> dict[str, float]:
    stats = client.info("commandstats")
    calls = sum(
        int(v["calls"]) for k, v in stats.items() if k.removeprefix("cmdstat_") not in _UNCOUNTED
    )
    cpu = client.info("cpu")
    used = ("used_cpu_sys", "used_cpu_user", "used_cpu_sys_children", "used_cpu_user_children")
    seconds = sum(float(cpu[k]) for k in used)
    return {"commands": calls, "cpu_s": seconds}


def _proc_cpu(pid: int, children_too: bool) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children_too:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime: backends that exited
    return ticks / _TICK


def postgres_cpu(data: Path) -> float:
    """CPU seconds of the cluster: the postmaster, its exited children, its live ones."""
    postmaster = int((data / "postmaster.pid").read_text().split()[0])
    total = _proc_cpu(postmaster, children_too=True)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == postmaster:
                total += _proc_cpu(int(entry.name), children_too=False)
        except (OSError, IndexError, ValueError):
            continue
    return total


def postgres_counters(stack: FaultStack) -> dict[str, float]:
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT (SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s"
            "         JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database()),"
            "       pg_current_wal_lsn() - '0/0'::pg_lsn"
        ).fetchone()
    assert row is not None
    return {
        "statements": float(row[0]),
        "wal_bytes": float(row[1]),
        "cpu_s": postgres_cpu(stack.postgres.data),
    }


def statement_calls(stack: FaultStack) -> dict[str, int]:
    """Calls per statement text (pg_stat_statements), to see which ones a session costs."""
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 110), sum(calls)::bigint"
            "  FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid"
            " WHERE d.datname = current_database() GROUP BY 1"
        ).fetchall()
    return {str(q): int(n) for q, n in rows}


def s3_counters(stack: FaultStack) -> dict[str, float]:
    proxy = stack.proxy
    return {"requests": proxy.requests, "bytes": proxy.bytes_up + proxy.bytes_down}


def snapshot(stack: FaultStack, redises: list[RedisServer]) -> dict[str, Any]:
    """Every tier's counters: ``redis`` sums every Redis server, ``servers`` has each
    one's (the brokers in order)."""
    each = [redis_counters(r.client()) for r in redises]
    return {
        "redis": {k: sum(c[k] for c in each) for k in each[0]},
        "postgres": postgres_counters(stack),
        "s3": s3_counters(stack),
        "servers": each,
    }


def start_workers(
    stack: FaultStack,
    count: int,
    concurrency: int,
    brokers: tuple[str, ...],
    results: tuple[str, ...],
) -> Producer:
    """``count`` workers spread over ``brokers`` (each storing results in its pair in
    ``results``); returns a producer that routes to them."""
    several = len(brokers) > 1
    for i in range(count):
        env = {
            **stack.worker_env(concurrency),
            "CELERY_BROKER_URL": brokers[i % len(brokers)],
            "CELERY_RESULT_BACKEND": results[i % len(brokers)],
            "CHANGEWATCH_BROKERS": " ".join(brokers) if several else "",
            "CHANGEWATCH_RESULT_BACKENDS": " ".join(results) if several else "",
            "PYTHONPATH": os.pathsep.join([str(ZERO_MODEL), str(ROOT)]),
        }
        worker = Worker(env=env, name=f"tiers{i}", log_path=stack.root / f"worker-{i}.log")
        stack.workers.append(worker.start())
    settings = Settings(
        broker_url=brokers[0],
        brokers=brokers if several else (),
        result_backend=results[0],
        result_backends=results if several else (),
        database_url=stack.database_url,
    )
    producer = Producer(settings)
    for i, worker in enumerate(stack.workers):
        worker.wait_ready(producer.brokers.app(brokers[i % len(brokers)]))
    return producer


def routed(stack: FaultStack, session_ids: list[Any], brokers: int) -> list[int]:
    """How many of the sessions each broker carried (by their people's routing)."""
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        users = conn.execute(
            "SELECT user_id FROM sessions WHERE session_id = ANY(%s)", (session_ids,)
        ).fetchall()
    counts = [0] * brokers
    for (user,) in users:
        counts[broker_index(user, brokers)] += 1
    return counts


def saturation(
    per_session: dict[str, dict[str, float]],
    cores: float,
    by_broker: list[dict[str, float]] | None = None,
) -> dict[str, Any]:
    """Sessions/s at which each tier runs out, and GPUs that is at 1,000 photos/s. With
    several brokers the busiest one runs out first (CPU per session of all sessions)."""
    gpu_sessions_s = PHOTOS_PER_GPU_S / PHOTOS_PER_SESSION
    redis_cpu = max(b["cpu_s"] for b in by_broker) if by_broker else per_session["redis"]["cpu_s"]
    redis_s = 1.0 / redis_cpu if redis_cpu else None
    pg_s = cores / per_session["postgres"]["cpu_s"] if per_session["postgres"]["cpu_s"] else None
    out: dict[str, Any] = {}
    for tier, sessions_s in (("redis", redis_s), ("postgres", pg_s)):
        out[tier] = {
            "sessions_per_s": round(sessions_s) if sessions_s else None,
            "gpus": round(sessions_s / gpu_sessions_s, 1) if sessions_s else None,
        }
    out["postgres"]["wal_mb_per_s"] = (
        round(pg_s * per_session["postgres"]["wal_bytes"] / 1e6, 1) if pg_s else None
    )
    return out


def measure(
    root: Path,
    workers: int,
    concurrency: int,
    sessions: int,
    warmup: int,
    redis_port: int = 0,
    brokers: int = 1,
) -> dict[str, Any]:
    stack = FaultStack(
        root,
        redis_port=redis_port,
        postgres_options="-c full_page_writes=on -c shared_preload_libraries=pg_stat_statements"
        " -c pg_stat_statements.track=all",
    ).start()
    own = [RedisServer(root / f"redis{i}").start() for i in range(1, brokers)]
    redises = [stack.redis, *own]  # type: ignore[list-item]
    try:
        with psycopg.connect(stack.database_url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        urls = tuple(r.url(0) for r in redises)
        producer = start_workers(
            stack, workers, concurrency, urls, tuple(r.url(1) for r in redises)
        )
        wait_final(
            stack.database_url, send_sessions(stack.s3_client(), producer, PHOTOS, warmup), 900
        )
        before, began, calls = snapshot(stack, redises), time.monotonic(), statement_calls(stack)
        ids = send_sessions(stack.s3_client(), producer, PHOTOS, sessions)
        statuses = wait_final(stack.database_url, ids, 900)
        took = time.monotonic() - began
        after = snapshot(stack, redises)
        calls = {q: n - calls.get(q, 0) for q, n in statement_calls(stack).items()}
        carried = routed(stack, ids, brokers)
    finally:
        stack.close()
        for server in own:
            server.stop()
    per_session = {
        tier: {k: (after[tier][k] - before[tier][k]) / sessions for k in after[tier]}
        for tier in ("redis", "postgres", "s3")
    }
    servers = [
        {k: round((a[k] - b[k]) / sessions, 6 if k == "cpu_s" else 2) for k in a}
        for a, b in zip(after["servers"], before["servers"], strict=True)
    ]
    by_broker = [
        {**costs, "sessions_share": round(n / sessions, 3)}
        for costs, n in zip(servers[:brokers], carried, strict=True)
    ]
    cores = float(os.cpu_count() or 1)
    return {
        "commit": git_commit(),
        "workers": workers,
        "concurrency": concurrency,
        "brokers": brokers,
        "redis_per_session_by_broker": by_broker if brokers > 1 else [],
        "sessions": sessions,
        "statuses": statuses,
        "seconds": round(took, 1),
        "sessions_per_s_reached": round(sessions / took, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cores": cores,
        "per_session": {
            tier: {k: round(v, 6 if k == "cpu_s" else 1) for k, v in costs.items()}
            for tier, costs in per_session.items()
        },
        "saturation": saturation(per_session, cores, by_broker if brokers > 1 else None),
        "statements_per_session": {
            q: round(n / sessions, 2)
            for q, n in sorted(calls.items(), key=lambda kv: -kv[1])[:25]
            if n
        },
    }
