"""A private Redis whose queue survives a restart, to stop, crash and start again."""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bench.harness import process
from bench.harness.process import free_port


@dataclass
class RedisServer:
    """A private ``redis-server`` on a free loopback port, with an append-only file.

    ``appendonly yes`` keeps every acknowledged write (the queue, the unacked hash of
    late-acked jobs) across a restart; ``save ""`` turns RDB snapshots off so the AOF is
    the only persistence, as in a broker deployment that must not lose jobs.
    """

    dir: Path
    port: int = field(default_factory=free_port)
    binary: str = "redis-server"
    extra: tuple[str, ...] = ()  # more arguments, e.g. ("--replicaof", host, port)
    process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis.from_url(self.url(db), socket_timeout=5)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 30.0) -> RedisServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process = process.start(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.dir),
                "--appendonly", "yes",
                "--appendfsync", "everysec",
                "--save", "",
                "--daemonize", "no",
                "--protected-mode", "no",
                *self.extra,
            ],
            log=self.dir / "redis.log",
        )  # fmt: skip
        process.wait_until(
            self._answers,
            timeout,
            f"redis-server on {self.port} not ready after {timeout}s",
            self.process,
            exited="redis-server exited with {code}",
            interval=0.05,
        )
        return self

    def _answers(self) -> bool:
        try:
            # LOADING (AOF replay) answers PING with an error: wait until it is done.
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def stop(self, hard: bool = False) -> None:
        """SIGTERM: Redis flushes the AOF and exits; ``hard``: SIGKILL, a crash."""
        process.stop(self.process, 30, signal.SIGKILL if hard else signal.SIGTERM)
        self.process = None

    def restart(self, down_s: float = 3.0, hard: bool = False) -> float:
        """Down for ``down_s`` seconds, then up on the same port; returns the outage in s."""
        began = time.monotonic()
        self.stop(hard=hard)
        time.sleep(down_s)
        self.start()
        return time.monotonic() - began
