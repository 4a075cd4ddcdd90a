"""``python -m bench.store``: the score store alone (no model, no broker), Postgres included.

Each "session" is what a worker writes for one job: ``start_job``, then ``score_and_save``
in an ``analysis_write``, with six 2048-d embeddings and their 9 x 128 region vectors,
appended after the person's history.
People are pre-filled with 0, 100 and 1,000 earlier sessions; 1, 4 and 16 writer
processes each take their own people. Reported: sessions/s per (history, writers), and
the single-writer time of the write transaction against history length. Writes JSON,
markdown and a PNG.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from changewatch.schema.contract import ANGLES, AnalyzeJob, S3Uri
from changewatch.schema.vectors import to_half
from changewatch.worker import pipeline, store
from changewatch.worker.regions import REGION_DIM
from changewatch.worker.score import Totals

DATABASE_URL = os.environ.get(
    "CHANGEWATCH_BENCH_STORE_DATABASE_URL",
    "postgresql://postgres@127.0.0.1:5432/changewatch_bench_store",
)
MODEL = "bench/store/v1"
DIM = 2048
T0 = datetime(2020, 1, 1, tzinfo=UTC)


def _vectors(rng: np.random.Generator, angles: tuple[str, ...] = ANGLES) -> dict[str, np.ndarray]:
    # Pooled ReLU features: non-negative, random-looking (they do not compress).
    return {a: rng.gamma(1.0, 0.5, DIM).astype(np.float32) for a in angles}


def _regions(rng: np.random.Generator, angles: tuple[str, ...] = ANGLES) -> dict[str, np.ndarray]:
    """Each angle's nine region vectors, as ResNet50's projected ones: (9, 128)."""
    return {a: rng.normal(0.0, 1.0, (9, REGION_DIM)).astype(np.float32) for a in angles}


def _job(user: uuid.UUID, index: int) -> AnalyzeJob:
    sid = uuid.uuid4()
    return AnalyzeJob(
        user_id=user,
        session_id=sid,
        captured_at=T0 + timedelta(hours=index),
        images={a: S3Uri("bench", f"{user}/{sid}/{a}.jpg") for a in ANGLES},
    )


def prefill(
    dsn: str, user: uuid.UUID, sessions: int, seed: int, model: str = MODEL, half: bool = False
) -> None:
    """``sessions`` analyzed sessions for ``user``, written in bulk with exact sums (the
    state the store would have reached): the benchmark measures appends, not prefill.
    ``half``: every vector rounded to float16, as a float16 deployment's history is."""
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO users (user_id) VALUES (%s) ON CONFLICT DO NOTHING", (user,))
    if sessions == 0:
        return
    rng = np.random.default_rng(seed)
    totals = Totals()
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        rows_s, rows_r, rows_e, rows_a = [], [], [], []
        for i in range(sessions):
            job = _job(user, i)
            vectors, regions = _vectors(rng), _regions(rng)
            if half:
                vectors = {a: to_half(v) for a, v in vectors.items()}
                regions = {a: to_half(r) for a, r in regions.items()}
            totals.add(vectors, regions=regions)
            task = f"prefill-{job.session_id}"
            images = Jsonb(job.to_payload()["images"])
            rows_s.append((job.session_id, user, job.captured_at, images, task))
            rows_r.append((user, task, job.session_id))
            rows_e += [
                (
                    user,
                    job.session_id,
                    a,
                    model,
                    store.encode_vector(v),
                    store.encode_vector(regions[a]),
                )
                for a, v in vectors.items()
            ]
            rows_a.append((job.session_id, model, user, job.captured_at, DIM))
        cur.executemany(
            "INSERT INTO sessions (session_id, user_id, captured_at, images, status, task_id,"
            " good_task_id, good_captured_at, good_images)"
            " VALUES (%s, %s, %s, %s, 'succeeded', %s, NULL, NULL, NULL)",
            rows_s,
        )
        cur.executemany(
            "INSERT INTO analysis_requests (user_id, task_id, session_id) VALUES (%s, %s, %s)",
            rows_r,
        )
        cur.execute(
            "UPDATE sessions s SET request_seq = r.seq, good_request_seq = r.seq,"
            " good_task_id = r.task_id, good_captured_at = s.captured_at, good_images = s.images"
            " FROM analysis_requests r WHERE r.user_id = s.user_id"
            " AND r.session_id = s.session_id AND s.user_id = %s",
            (user,),
        )
        with cur.copy(
            "COPY angle_embeddings (user_id, session_id, angle, model_id, embedding, regions)"
            " FROM STDIN"
        ) as copy:
            for row in rows_e:
                copy.write_row(row)
        cur.executemany(
            "INSERT INTO analyses (session_id, model_id, user_id, captured_at, embedding_dim,"
            " change_score, is_first_session, baseline_session_count, per_angle)"
            " VALUES (%s, %s, %s, %s, %s, 0.1, false, 1, '[]')",
            rows_a,
        )
        store.store_sums(cur, user, model, totals)


