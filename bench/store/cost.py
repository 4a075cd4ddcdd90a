"""``python -m bench.store.cost``: what one session costs the database, and where it goes.

A private Postgres cluster (full_page_writes on, as a deployment runs; nothing else
writes to it, so every WAL byte is the store's), the shipped store and migrations. People
are pre-filled with ``--history`` sessions; then ``--sessions`` sessions are written as a
worker writes them (``start_job``, then the analysis write), after a warm-up and a
CHECKPOINT. Reported per session:

- WAL bytes (``pg_current_wal_lsn`` before and after), records and full-page images
  (``pg_stat_wal``), against the bytes of the embeddings and region vectors stored;
- WAL by relation (``pg_waldump`` over the same LSN range, each record counted to the
  relation it names first, a TOAST table and its index by the table whose values they
  hold), so a cut aims at what is large; with ``--by-record``, by relation and record
  kind (``Heap INSERT``, ``Btree INSERT_LEAF``, ``+FPW`` when it carries a full-page
  image), so what a cut would remove is told apart from what it would not;
- statements sent (counted by the client's cursors) and transactions committed;
- the writing backend's CPU (it compresses the full-page images it logs).

By default the measured sessions come in a burst after one CHECKPOINT, so a page is
imaged at most once. In production a person's sessions are weeks apart, so each one
touches pages that a CHECKPOINT has passed since (its old rows, the index leaves of its
key) and each first touch writes a full-page image. ``--checkpoint-every 1`` runs a
CHECKPOINT after every round (one session per person) to measure that, and
``--wal-compression`` sets the server's ``wal_compression``, which compresses those images.
``--wal-log-hints`` turns on ``wal_log_hints``, as Patroni runs Postgres (pg_rewind needs
it): a page whose hint bits are first set after a CHECKPOINT is then imaged too.

Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import uuid
from collections import Counter
from typing import Any

import numpy as np
import psycopg
from psycopg_pool import ConnectionPool

from bench.harness.faults.postgres_cluster import PostgresCluster, _as_postgres, postgres_bindir
from bench.report import git_commit
from bench.store import DIM, MODEL, _backend_cpu_s, _job, _regions, _vectors, prefill
from changewatch.schema.migrate import migrate
from changewatch.schema.vectors import to_half
from changewatch.worker import pipeline, store

DBNAME = "changewatch_cost"
_RECORD = re.compile(r"len \(rec/tot\):\s*\d+/\s*(\d+),")
_RELATION = re.compile(r"rel \d+/\d+/(\d+)")
_KIND = re.compile(r"rmgr: (\S+).*?desc: (\S+)")


class CountingCursor(psycopg.Cursor[Any]):
    """Counts the statements a connection sends (``executemany``: one per row)."""

    sent = 0

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        CountingCursor.sent += 1
        return super().execute(query, params, **kwargs)

    def executemany(self, query: Any, params_seq: Any, **kwargs: Any) -> None:
        rows = list(params_seq)
        CountingCursor.sent += len(rows)
        super().executemany(query, rows, **kwargs)


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.cursor_factory = CountingCursor


def _stats(conn: psycopg.Connection[Any]) -> dict[str, int]:
    row = conn.execute(
        "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn, w.wal_records, w.wal_fpi,"
        "       d.xact_commit"
        "  FROM pg_stat_wal w, pg_stat_database d WHERE d.datname = current_database()"
    ).fetchone()
    assert row is not None
    return dict(zip(("lsn", "records", "fpi", "commits"), map(int, row), strict=True))


def _lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def wal_by_relation(
    cluster: PostgresCluster,
    conn: psycopg.Connection[Any],
    start: int,
    end: int,
    by_record: bool = False,
) -> dict[str, int]:
    """WAL bytes between two LSNs by the relation each record names first (and, with
    ``by_record``, by the record's kind too)."""
    names: dict[str, str] = {}
    for node, name, toast_of, toast_index_of in conn.execute(
        "SELECT c.relfilenode::text, c.relname, t.relname, ti.relname FROM pg_class c"
        " LEFT JOIN pg_class t ON t.reltoastrelid = c.oid"
        " LEFT JOIN pg_class ti ON ti.reltoastrelid = (SELECT indrelid FROM pg_index"
        "   WHERE indexrelid = c.oid AND c.relname LIKE 'pg_toast_%%_index')"
        " WHERE c.relfilenode <> 0"
    ):  # a TOAST table and its index by the table they hold values of
        if toast_of:
            names[node] = f"{toast_of} (TOAST)"
        else:
            names[node] = f"{toast_index_of} (TOAST index)" if toast_index_of else name
    assert cluster.bindir is not None
    waldump = [str(cluster.bindir / "pg_waldump"), "-p", str(cluster.data / "pg_wal")]
    proc = subprocess.run(
        [*_as_postgres(), *waldump, "-s", _lsn(start), "-e", _lsn(end)],
        capture_output=True,
        text=True,
        check=False,
    )
    sizes: Counter[str] = Counter()
    for line in proc.stdout.splitlines():
        match = _RECORD.search(line)
        if not match:
            continue
        relation = _RELATION.search(line)
        node = relation.group(1) if relation else None
        key = names.get(node, f"relfilenode {node}") if node else "(no relation: commits)"
        kind = _KIND.search(line)
        if by_record and kind:
            key += f" · {kind.group(1)} {kind.group(2)}" + (" +FPW" if " FPW" in line else "")
        sizes[key] += int(match.group(1))
    return dict(sizes.most_common())


def _write(pool: ConnectionPool, job: Any, rng: np.random.Generator, half: bool) -> None:
    seq = store.start_job(pool, job, f"cost-{job.session_id}")
    assert isinstance(seq, int)
    vectors, regions = _vectors(rng), _regions(rng)
    if half:  # as a worker with CHANGEWATCH_EMBEDDING_DTYPE=float16 rounds them
        vectors = {a: to_half(v) for a, v in vectors.items()}
        regions = {a: to_half(r) for a, r in regions.items()}
    with store.analysis_write(pool, job, seq, MODEL) as write:
        result = pipeline.score_and_save(write, vectors, None, regions)
    assert not isinstance(result, store.Superseded)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    cluster = PostgresCluster.create("changewatch-cost-")
    cluster.options = (
        "-c full_page_writes=on -c checkpoint_timeout=1h -c max_wal_size=4GB -c wal_keep_size=4GB"
        f" -c wal_compression={args.wal_compression}"
        f" -c wal_log_hints={'on' if args.wal_log_hints else 'off'}"
    )
    cluster.init().start()
    try:
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DBNAME}")
        dsn = cluster.url(DBNAME)
        migrate(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            store.register_model(conn, MODEL, DIM)
        people = [uuid.uuid4() for _ in range(args.people)]
        for i, person in enumerate(people):
            prefill(dsn, person, args.history, seed=i, half=args.float16)
        rng = np.random.default_rng(7)
        pool = ConnectionPool(dsn, min_size=1, max_size=1, configure=_configure, open=True)
        index = args.history
        with psycopg.connect(dsn, autocommit=True) as conn:
            for _ in range(args.warmup):
                for person in people:
                    _write(pool, _job(person, index), rng, args.float16)
                index += 1
            conn.execute("CHECKPOINT")
            with pool.connection() as writer:
                backend = writer.info.backend_pid
            before, sent, cpu = _stats(conn), CountingCursor.sent, _backend_cpu_s(backend)
            jobs = []
            for round_ in range(args.sessions):
                for person in people:
                    jobs.append(_job(person, index))
                    _write(pool, jobs[-1], rng, args.float16)
                index += 1
                if args.checkpoint_every and (round_ + 1) % args.checkpoint_every == 0:
                    conn.execute("CHECKPOINT")
            after, sent = _stats(conn), CountingCursor.sent - sent
            cpu_after = _backend_cpu_s(backend)
            stored = conn.execute(
                "SELECT sum(octet_length(embedding)) + sum(coalesce(octet_length(regions), 0))"
                "  FROM angle_embeddings WHERE session_id = ANY(%s)",
                ([j.session_id for j in jobs],),
            ).fetchone()
            by_relation = wal_by_relation(
                cluster, conn, before["lsn"], after["lsn"], args.by_record
            )
        pool.close()
    finally:
        cluster.destroy()
    n = len(jobs)
    wal = after["lsn"] - before["lsn"]
    stored_bytes = int(stored[0]) if stored and stored[0] else 0
    return {
        "commit": git_commit(),
        "history": args.history,
        "embeddings": "float16" if args.float16 else "float32",
        "checkpoint_every": args.checkpoint_every,
        "wal_compression": args.wal_compression,
        "wal_log_hints": args.wal_log_hints,
        "sessions": n,
        "wal_bytes_per_session": round(wal / n),
        "embedding_bytes_per_session": round(stored_bytes / n),
        "wal_over_embeddings": round(wal / stored_bytes, 2) if stored_bytes else None,
        "wal_records_per_session": round((after["records"] - before["records"]) / n, 1),
        "fpi_per_session": round((after["fpi"] - before["fpi"]) / n, 2),
        "statements_per_session": round(sent / n, 1),
        "commits_per_session": round((after["commits"] - before["commits"]) / n, 2),
        "backend_cpu_ms_per_session": (
            round(1000 * (cpu_after - cpu) / n, 2)
            if cpu is not None and cpu_after is not None
            else None
        ),
        "wal_by_relation_per_session": {k: round(v / n) for k, v in by_relation.items()},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.store.cost", description=__doc__)
    parser.add_argument("--history", type=int, default=100, help="earlier sessions per person")
    parser.add_argument("--people", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=5, help="sessions per person, unmeasured")
    parser.add_argument("--sessions", type=int, default=64, help="sessions per person, measured")
    parser.add_argument("--float16", action="store_true", help="embeddings stored as float16")
    parser.add_argument("--by-record", action="store_true", help="WAL by relation and record kind")
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="a CHECKPOINT after every ROUNDS rounds (0: one before the measured sessions only)",
    )
    parser.add_argument(
        "--wal-compression",
        default="off",
        choices=["off", "pglz", "lz4", "zstd"],
        help="the server's wal_compression (full-page images)",
    )
    parser.add_argument(
        "--wal-log-hints", action="store_true", help="wal_log_hints on, as under Patroni"
    )
    args = parser.parse_args(argv)
    if postgres_bindir() is None:
        sys.exit("needs the PostgreSQL server binaries (initdb, pg_ctl, pg_waldump)")
    out = measure(args)
    for key, value in out.items():
        if key != "wal_by_relation_per_session":
            print(f"{key:32s} {value}")
    print("WAL per session, by relation:")
    for name, size in out["wal_by_relation_per_session"].items():
        print(f"  {name:64s} {size:8d} B")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
