"""The soak's moving parts: a producer that keeps sending, workers that die and come back,
and the faults injected in turn while they run."""

from __future__ import annotations

import collections
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bench.harness.faults.audit import committed_lost, succeeded_attempts
from bench.harness.faults.patroni import PatroniCluster
from bench.harness.faults.postgres_cluster import PostgresCluster
from bench.harness.faults.sentinel import SentinelCluster
from bench.harness.faults.series import Job
from bench.harness.faults.stack import FaultStack
from bench.harness.faults.workers import kill9, paused
from bench.harness.services import Worker
from bench.soak.readout import in_state, restarted_after
from changewatch.producer import Producer, reaper

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
    # per database primary SIGKILL (--database patroni): the promotion, and the sessions
    # succeeded before it that the new primary no longer has as succeeded
    failovers: list[dict[str, Any]] = field(default_factory=list)

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
        elif fault == "primary_kill":  # --broker sentinel: a sentinel promotes the replica
            assert isinstance(stack.redis, SentinelCluster)
            detail = f"promoted after {stack.redis.kill_primary():.1f}s"
        elif fault in ("pg_primary_kill", "pg_node_kill"):  # --database patroni
            detail = self._db_failover("postgres" if fault == "pg_primary_kill" else "node")
        elif fault == "redis_restart":
            stack.redis.restart(down_s=3.0)
        elif fault == "redis_crash":
            stack.redis.restart(down_s=3.0, hard=True)
        elif fault in ("postgres_restart", "postgres_crash"):
            assert isinstance(stack.postgres, PostgresCluster), "one cluster only"
            mode = "fast" if fault == "postgres_restart" else "immediate"
            stack.postgres.restart(down_s=4.0, mode=mode)
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

    def _db_failover(self, kind: str) -> str:
        """SIGKILL the database primary (``postgres``: its postmaster; ``node``: Patroni
        too) and wait until Patroni promoted the sync standby and the old one rejoined.

        What the old primary showed as succeeded just before must still be succeeded on
        the new one (or run again): a commit the sync standby had not confirmed was never
        visible.
        """
        cluster = self.stack.postgres
        assert isinstance(cluster, PatroniCluster), "pg_*_kill needs --database patroni"
        dsn = self.stack.database_url
        committed = succeeded_attempts(dsn)
        killed_at = datetime.now(UTC)
        times = cluster.kill_primary(kind)
        self.failovers.append(
            {
                "kind": kind,
                "killed_at": killed_at,
                **times,
                "committed": len(committed),
                "committed_lost": len(committed_lost(dsn, committed)),
            }
        )
        return f"{kind}: promoted after {times['promoted']}s, standby again {times['healthy']}s"

    def failover_report(self) -> list[dict[str, Any]]:
        """Per failover, with ``back_s``: seconds from the kill until the first job started
        after it had finished (the database serving jobs again)."""
        out = []
        for failover in self.failovers:
            killed_at = failover["killed_at"]
            out.append(
                {
                    **{k: v for k, v in failover.items() if k != "killed_at"},
                    "killed_at": killed_at.isoformat(timespec="seconds"),
                    "back_s": restarted_after(self.stack.database_url, killed_at),
                }
            )
        return out
