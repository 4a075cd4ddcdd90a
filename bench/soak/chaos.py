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

from bench.harness.faults.sentinel import SentinelCluster
from bench.harness.faults.series import Job
from bench.harness.faults.stack import FaultStack
from bench.harness.faults.workers import kill9, paused
from bench.harness.services import Worker
from bench.soak.readout import in_state
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
