"""A local changewatch stack for the tests, the demo and the benchmarks.

Real parts only: the machine's Redis and Postgres, moto's S3 server over HTTP (no
MinIO binary installs here), and real ``celery -A changewatch.worker worker`` processes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = Path(os.environ.get("CHANGEWATCH_PHOTOS", ROOT.parent / "shared" / "photos"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@dataclass
class S3Server:
    """moto's standalone S3-compatible server on a free loopback port."""

    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ACCESS_KEY_ID": "changewatch-test",
            "AWS_SECRET_ACCESS_KEY": "changewatch-test-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def start(self) -> S3Server:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


def admin_url(database_url: str) -> str:
    return psycopg.conninfo.make_conninfo(database_url, dbname="postgres")


def recreate_database(database_url: str) -> None:
    """Drop and create the database named in the URL (tests and demo own theirs)."""
    name = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    with psycopg.connect(admin_url(database_url), autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(str(name))))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(str(name))))


@dataclass
class Worker:
    """A real Celery worker process consuming from Redis."""

    env: Mapping[str, str]
    name: str = "test"
    extra_args: tuple[str, ...] = ()
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "changewatch.worker",
                "worker",
                "--loglevel=INFO",
                "--hostname",
                f"{self.name}@%h",
                *self.extra_args,
            ],
            cwd=ROOT,
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return self

    def wait_ready(self, app: object, timeout: float = 180.0) -> None:
        """Until the worker answers a ping: it loads its model before it consumes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}; see its log")
            replies = app.control.ping(timeout=1.0)  # type: ignore[attr-defined]
            if any(self.name + "@" in name for reply in replies for name in reply):
                return
        raise TimeoutError(f"worker {self.name} not ready after {timeout}s")

    def stop(self, timeout: float = 60.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        code = self.process.returncode
        self.process = None
        return code


@contextlib.contextmanager
def running(*things: S3Server | Worker) -> Iterator[None]:
    try:
        yield
    finally:
        for thing in reversed(things):
            with contextlib.suppress(Exception):
                thing.stop()
