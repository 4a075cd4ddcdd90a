"""``python -m bench.soak``: hundreds of sessions through real workers while the stack breaks.

A private stack (``scripts.faults.FaultStack``: Redis with an append-only file, a
throwaway Postgres cluster, moto's S3 server behind a TCP proxy, real Celery workers with
the shipped Celery settings) analyzes ``--sessions`` sessions of the real ``series``
photos. A producer thread sends them at a steady rate, retrying a send that fails, as a
client should. Every ``--fault-every`` seconds one fault is injected, in turn:

- ``kill_worker``: kill -9 of one worker; a supervisor starts a new one a second later
  and the workers' recovery sweep puts the killed worker's unacked jobs back in the queue
  (``recovered``: how long after the kill its last job finished);
- ``redis_restart`` / ``redis_crash``: SIGTERM (AOF flushed) or SIGKILL, 3 s down;
- ``postgres_restart`` / ``postgres_crash``: ``pg_ctl stop -m fast`` or ``-m immediate``
  (WAL recovery on start), 4 s down;
- ``s3_hang``: moto SIGSTOPped for 5 s (requests hang, then complete);
- ``s3_unreachable``: the proxy in front of S3 down for 5 s (connections refused/reset).

Afterwards it counts, from Postgres and the workers' logs:

- ``sent``: sessions the producer enqueued (``enqueue_errors``: sends that raised first);
- ``succeeded``, ``failed`` (with their error codes);
- ``duplicated``: sessions with more than one analyses row or a duplicated or missing
  embedding (impossible by the keys, counted anyway); ``sums_mismatched``: people whose
  running baseline sums are not exactly the sums of their stored embeddings;
- ``redelivered``: sessions started more than once (``attempts > 1``: retries and
  redeliveries); ``stored_more_than_once``: sessions whose analysis was written by more
  than one execution (from the workers' "analysis stored" log lines);
- ``resent_by_reaper``: sessions whose message the broker lost, found and re-sent by
  the reaper (``producer.reaper`` with its shipped defaults, every 30 s as compose runs it);
- ``lost``: sessions not finished by the deadline;
- ``mismatched``: sessions whose scores differ from an undisturbed in-order run (> 1e-6);
- ``orphans``: embeddings, analyses or comparisons whose session is gone.

Prints the JSON and writes it to ``--out`` (default ``artifacts/soak/soak.json``).
Exits 0 only when every sent session succeeded exactly once with the expected numbers.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gc
import json
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from bench.report import git_commit
from changewatch.producer import Producer, reaper
from changewatch.worker.store import decode_vector
from scripts.faults import (
    SERIES_PLAN,
    FaultStack,
    Job,
    audit,
    finished_count,
    have,
    kill9,
    paused,
    postgres_bindir,
    same_scores,
    scores,
    series_jobs,
    whereabouts,
)
from scripts.localstack import PHOTOS, ROOT, Worker

FAULTS = (
    "kill_worker",
    "redis_restart",
    "postgres_restart",
    "s3_hang",
    "s3_unreachable",
    "redis_crash",
    "postgres_crash",
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class Sender:
    """Sends jobs at ``rate`` per second from a thread; a failed send is retried."""

    producer: Producer
    jobs: list[Job]
    rate: float
    give_up_s: float = 300.0
    sent: list[uuid.UUID] = field(default_factory=list)
    not_sent: list[uuid.UUID] = field(default_factory=list)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    done: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        began = time.monotonic()
        for n, job in enumerate(self.jobs):
            time.sleep(max(0.0, began + n / self.rate - time.monotonic()))
            deadline = time.monotonic() + self.give_up_s
            delay = 0.2
            while True:
                try:
                    self.producer.analyze(job.user_id, job.session_id, job.captured_at, job.images)
                except Exception as exc:
                    self.errors[type(exc).__name__] += 1
                    if time.monotonic() > deadline:
                        self.not_sent.append(job.session_id)
                        break
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                self.sent.append(job.session_id)
                break
        self.done.set()


@dataclass
class Soak:
    stack: FaultStack
    workers: int
    concurrency: int
    restarts: int = 0
    # (due time, worker index) of workers a supervisor will start again
    pending: list[tuple[float, int]] = field(default_factory=list)
    slots: dict[int, Worker] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    # workers that exited without being killed by us (a supervisor restarts them)
    exits: list[dict[str, Any]] = field(default_factory=list)
    # per worker name: when it last answered a ping, and its longest silence while alive
    last_seen: dict[str, float] = field(default_factory=dict)
    silence: dict[str, float] = field(default_factory=dict)
    # sessions the reaper found without a message and sent again
    reaped: list[str] = field(default_factory=list)
    # per kill -9: when, and the sessions running at that moment
    kills: list[tuple[datetime, list[uuid.UUID]]] = field(default_factory=list)

    def start_workers(self) -> None:
        started = [self._start(i, wait=False) for i in range(self.workers)]
        for worker in started:
            worker.wait_ready(self.stack.app)

    def _start(self, slot: int, wait: bool) -> Worker:
        name = f"soak{slot}" + (f"r{self.restarts}" if self.restarts else "")
        worker = self.stack.start_worker(name, self.concurrency, wait=wait)
        self.slots[slot] = worker
        return worker

    def supervise(self) -> None:
        """Start the workers whose restart is due (the supervisor's restart delay), and
        notice a worker that exited on its own (restarted at once, like a supervisor)."""
        now = time.monotonic()
        for slot, worker in self.slots.items():
            if worker.process is not None and worker.process.poll() is not None:
                self.exits.append({"worker": worker.name, "rc": worker.process.returncode})
                log(f"worker {worker.name} exited on its own (rc {worker.process.returncode})")
                worker.process = None
                self.pending.append((now + 1.0, slot))
        for due, slot in [p for p in self.pending if p[0] <= now]:
            self.pending.remove((due, slot))
            self.restarts += 1
            self._start(slot, wait=False)
            log(f"supervisor: worker slot {slot} started again")

    def watch(self, stop: threading.Event, every: float = 2.0) -> None:
        """Ping the workers: a live process that stops answering has stopped consuming."""
        while not stop.wait(every):
            try:
                replies = self.stack.app.control.ping(timeout=1.0)
            except Exception:  # noqa: S112  # the broker may be the thing that is down
                continue
            now = time.monotonic()
            answered = {name.split("@")[0] for reply in replies for name in reply}
            for worker in list(self.slots.values()):
                alive = worker.process is not None and worker.process.poll() is None
                if worker.name in answered:
                    self.last_seen[worker.name] = now
                elif alive and worker.name in self.last_seen:
                    gap = now - self.last_seen[worker.name]
                    self.silence[worker.name] = max(self.silence.get(worker.name, 0.0), gap)

    def reap(self, producer: Producer, stop: threading.Event, every: float = 30.0) -> None:
        """The deployment's reaper, as compose's ``reaper`` service runs it."""
        while not stop.wait(every):
            try:
                done = reaper.reap(producer)
            except Exception:  # noqa: S112  # the broker or database may be down
                continue
            if done.sessions:
                log(f"reaper re-sent {done.sessions}")
            self.reaped += done.sessions

    def inject(self, fault: str, rng: random.Random) -> dict[str, Any]:
        stack = self.stack
        began = time.monotonic()
        detail = ""
        if fault == "kill_worker":
            alive = [s for s, w in self.slots.items() if w.process and w.process.poll() is None]
            slot = rng.choice(alive)
            worker = self.slots[slot]
            assert worker.process is not None
            detail = f"slot {slot} pid {worker.process.pid}"
            running = in_state(stack.database_url, "running")
            killed_at = datetime.now(UTC)
            kill9(worker.process)
            self.kills.append((killed_at, running))
            worker.process = None
            # A supervisor restarts it; the recovery sweep gives its jobs back.
            self.pending.append((time.monotonic() + 1.0, slot))
        elif fault == "redis_restart":
            stack.redis.restart(down_s=3.0)
        elif fault == "redis_crash":
            stack.redis.restart(down_s=3.0, hard=True)
        elif fault == "postgres_restart":
            stack.postgres.restart(down_s=4.0, mode="fast")
        elif fault == "postgres_crash":
            stack.postgres.restart(down_s=4.0, mode="immediate")
        elif fault == "s3_hang":
            assert stack.s3.process is not None
            with paused(stack.s3.process, 5.0):
                pass
        elif fault == "s3_unreachable":
            with stack.proxy.down(5.0):
                pass
        else:
            raise ValueError(fault)
        event = {"fault": fault, "detail": detail, "seconds": round(time.monotonic() - began, 2)}
        self.events.append(event)
        return event


def in_state(dsn: str, status: str) -> list[uuid.UUID]:
    with psycopg.connect(dsn, connect_timeout=3) as conn:
        return [
            r[0]
            for r in conn.execute("SELECT session_id FROM sessions WHERE status = %s", (status,))
        ]


def recovery_seconds(dsn: str, kills: list[tuple[datetime, list[uuid.UUID]]]) -> list[float]:
    """Per kill: seconds until the last session running at that moment finished (the
    killed worker's jobs, put back by the recovery sweep, are the slowest)."""
    out = []
    with psycopg.connect(dsn) as conn:
        for killed_at, running in kills:
            row = conn.execute(
                "SELECT max(finished_at) FROM sessions WHERE session_id = ANY(%s)", (running,)
            ).fetchone()
            if row and row[0]:
                out.append(round((row[0] - killed_at).total_seconds(), 1))
    return out


def embeddings(dsn: str, ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, np.ndarray]]:
    """Each session's stored angle embeddings."""
    out: dict[uuid.UUID, dict[str, np.ndarray]] = collections.defaultdict(dict)
    with psycopg.connect(dsn) as conn, conn.cursor(binary=True) as cur:
        cur.execute(
            "SELECT session_id, angle, embedding FROM angle_embeddings WHERE session_id = ANY(%s)",
            (ids,),
        )
        for sid, angle, vector in cur:
            out[sid][angle] = decode_vector(vector)
    return out


def rescore(dsn: str, user: uuid.UUID) -> dict[uuid.UUID, list[Any]]:
    """The user's analyses recomputed now from the stored embeddings (as a write would)."""
    from changewatch.worker.store import history_scores

    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT a.model_id FROM analyses a JOIN sessions s USING (session_id)"
            " WHERE s.user_id = %s LIMIT 1",
            (user,),
        ).fetchone()
        if row is None:
            return {}
        analyses = history_scores(conn, user, row[0])
    return {
        a.session_id: [a.change_score, [p["change_score"] for p in a.per_angle]] for a in analyses
    }


