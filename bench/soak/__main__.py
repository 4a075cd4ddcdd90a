"""``python -m bench.soak`` (see the package's docstring): the run, step by step.

``chaos`` holds the sender, the supervisor and the faults; ``readout`` what is read back.
"""

from __future__ import annotations

import argparse
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

import psycopg

import bench.soak
from bench.harness.faults.audit import Audit, Scores, audit, finished_count, scores, whereabouts
from bench.harness.faults.patroni import patroni_available
from bench.harness.faults.postgres_cluster import postgres_bindir
from bench.harness.faults.series import SERIES_PLAN, Job, series_jobs
from bench.harness.faults.stack import FaultStack
from bench.harness.process import have
from bench.harness.services import PHOTOS, ROOT
from bench.report import git_commit
from bench.soak.chaos import FAULTS, Sender, Soak, log
from bench.soak.readout import Comparison, codes_and_analyses, recovery_seconds, stored_counts
from changewatch.producer import Producer


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=bench.soak.__doc__)
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=2, help="sessions per worker")
    parser.add_argument("--rate", type=float, default=3.0, help="sessions sent per second")
    parser.add_argument("--fault-every", type=float, default=8.0, help="seconds between faults")
    # A job may retry for up to 6 minutes (eight retries) while the faults go on.
    parser.add_argument("--deadline", type=float, default=600.0, help="seconds after the last send")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--broker",
        choices=("redis", "sentinel", "amqp"),
        default="redis",
        help="one Redis; Sentinel (primary, replica, 3 sentinels); a RabbitMQ vhost",
    )
    parser.add_argument(
        "--database",
        choices=("postgres", "patroni"),
        default="postgres",
        help="one throwaway cluster; Patroni (one etcd, two nodes, synchronous replication)",
    )
    parser.add_argument(
        "--max-faults", type=int, default=0, help="stop injecting after this many (0: never)"
    )
    parser.add_argument(
        "--faults",
        type=lambda s: tuple(f for f in s.split(",") if f),
        default=FAULTS,
        help="comma-separated, injected in turn (primary_kill: Sentinel failover; "
        "pg_primary_kill, pg_node_kill: Patroni failover)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "soak" / "soak.json")
    return parser.parse_args(argv)


def check_prerequisites(args: argparse.Namespace) -> None:
    if not (PHOTOS / "series").is_dir():
        sys.exit(f"no series photos under {PHOTOS}; set CHANGEWATCH_PHOTOS")
    if not have("redis-server") or postgres_bindir() is None:
        sys.exit("needs redis-server and the PostgreSQL server binaries (initdb, pg_ctl)")
    if args.database == "patroni" and (missing := patroni_available()):
        sys.exit(missing)


def run_reference(
    stack: FaultStack, producer: Producer, client: Any
) -> tuple[list[uuid.UUID], list[Scores]]:
    """The yardstick: one user's history, in order, one at a time, nothing broken."""
    ids = []
    for job in series_jobs(client, PHOTOS, uuid.uuid4()):
        producer.analyze(job.user_id, job.session_id, job.captured_at, job.images)
        producer.wait(job.session_id, timeout=120)
        ids.append(job.session_id)
    return ids, scores(stack.database_url, ids)


def make_jobs(client: Any, sessions: int, rng: random.Random) -> list[Job]:
    """``sessions`` sessions of as many users as it takes, uploaded, in shuffled order."""
    jobs: list[Job] = []
    while len(jobs) < sessions:
        count = min(len(SERIES_PLAN), sessions - len(jobs))
        jobs += series_jobs(client, PHOTOS, uuid.uuid4(), count)
    rng.shuffle(jobs)
    return jobs


@dataclass
class Loop:
    """The main loop's state: supervise, count, report, and inject the next fault."""

    soak: Soak
    sender: Sender
    ids: list[uuid.UUID]
    args: argparse.Namespace
    rng: random.Random
    next_fault: float
    next_report: float
    faults_done: int = 0
    deadline: float | None = None
    counts: dict[str, int] = field(default_factory=dict)

    def done(self) -> bool:
        """One turn; True when every sent session finished or the deadline passed."""
        self.soak.supervise()
        now = time.monotonic()
        sender = self.sender
        if sender.done.is_set() and self.deadline is None:
            self.deadline = now + self.args.deadline
            log(f"all sent ({len(sender.sent)}); waiting up to {self.args.deadline:g}s")
        with contextlib.suppress(psycopg.Error):
            self.counts = finished_count(self.soak.stack.database_url, self.ids)
        finished = self.counts.get("succeeded", 0) + self.counts.get("failed", 0)
        if sender.done.is_set() and finished >= len(sender.sent) and not self.soak.pending:
            return True
        if self.deadline is not None and now > self.deadline:
            log("deadline passed")
            return True
        if now >= self.next_report:
            log(f"progress {self.counts}")
            self.next_report = now + 5
        # Faults only while work is in flight, so every one of them hits something.
        room = not self.args.max_faults or self.faults_done < self.args.max_faults
        if now >= self.next_fault and finished < len(self.ids) and room:
            self.inject()
        return False

    def inject(self) -> None:
        faults = self.args.faults
        fault = faults[self.faults_done % len(faults)]
        event = self.soak.inject(fault, self.rng)
        self.faults_done += 1
        log(f"fault {fault} {event['detail']} ({event['seconds']}s) with {self.counts}")
        self.next_fault = time.monotonic() + self.args.fault_every


def drive(
    soak: Soak, producer: Producer, jobs: list[Job], args: argparse.Namespace, rng: random.Random
) -> tuple[Sender, float]:
    """Send every job while the faults go on; the sender and the run's wall time."""
    watching = threading.Event()
    threading.Thread(target=soak.watch, args=(watching,), daemon=True).start()
    threading.Thread(target=soak.reap, args=(producer, watching), daemon=True).start()
    sender = Sender(producer, jobs, args.rate)
    thread = threading.Thread(target=sender.run, name="sender", daemon=True)
    run_began = time.monotonic()
    thread.start()
    ids = [job.session_id for job in jobs]
    now = time.monotonic()
    loop = Loop(
        soak, sender, ids, args, rng, next_fault=now + args.fault_every, next_report=now + 5
    )
    while not loop.done():
        time.sleep(0.2)
    wall = time.monotonic() - run_began
    watching.set()
    return sender, wall


def _sending(args: argparse.Namespace, sender: Sender, sent: list[uuid.UUID]) -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "sent": len(sent),
        "not_sent": len(sender.not_sent),
        "enqueue_errors": dict(sender.errors),
    }


