"""``python -m bench.tiers``: measure each tier's cost per session, print it."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from bench import tiers
from bench.harness.faults.postgres_cluster import postgres_bindir
from bench.harness.process import have


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.tiers", description=tiers.__doc__)
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=2, help="per worker")
    parser.add_argument("--sessions", type=int, default=120)
    parser.add_argument("--warmup", type=int, default=6)
    parser.add_argument("--redis-port", type=int, default=0, help="the private Redis (0: free)")
    parser.add_argument(
        "--brokers", type=int, default=1, help="Redis brokers, people routed by user_id"
    )
    args = parser.parse_args(argv)
    if args.workers < args.brokers:
        parser.error("--workers must be at least --brokers: each broker needs a worker")
    if not have("redis-server") or postgres_bindir() is None:
        sys.exit("needs redis-server and the PostgreSQL server binaries (initdb, pg_ctl)")
    root = Path(tempfile.mkdtemp(prefix="changewatch-tiers-"))
    try:
        out = tiers.measure(
            root,
            args.workers,
            args.concurrency,
            args.sessions,
            args.warmup,
            args.redis_port,
            args.brokers,
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{args.sessions} sessions, {out['sessions_per_s_reached']} sessions/s reached,")
    print(f"load average {out['load_average']}, {out['cores']:.0f} cores")
    for tier, costs in out["per_session"].items():
        print(f"{tier:9s} per session: " + ", ".join(f"{k} {v}" for k, v in costs.items()))
    for i, costs in enumerate(out["redis_per_session_by_broker"]):
        print(f"broker {i}  per session: " + ", ".join(f"{k} {v}" for k, v in costs.items()))
    for tier, limit in out["saturation"].items():
        print(f"{tier:9s} saturates near: " + ", ".join(f"{k} {v}" for k, v in limit.items()))
    print("Postgres statements per session, most called first:")
    for query, n in out["statements_per_session"].items():
        print(f"  {n:6.2f}  {query}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