def history_rows(dsn: str, user: uuid.UUID) -> list[dict[str, Any]]:
    """The user's sessions as stored: job state, analysis and when it was computed."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            """
            SELECT s.session_id, s.captured_at, s.status, s.attempts, s.started_at,
                   s.finished_at, a.change_score, a.baseline_session_count, a.per_angle,
                   a.computed_at,
                   (SELECT count(*) FROM angle_embeddings e WHERE e.session_id = s.session_id)
              FROM sessions s LEFT JOIN analyses a USING (session_id)
             WHERE s.user_id = %s ORDER BY s.captured_at
            """,
            (user,),
        ).fetchall()
    keys = ("session_id", "captured_at", "status", "attempts", "started_at", "finished_at",
            "change_score", "baseline", "per_angle", "computed_at", "angles")  # fmt: skip
    return [
        {
            k: v if isinstance(v, (int, float, list)) else str(v)
            for k, v in zip(keys, r, strict=True)
        }
        for r in rows
    ]


def stored_counts(logs: list[Path]) -> collections.Counter[str]:
    """How many executions wrote each session's analysis, from the workers' JSON logs."""
    counts: collections.Counter[str] = collections.Counter()
    for path in logs:
        for line in path.read_text(errors="replace").splitlines():
            if '"analysis stored"' not in line:
                continue
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if record.get("message") == "analysis stored":
                    counts[record["session_id"]] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=2, help="sessions per worker")
    parser.add_argument("--rate", type=float, default=3.0, help="sessions sent per second")
    parser.add_argument("--fault-every", type=float, default=8.0, help="seconds between faults")
    # A job may retry for up to 6 minutes (eight retries) while the faults go on.
    parser.add_argument("--deadline", type=float, default=600.0, help="seconds after the last send")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "soak" / "soak.json")
    args = parser.parse_args(argv)

    if not (PHOTOS / "series").is_dir():
        sys.exit(f"no series photos under {PHOTOS}; set CHANGEWATCH_PHOTOS")
    if not have("redis-server") or postgres_bindir() is None:
        sys.exit("needs redis-server and the PostgreSQL server binaries (initdb, pg_ctl)")
    # A SIGTERM (a CI timeout, kill) still runs the finally below: no cluster left behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rng = random.Random(args.seed)  # noqa: S311  # a reproducible fault order, not a secret
    root = Path(tempfile.mkdtemp(prefix="changewatch-soak-"))
    stack = FaultStack(root)
    began = time.monotonic()
    try:
        stack.start()
        producer = Producer(dsn=stack.database_url, celery=stack.app)
        soak = Soak(stack, args.workers, args.concurrency)
        soak.start_workers()
        log(f"stack up in {root}; {args.workers} workers ready")

        # The yardstick: one user's history, in order, one at a time, nothing broken.
        client = stack.s3_client()
        reference_ids = []
        for job in series_jobs(client, PHOTOS, uuid.uuid4()):
            producer.analyze(job.user_id, job.session_id, job.captured_at, job.images)
            producer.wait(job.session_id, timeout=120)
            reference_ids.append(job.session_id)
        reference = scores(stack.database_url, reference_ids)

        jobs: list[Job] = []
        while len(jobs) < args.sessions:
            count = min(len(SERIES_PLAN), args.sessions - len(jobs))
            jobs += series_jobs(client, PHOTOS, uuid.uuid4(), count)
        rng.shuffle(jobs)
        log(f"{len(jobs)} sessions uploaded; sending {args.rate:g}/s, a fault every "
            f"{args.fault_every:g}s")  # fmt: skip

        watching = threading.Event()
        threading.Thread(target=soak.watch, args=(watching,), daemon=True).start()
        threading.Thread(target=soak.reap, args=(producer, watching), daemon=True).start()
        sender = Sender(producer, jobs, args.rate)
        thread = threading.Thread(target=sender.run, name="sender", daemon=True)
        run_began = time.monotonic()
        thread.start()
        ids = [job.session_id for job in jobs]
        next_fault = time.monotonic() + args.fault_every
        next_report = time.monotonic() + 5
        faults_done = 0
        deadline = None
        counts: dict[str, int] = {}
        while True:
            soak.supervise()
            now = time.monotonic()
            if sender.done.is_set() and deadline is None:
                deadline = now + args.deadline
                log(f"all sent ({len(sender.sent)}); waiting up to {args.deadline:g}s")
            with contextlib.suppress(psycopg.Error):
                counts = finished_count(stack.database_url, ids)
            finished = counts.get("succeeded", 0) + counts.get("failed", 0)
            if sender.done.is_set() and finished >= len(sender.sent) and not soak.pending:
                break
            if deadline is not None and now > deadline:
                log("deadline passed")
                break
            if now >= next_report:
                log(f"progress {counts}")
                next_report = now + 5
            # Faults only while work is in flight, so every one of them hits something.
            if now >= next_fault and finished < len(jobs):
                fault = FAULTS[faults_done % len(FAULTS)]
                event = soak.inject(fault, rng)
                faults_done += 1
                log(f"fault {fault} {event['detail']} ({event['seconds']}s) with {counts}")
                next_fault = time.monotonic() + args.fault_every
            time.sleep(0.2)
        wall = time.monotonic() - run_began
        watching.set()

        sent = list(sender.sent)
        expected = {job.session_id: len(job.images) for job in jobs if job.session_id in sent}
        report = audit(stack.database_url, expected)
        with psycopg.connect(stack.database_url) as conn:
            codes = dict(
                conn.execute(
                    "SELECT error_code, count(*) FROM sessions WHERE session_id = ANY(%s)"
                    " AND status = 'failed' GROUP BY error_code",
                    (sent,),
                ).fetchall()
            )
            analyses_rows = dict(
                conn.execute(
                    "SELECT session_id, count(*) FROM analyses WHERE session_id = ANY(%s)"
                    " GROUP BY session_id",
                    (sent,),
                ).fetchall()
            )
        by_user: dict[uuid.UUID, list[Job]] = collections.defaultdict(list)
        for job in jobs:
            by_user[job.user_id].append(job)
        stored = stored_counts(sorted(root.glob("worker-*.log")))
        reference_vectors = embeddings(stack.database_url, reference_ids)
        mismatches: list[dict[str, Any]] = []
        max_score_diff = max_embedding_diff = 0.0
        for history in by_user.values():
            history.sort(key=lambda j: j.index)
            done = [j for j in history if j.session_id in analyses_rows]
            if len(done) != len(history):
                continue  # an unfinished history cannot match; counted as lost/failed
            got = scores(stack.database_url, [j.session_id for j in history])
            vectors = embeddings(stack.database_url, [j.session_id for j in history])
            for job, (a, na, pa) in zip(history, got, strict=True):
                b, nb, pb = reference[job.index]
                diff = max([abs(a - b)] + [abs(pa[k] - pb.get(k, float("inf"))) for k in pa])
                # The same photos were embedded in other micro-batches than the reference's.
                mine, theirs = vectors[job.session_id], reference_vectors[reference_ids[job.index]]
                emb = max(float(np.abs(mine[k] - theirs[k]).max()) for k in mine)
                max_score_diff = max(max_score_diff, diff)
                max_embedding_diff = max(max_embedding_diff, emb)
                if not same_scores((a, na, pa), (b, nb, pb)):
                    mismatches.append(
                        {
                            "session_id": str(job.session_id),
                            "user_id": str(job.user_id),
                            "index": job.index,
                            "score_diff": diff,
                            "baseline_counts": [na, nb],
                            "max_embedding_diff": emb,
                            "stored": stored.get(str(job.session_id), 0),
                            "got": [a, pa],
                            "reference": [b, pb],
                            "rescored_now": rescore(stack.database_url, job.user_id)[
                                job.session_id
                            ],
                            "history": history_rows(stack.database_url, job.user_id),
                        }
                    )
        result = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": git_commit(),
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "sent": len(sent),
            "not_sent": len(sender.not_sent),
            "enqueue_errors": dict(sender.errors),
            "succeeded": report.status.get("succeeded", 0),
            "failed": report.status.get("failed", 0),
            "failed_codes": {str(k): v for k, v in codes.items()},
            "duplicated": report.duplicated,
            # people whose running baseline sums differ from their stored embeddings
            "sums_mismatched": report.bad_sums,
            "per_angle_out_of_order": report.unordered,
            "redelivered": report.redelivered,
            "stored_more_than_once": sum(1 for sid in sent if stored.get(str(sid), 0) > 1),
            "resent_by_reaper": len(soak.reaped),
            # per worker kill: seconds until every job running at the kill had finished
            "recovery_after_kill_s": recovery_seconds(stack.database_url, soak.kills),
            "lost": len(report.unfinished) + report.missing,
            "lost_sessions": whereabouts(stack.database_url, stack.redis.client(), sent)[:20],
            "mismatched": len(mismatches),
            "mismatches": mismatches[:10],
            "max_score_diff": max_score_diff,
            "max_embedding_diff": max_embedding_diff,
            "orphans": report.orphans,
            "faults": soak.events,
            "worker_restarts": soak.restarts,
            "worker_exits": soak.exits,
            # the longest time a live worker process did not answer a ping (a stalled
            # consumer); short gaps come with the Redis faults themselves
            "worker_max_silence_s": {k: round(v, 1) for k, v in sorted(soak.silence.items())},
            "wall_s": round(wall, 1),
            "sessions_per_s": round(len(sent) / wall, 2) if wall else 0.0,
            "total_s": round(time.monotonic() - began, 1),
        }
        ok = (
            result["succeeded"] == len(jobs) == len(sent)
            and result["duplicated"] == 0
            and result["sums_mismatched"] == 0
            and result["lost"] == 0
            and result["mismatched"] == 0
            and report.unordered == 0
            and not any(report.orphans.values())
        )
        result["ok"] = ok
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
        return 0 if ok else 1
    finally:
        # The producer's discarded AsyncResults unsubscribe from the result backend when
        # collected: let that happen while Redis is still up, not at interpreter exit.
        gc.collect()
        stack.close()
        logs = args.out.parent / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for old in logs.glob("worker-*.log"):  # this run's logs only
            old.unlink()
        for path in root.glob("worker-*.log"):
            (logs / path.name).write_bytes(path.read_bytes())
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
