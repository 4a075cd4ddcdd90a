"""``python -m bench.outbox_cost``: what the notification outbox adds to a job, alone.

The worker's analysis write (``analysis_write`` + ``score_and_save``, as ``bench.store``
runs it) is timed for ``--sessions`` sessions appended to people with ``--history``
earlier sessions, alternately without and with the notification written in the same
transaction (``pipeline._tell``: the result read back inside it, the request marked, the
outbox row inserted). Then the relay sends the rows (``Relay.once``) to a Redis list.
Reported: ms per session of the write without and with the outbox, the relay's ms per
notification, and the sum as a share of ``--service-s`` (a session's service time).

Its own database (``CHANGEWATCH_BENCH_OUTBOX_DATABASE_URL``, recreated) and broker
(``CHANGEWATCH_BENCH_OUTBOX_BROKER_URL``; only its list ``bench.outbox`` is touched).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from typing import Any

import numpy as np
import psycopg
import redis
from psycopg_pool import ConnectionPool

from bench.harness.services import fresh_database
from bench.store import DIM, MODEL, _job, _vectors, prefill
from changewatch.schema.routing import sending_app as celery_app
from changewatch.settings import Settings
from changewatch.worker import pipeline, store
from changewatch.worker.relay import Relay

QUEUE = "bench.outbox"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.outbox_cost", description=__doc__)
    parser.add_argument("--sessions", type=int, default=200, help="per mode")
    parser.add_argument("--history", type=int, default=20)
    parser.add_argument(
        "--service-s",
        type=float,
        default=0.53,
        help="a session's service time (docs/benchmarks.md, fast-c2 p50)",
    )
    return parser.parse_args(argv)


def writes(dsn: str, sessions: int, history: int) -> dict[str, list[float]]:
    """Seconds of each analysis write, without and with its notification, alternating."""
    rng = np.random.default_rng(0)
    user = uuid.uuid4()
    prefill(dsn, user, history, seed=1)
    pool = ConnectionPool(dsn, min_size=1, max_size=1, open=True)
    times: dict[str, list[float]] = {"without": [], "with": []}
    for i in range(2 * sessions):
        mode = "with" if i % 2 else "without"
        job = _job(user, history + i)
        seq = store.start_job(pool, job, f"bench-{job.session_id}")
        assert isinstance(seq, int)
        vectors = _vectors(rng)
        started = time.perf_counter()
        with store.analysis_write(pool, job, seq, MODEL) as write:
            pipeline.score_and_save(write, vectors)
            if mode == "with" and isinstance(write, store.Write):
                pipeline._tell(write, QUEUE)
        times[mode].append(time.perf_counter() - started)
    pool.close()
    return times


def relay_seconds(dsn: str, broker_url: str) -> tuple[int, float]:
    """(notifications sent, seconds) for one relay pass over every outbox row."""
    app = celery_app(Settings(broker_url=broker_url, result_backend=broker_url))
    app.conf.update(broker_read_url=broker_url, broker_write_url=broker_url)
    relay = Relay(app, dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        started = time.perf_counter()
        sent = relay.once(conn)
        seconds = time.perf_counter() - started
    redis.Redis.from_url(broker_url).delete(QUEUE)
    return sent, seconds


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    dsn = os.environ.get(
        "CHANGEWATCH_BENCH_OUTBOX_DATABASE_URL",
        "postgresql://postgres@127.0.0.1:5432/changewatch_bench_outbox",
    )
    broker = os.environ.get("CHANGEWATCH_BENCH_OUTBOX_BROKER_URL", "redis://127.0.0.1:6379/10")
    fresh_database(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        store.register_model(conn, MODEL, DIM)
    times = writes(dsn, args.sessions, args.history)
    sent, relay_s = relay_seconds(dsn, broker)
    without = 1000 * statistics.median(times["without"])
    with_ = 1000 * statistics.median(times["with"])
    relay_ms = 1000 * relay_s / max(sent, 1)
    added_ms = with_ - without + relay_ms
    report: dict[str, Any] = {
        "sessions_per_mode": args.sessions,
        "history": args.history,
        "write_p50_ms_without": round(without, 3),
        "write_p50_ms_with": round(with_, 3),
        "relay_ms_per_notification": round(relay_ms, 3),
        "notifications_sent": sent,
        "added_ms_per_session": round(added_ms, 3),
        "service_s": args.service_s,
        "share_of_service_time": round(added_ms / 1000 / args.service_s, 5),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