def _backend_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) of a Postgres backend on this machine; None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _writer(dsn: str, users: list[str], history: int, per_user: int, seed: int, out: Any) -> None:
    """One writer process: append ``per_user`` sessions to each of its people, in turn.

    It also reads its Postgres backend's CPU (one connection, so one backend): the store's
    rate on a few cores is bounded by the writers' CPU and their backends' together."""
    rng = np.random.default_rng(seed)
    pool = ConnectionPool(dsn, min_size=1, max_size=1, open=True)
    with pool.connection() as conn:
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()
    pid = int(backend[0]) if backend else 0
    jobs = [
        (_job(uuid.UUID(u), history + k), _vectors(rng), _regions(rng))
        for k in range(per_user)
        for u in users
    ]
    write_s = []
    cpu, backend_cpu = time.process_time(), _backend_cpu_s(pid)
    started = time.perf_counter()
    for job, vectors, regions in jobs:
        seq = store.start_job(pool, job, f"bench-{job.session_id}")
        assert isinstance(seq, int)
        t = time.perf_counter()
        with store.analysis_write(pool, job, seq, MODEL) as write:
            result = pipeline.score_and_save(write, vectors, None, regions)
        write_s.append(time.perf_counter() - t)
        assert not isinstance(result, store.Superseded)
    backend_end = _backend_cpu_s(pid)
    out.put(
        {
            "n": len(jobs),
            "seconds": time.perf_counter() - started,
            "cpu_s": time.process_time() - cpu,
            "backend_cpu_s": None
            if backend_cpu is None or backend_end is None
            else backend_end - backend_cpu,
            "write_s": write_s,
        }
    )
    pool.close()