def _outcomes(
    report: Audit, codes: dict[Any, int], stored: dict[str, int], sent: list[uuid.UUID]
) -> dict[str, Any]:
    return {
        "succeeded": report.status.get("succeeded", 0),
        "failed": report.status.get("failed", 0),
        "failed_codes": {str(k): v for k, v in codes.items()},
        "duplicated": report.duplicated,
        # people whose running baseline sums differ from their stored embeddings
        "sums_mismatched": report.bad_sums,
        "per_angle_out_of_order": report.unordered,
        "redelivered": report.redelivered,
        "stored_more_than_once": sum(1 for sid in sent if stored.get(str(sid), 0) > 1),
    }


def _recovery(soak: Soak, report: Audit, sent: list[uuid.UUID]) -> dict[str, Any]:
    stack = soak.stack
    return {
        "resent_by_reaper": len(soak.reaped),
        # per worker kill: seconds until every job running at the kill had finished
        "recovery_after_kill_s": recovery_seconds(stack.database_url, soak.kills),
        "lost": len(report.unfinished) + report.missing,
        "lost_sessions": whereabouts(stack.database_url, stack.redis.client(), sent)[:20],
        # per database failover (--database patroni): promotion, rejoin, committed_lost
        "db_failovers": soak.failover_report(),
    }


def _stack_facts(soak: Soak, sent: list[uuid.UUID], wall: float, began: float) -> dict[str, Any]:
    return {
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


def outcome(
    args: argparse.Namespace,
    soak: Soak,
    sender: Sender,
    jobs: list[Job],
    reference: tuple[list[uuid.UUID], list[Scores]],
    times: tuple[float, float],
) -> dict[str, Any]:
    """The run's JSON: what Postgres and the logs say; ``times``: (wall, began)."""
    dsn = soak.stack.database_url
    sent = list(sender.sent)
    expected = {job.session_id: len(job.images) for job in jobs if job.session_id in sent}
    report = audit(dsn, expected)
    codes, analysed = codes_and_analyses(dsn, sent)
    stored = stored_counts(sorted(soak.stack.root.glob("worker-*.log")))
    compared = Comparison.of(dsn, jobs, analysed, reference, stored)
    result = {
        **_sending(args, sender, sent),
        **_outcomes(report, codes, stored, sent),
        **_recovery(soak, report, sent),
        "mismatched": len(compared.mismatches),
        "mismatches": compared.mismatches[:10],
        "max_score_diff": compared.max_score_diff,
        "max_embedding_diff": compared.max_embedding_diff,
        "orphans": report.orphans,
        **_stack_facts(soak, sent, *times),
    }
    result["ok"] = (
        result["succeeded"] == len(jobs) == len(sent)
        and result["duplicated"] == 0
        and result["sums_mismatched"] == 0
        and result["lost"] == 0
        and result["mismatched"] == 0
        and report.unordered == 0
        and not any(report.orphans.values())
        and all(f["committed_lost"] == 0 for f in result["db_failovers"])
        # issue 23: jobs complete again within 45 s of each database primary's kill
        and all((f["back_s"] or 1e9) <= 45 for f in result["db_failovers"])
    )
    return result


def keep_logs(root: Path, out: Path) -> None:
    """This run's worker logs beside the JSON (``logs/``), the earlier run's removed."""
    logs = out.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for old in logs.glob("worker-*.log"):  # this run's logs only
        old.unlink()
    for path in root.glob("worker-*.log"):
        (logs / path.name).write_bytes(path.read_bytes())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_prerequisites(args)
    # A SIGTERM (a CI timeout, kill) still runs the finally below: no cluster left behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rng = random.Random(args.seed)  # noqa: S311  # a reproducible fault order, not a secret
    root = Path(tempfile.mkdtemp(prefix="changewatch-soak-"))
    stack = FaultStack(root, broker=args.broker, database=args.database)
    began = time.monotonic()
    try:
        stack.start()
        producer = Producer(dsn=stack.database_url, celery=stack.app)
        soak = Soak(stack, args.workers, args.concurrency)
        soak.start_workers()
        log(f"stack up in {root}; {args.workers} workers ready")
        client = stack.s3_client()
        reference = run_reference(stack, producer, client)
        jobs = make_jobs(client, args.sessions, rng)
        log(f"{len(jobs)} sessions uploaded; sending {args.rate:g}/s, a fault every "
            f"{args.fault_every:g}s")  # fmt: skip
        sender, wall = drive(soak, producer, jobs, args, rng)
        result = outcome(args, soak, sender, jobs, reference, (wall, began))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
        return 0 if result["ok"] else 1
    finally:
        # The producer's discarded AsyncResults unsubscribe from the result backend when
        # collected: let that happen while Redis is still up, not at interpreter exit.
        gc.collect()
        stack.close()
        keep_logs(root, args.out)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
