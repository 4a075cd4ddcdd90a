"""``python -m bench.notify_soak``: notifications survive broker restarts, once each, in order.

A private stack (Redis with an append-only file, Postgres, S3, real workers with
``CHANGEWATCH_NOTIFY_QUEUE`` set) takes ``--sessions`` sessions, one in ``--resend``
analyzed a second time (a newer request for the same session), while Redis is restarted
``--restarts`` times (SIGTERM, down ``--down`` s). Then it reads every notification in
the queue and checks, against ``analysis_requests`` (every request the store numbered):

- after deduplication by ``notification_id``, every request has exactly one notification,
  and no notification names a request that does not exist;
- each session's notifications are in request order (``seq``);
- each session's last notification says what ``sessions.status`` says;
- the outbox is empty.

It prints (and writes) a JSON report; exit status 0 when every check holds.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import psycopg

from bench.harness.faults.series import SERIES_PLAN, Job, series_jobs
from bench.harness.faults.stack import FaultStack
from bench.harness.services import PHOTOS, ROOT, Worker
from changewatch.producer import Producer
from changewatch.schema.broker import Message

QUEUE = "soak.notify"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.notify_soak", description=__doc__)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rate", type=float, default=4.0, help="sessions sent per second")
    parser.add_argument("--resend", type=int, default=10, help="one session in N sent twice")
    parser.add_argument("--restarts", type=int, default=2)
    parser.add_argument("--down", type=float, default=3.0, help="seconds Redis stays down")
    parser.add_argument("--deadline", type=float, default=900.0)
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "notify-soak.json")
    return parser.parse_args(argv)


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def start_worker(stack: FaultStack, name: str) -> Worker:
    env = {**stack.worker_env(2), "CHANGEWATCH_NOTIFY_QUEUE": QUEUE}
    worker = Worker(env=env, name=name, log_path=stack.root / f"worker-{name}.log").start()
    stack.workers.append(worker)  # stopped by stack.close()
    return worker


def send(producer: Producer, jobs: list[Job], args: argparse.Namespace, rng: random.Random) -> None:
    """Every session at ``rate``, some twice; a send the broker refuses is sent again
    (a new request: the one that failed to enqueue is told ``superseded`` by its ending)."""
    for job in jobs:
        times = 2 if rng.randrange(args.resend) == 0 else 1
        for _ in range(times):
            while True:
                try:
                    producer.analyze(job.user_id, job.session_id, job.captured_at, job.images)
                    break
                except Exception as exc:  # the broker is down: try again shortly
                    log(f"send refused ({type(exc).__name__}); again in 1 s")
                    time.sleep(1)
        time.sleep(1 / args.rate)


def supervise(stack: FaultStack, workers: list[Worker]) -> None:
    """A worker may exit when Redis goes away (kombu): start another, as a supervisor does."""
    for i, worker in enumerate(workers):
        if worker.process is not None and worker.process.poll() is not None:
            log(f"worker {worker.name} exited (rc {worker.process.returncode}); starting another")
            workers[i] = start_worker(stack, f"{worker.name}r")


def finished(dsn: str, sessions: list[uuid.UUID]) -> tuple[int, int]:
    with psycopg.connect(dsn) as conn:
        done = conn.execute(
            "SELECT count(*) FROM sessions WHERE session_id = ANY(%s)"
            " AND status IN ('succeeded', 'failed')",
            (sessions,),
        ).fetchone()
        owed = conn.execute("SELECT count(*) FROM outbox").fetchone()
    return int(done[0]) if done else 0, int(owed[0]) if owed else 0


def check(stack: FaultStack, sessions: list[uuid.UUID]) -> dict[str, Any]:
    """The notifications in the queue, against every request the store numbered."""
    raw = stack.redis.client(0).lrange(QUEUE, 0, -1)
    received = [Message.parse(r).kwargs for r in reversed(raw)]  # LPUSH: newest first
    unique: dict[str, dict[str, Any]] = {}
    for n in received:
        unique.setdefault(n["notification_id"], n)
    with psycopg.connect(stack.database_url) as conn:
        requests = conn.execute(
            "SELECT r.session_id::text, r.task_id, r.seq FROM analysis_requests r"
            " WHERE r.session_id = ANY(%s)",
            (sessions,),
        ).fetchall()
        status = dict(
            conn.execute(
                "SELECT session_id::text, status FROM sessions WHERE session_id = ANY(%s)",
                (sessions,),
            ).fetchall()
        )
        outbox = conn.execute("SELECT count(*) FROM outbox").fetchone()
    seq = {task: s for _, task, s in requests}
    told: dict[str, int] = defaultdict(int)
    by_session: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for n in unique.values():
        told[n["request_task_id"]] += 1
        by_session[n["session_id"]].append(n)
    out_of_order = [
        s for s, ns in by_session.items() if [seq.get(n["request_task_id"]) for n in ns]
        != sorted(seq.get(n["request_task_id"], -1) for n in ns)
    ]  # fmt: skip
    last_wrong = [s for s, ns in by_session.items() if ns[-1]["status"] != status.get(s)]
    return {
        "requests": len(requests),
        "notifications_received": len(received),
        "duplicates_removed": len(received) - len(unique),
        "statuses": dict(Counter(n["status"] for n in unique.values())),
        "requests_told_once": sum(1 for _, t, _ in requests if told.get(t) == 1),
        "requests_never_told": [t for _, t, _ in requests if t not in told],
        "requests_told_twice": [t for t, c in told.items() if c > 1],
        "told_unknown_requests": [t for t in told if t not in seq],
        "sessions_out_of_order": out_of_order,
        "sessions_whose_last_says_otherwise": last_wrong,
        "outbox_rows_left": int(outbox[0]) if outbox else -1,
    }


def passed(report: dict[str, Any]) -> bool:
    return (
        report["requests_told_once"] == report["requests"]
        and not report["requests_never_told"]
        and not report["requests_told_twice"]
        and not report["told_unknown_requests"]
        and not report["sessions_out_of_order"]
        and not report["sessions_whose_last_says_otherwise"]
        and report["outbox_rows_left"] == 0
    )


def make_jobs(stack: FaultStack, count: int, rng: random.Random) -> list[Job]:
    client, jobs = stack.s3_client(), []
    while len(jobs) < count:
        jobs += series_jobs(client, PHOTOS, uuid.uuid4(), min(len(SERIES_PLAN), count - len(jobs)))
    rng.shuffle(jobs)
    return jobs


def run(stack: FaultStack, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(0)  # noqa: S311  # a reproducible schedule, not a secret
    producer = Producer(dsn=stack.database_url, celery=stack.app)
    workers = [start_worker(stack, f"n{i}") for i in range(args.workers)]
    for w in workers:
        w.wait_ready(stack.app)
    jobs = make_jobs(stack, args.sessions, rng)
    for user in {j.user_id for j in jobs}:
        producer.enroll(user)
    sessions = [j.session_id for j in jobs]
    sender = threading.Thread(target=send, args=(producer, jobs, args, rng), daemon=True)
    started = time.monotonic()
    sender.start()
    send_s = args.sessions / args.rate
    restarts = [send_s * (i + 1) / (args.restarts + 1) for i in range(args.restarts)]
    outages = []
    while time.monotonic() - started < send_s + args.deadline:
        supervise(stack, workers)
        if restarts and time.monotonic() - started >= restarts[0]:
            restarts.pop(0)
            outages.append(round(stack.redis.restart(down_s=args.down), 2))
            log(f"Redis restarted (down {outages[-1]} s)")
        done, owed = finished(stack.database_url, sessions)
        if not sender.is_alive() and not restarts and done == len(sessions) and owed == 0:
            break
        time.sleep(1)
    log(f"finished {done} of {len(sessions)} sessions; reading the notifications")
    time.sleep(2)
    report = {"sessions": len(sessions), "finished": done, "redis_outages_s": outages}
    report |= check(stack, sessions)
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="notify-soak-") as root:
        stack = FaultStack(Path(root)).start()
        try:
            report = run(stack, args)
        finally:
            stack.close()
    report["passed"] = passed(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
