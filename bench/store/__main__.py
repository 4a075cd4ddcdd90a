"""``python -m bench.store``: measure, then write the report."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from bench import store as bench_store
from bench.harness.services import PHOTOS, ROOT, fresh_database
from bench.report import git_commit, save
from bench.store import DATABASE_URL, DIM, MODEL, markdown, measure, plot
from changewatch.worker import store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.store", description=bench_store.__doc__)
    parser.add_argument("--histories", type=int, nargs="+", default=[0, 100, 1000])
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--per-writer", type=int, default=200, help="sessions each writer adds")
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench-store")
    parser.add_argument(
        "--e2e-history",
        type=int,
        default=1000,
        help="also time real-worker jobs for a person with this history (0: skip)",
    )
    parser.add_argument("--e2e-jobs", type=int, default=10)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    fresh_database(DATABASE_URL)
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        store.register_model(conn, MODEL, DIM)
        version = conn.execute("SHOW server_version").fetchone()
    runs = []
    for history in args.histories:
        for writers in args.writers:
            print(f"history {history}, {writers} writers ...", flush=True)
            runs.append(measure(DATABASE_URL, history, writers, args.per_writer))
            print(f"  {runs[-1]['sessions_per_s']:.0f} sessions/s", flush=True)
    by_history = []
    for history in sorted({0, 10, *args.histories}):
        print(f"single writer, history {history} ...", flush=True)
        by_history.append(measure(DATABASE_URL, history, 1, 60))
    e2e = None
    if args.e2e_history:
        from bench.store.e2e import e2e_history_cost

        photos = sorted((PHOTOS / "series").glob("*.jpg"))
        print(f"real worker, history {args.e2e_history} ...", flush=True)
        e2e = e2e_history_cost(DATABASE_URL, args.e2e_history, args.e2e_jobs, photos, args.out)
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "e2e": e2e,
        "commit": git_commit(),
        "cpus": os.cpu_count(),
        "postgres": version[0] if version else "?",
        "runs": runs,
        "by_history": by_history,
    }
    save(report, args.out, "store", markdown, plot, "store.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
