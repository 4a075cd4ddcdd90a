"""``python -m bench.broker_calls``: Redis commands per session, over all clients.

A private stack (bench.harness.faults.FaultStack: its own redis-server, Postgres cluster
and S3 server; never the machine's Redis) with the shipped Celery settings, real
workers and, with ``--flower``, a Flower process on the same broker. Redis's
``INFO commandstats`` is read before and after ``--sessions`` sessions are sent and all
have finished: everything every client did in that window (the producer's sends, the
workers' deliveries, acks, results, events, heartbeats and recovery sweeps, Flower) is
counted, divided by the sessions. Prints a table by command and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import redis

from bench.harness import process
from bench.harness.faults.audit import wait_final
from bench.harness.faults.postgres_cluster import postgres_bindir
from bench.harness.faults.series import send_sessions
from bench.harness.faults.stack import FaultStack
from bench.harness.process import have
from bench.harness.services import PHOTOS, ROOT, celery
from bench.report import git_commit
from changewatch.producer import Producer

_UNCOUNTED = {"info", "config|resetstat"}  # this bench's own reads


def commandstats(client: redis.Redis) -> dict[str, int]:
    """Calls per command since the server started (or its last CONFIG RESETSTAT)."""
    stats = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(v["calls"])
        for name, v in stats.items()
        if name.removeprefix("cmdstat_") not in _UNCOUNTED
    }


def _flower(stack: FaultStack, root: Path) -> object:
    port = process.free_port()
    proc = process.start(
        celery("flower", f"--port={port}", "--address=127.0.0.1"),
        log=root / "flower.log",
        env={**os.environ, **stack.worker_env()},
        cwd=ROOT,
    )
    process.wait_for_port(port, 60)
    return proc


def measure(args: argparse.Namespace, root: Path) -> dict[str, object]:
    stack = FaultStack(root).start()
    flower = None
    try:
        for i in range(args.workers):
            stack.start_worker(f"c{i}", concurrency=args.concurrency)
        if args.flower:
            flower = _flower(stack, root)
        producer = Producer(dsn=stack.database_url, celery=stack.app)
        wait_final(
            stack.database_url, send_sessions(stack.s3_client(), producer, PHOTOS, 2), 600, 0.5
        )  # warm: first declares, first jobs
        time.sleep(args.settle)
        client = stack.redis.client()
        before, began = commandstats(client), time.monotonic()
        ids = send_sessions(stack.s3_client(), producer, PHOTOS, args.sessions)
        counts = wait_final(stack.database_url, ids, 600, 0.5)
        after, took = commandstats(client), time.monotonic() - began
    finally:
        if flower is not None:
            process.stop(flower, 20)  # type: ignore[arg-type]
        stack.close()
    calls = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    return {
        "commit": git_commit(),
        "sessions": args.sessions,
        "workers": args.workers,
        "flower": args.flower,
        "seconds": round(took, 1),
        "statuses": counts,
        "calls": dict(sorted(calls.items(), key=lambda kv: -kv[1])),
        "per_session": round(sum(calls.values()) / args.sessions, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.broker_calls", description=__doc__)
    parser.add_argument("--sessions", type=int, default=60)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--flower", action="store_true", help="run Flower on the broker too")
    parser.add_argument("--settle", type=float, default=3.0, help="idle seconds before counting")
    args = parser.parse_args(argv)
    if not have("redis-server") or postgres_bindir() is None:
        sys.exit("needs redis-server and the PostgreSQL server binaries (initdb, pg_ctl)")
    root = Path(tempfile.mkdtemp(prefix="changewatch-calls-"))
    try:
        out = measure(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for name, n in out["calls"].items():  # type: ignore[union-attr]
        print(f"{name:28s} {n:7d} {n / args.sessions:7.2f}/session")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