def measure(dsn: str, history: int, writers: int, per_writer: int) -> dict[str, Any]:
    """Sessions/s for ``writers`` processes, each appending to people with ``history``."""
    users_per_writer = 2
    per_user = max(1, per_writer // users_per_writer)
    users = [[str(uuid.uuid4()) for _ in range(users_per_writer)] for _ in range(writers)]
    for w, group in enumerate(users):
        for u, user in enumerate(group):
            prefill(dsn, uuid.UUID(user), history, seed=1000 * w + u)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_writer, args=(dsn, group, history, per_user, w, queue))
        for w, group in enumerate(users)
    ]
    started = time.perf_counter()
    for p in procs:
        p.start()
    results = [queue.get(timeout=1800) for _ in procs]
    wall = time.perf_counter() - started
    for p in procs:
        p.join()
    sessions = sum(r["n"] for r in results)
    writes = sorted(s for r in results for s in r["write_s"])
    # Wall time includes process start-up; the writers' own span is the fairer rate.
    span = max(r["seconds"] for r in results)
    backend = [r["backend_cpu_s"] for r in results]
    backend_ms = None if None in backend else 1000 * sum(backend) / sessions
    writer_ms = 1000 * sum(r["cpu_s"] for r in results) / sessions
    return {
        "history": history,
        "writers": writers,
        "sessions": sessions,
        "sessions_per_s": sessions / span,
        "images_per_s": 6 * sessions / span,
        "wall_s": wall,
        "writer_cpu_ms_per_session": writer_ms,
        # Postgres's backends for the writers (not its WAL writer or checkpointer).
        "backend_cpu_ms_per_session": backend_ms,
        # What the two together allow on every core of this machine, if nothing else ran.
        "cpu_bound_sessions_per_s": None
        if backend_ms is None
        else 1000 * (os.cpu_count() or 1) / (writer_ms + backend_ms),
        "write_p50_ms": 1000 * statistics.median(writes),
        "write_p95_ms": 1000 * writes[int(0.95 * (len(writes) - 1))],
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"store benchmark, {report['date']}, commit {report['commit']}, "
        f"{report['cpus']} CPUs, Postgres {report['postgres']}",
        "",
        "| history (sessions) | writers | sessions | sessions/s | images/s "
        "| write p50 (ms) | write p95 (ms) | CPU ms/session: writer + backend "
        "| sessions/s the CPU allows |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for r in report["runs"]:
        backend, bound = r.get("backend_cpu_ms_per_session"), r.get("cpu_bound_sessions_per_s")
        cpu = f"{r['writer_cpu_ms_per_session']:.1f} + " + (
            "-" if backend is None else f"{backend:.1f}"
        )
        lines.append(
            f"| {r['history']} | {r['writers']} | {r['sessions']} | {r['sessions_per_s']:.0f} "
            f"| {r['images_per_s']:.0f} | {r['write_p50_ms']:.1f} | {r['write_p95_ms']:.1f} "
            f"| {cpu} | {'-' if bound is None else f'{bound:.0f}'} |"
        )
    e2e = report.get("e2e")
    if e2e:
        lines += [
            "",
            f"Through a real worker ({e2e['jobs_each']} jobs each, medians): a person's first"
            f" session against a session appended to {e2e['history']} earlier ones:",
            "",
            "| | first session | appended to history | ratio |",
            "| --- | ---: | ---: | ---: |",
            f"| service time (s) | {e2e['first_service_s']:.3f} | {e2e['appended_service_s']:.3f}"
            f" | **{e2e['service_ratio']:.2f}x** |",
            f"| write stage (s) | {e2e['first_write_s']:.4f} | {e2e['appended_write_s']:.4f}"
            f" | {e2e['write_ratio']:.2f}x |",
        ]
    lines += ["", "Single writer, write transaction against history length:", ""]
    lines += ["| history | write p50 (ms) | vs history 0 |", "| ---: | ---: | ---: |"]
    base = report["by_history"][0]["write_p50_ms"]
    for r in report["by_history"]:
        lines.append(
            f"| {r['history']} | {r['write_p50_ms']:.1f} | {r['write_p50_ms'] / base:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for history in sorted({r["history"] for r in report["runs"]}):
        runs = [r for r in report["runs"] if r["history"] == history]
        left.plot(
            [r["writers"] for r in runs],
            [r["sessions_per_s"] for r in runs],
            marker="o",
            label=f"history {history}",
        )
    left.axhline(500, color="grey", linestyle="--", label="goal (4 writers, history 100)")
    left.set_xscale("log", base=2)
    left.set_xlabel("concurrent writers")
    left.set_ylabel("sessions/s written")
    left.legend()
    hist = report["by_history"]
    right.plot([max(r["history"], 1) for r in hist], [r["write_p50_ms"] for r in hist], marker="o")
    right.set_xscale("log")
    right.set_ylim(bottom=0)
    right.set_xlabel("earlier sessions of the person (0 plotted at 1)")
    right.set_ylabel("write transaction p50 (ms)")
    fig.suptitle(f"changewatch store, commit {report['commit']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
