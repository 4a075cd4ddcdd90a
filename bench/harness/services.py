"""A local changewatch stack for the tests, the demo and the benchmarks.

Real parts only: the machine's Redis and Postgres, moto's S3 server over HTTP (no
MinIO binary installs here), and real ``celery -A changewatch.worker worker`` processes.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench.harness import process
from bench.harness.process import free_port, wait_for_port

__all__ = [
    "PHOTOS",
    "ROOT",
    "SERIES_PHOTOS",
    "S3Server",
    "Worker",
    "admin_url",
    "celery",
    "flush_redis",
    "free_port",
    "fresh_database",
    "own_services",
    "recreate_database",
    "running",
    "s3_bucket",
    "wait_for_port",
]

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = Path(os.environ.get("CHANGEWATCH_PHOTOS", ROOT.parent / "shared" / "photos"))
# One person's real photos (Nikon shots in PHOTOS/series), in the order tests and
# benches take them: the first six are the validity bench's angles.
SERIES_PHOTOS: tuple[str, ...] = tuple(
    f"DSCN00{n}.jpg" for n in ("10", "12", "21", "25", "27", "29", "38", "40", "42")
)


def own_services(prefix: str, broker: str, backend: str, database: str) -> dict[str, str]:
    """The broker, result backend and database of a run that flushes and recreates them:
    ``{prefix}_BROKER_URL``, ``{prefix}_RESULT_BACKEND`` and ``{prefix}_DATABASE_URL`` when
    set, else the defaults given; never the shell's own CELERY_* and DATABASE_URL."""
    return {
        "CELERY_BROKER_URL": os.environ.get(f"{prefix}_BROKER_URL", broker),
        "CELERY_RESULT_BACKEND": os.environ.get(f"{prefix}_RESULT_BACKEND", backend),
        "DATABASE_URL": os.environ.get(f"{prefix}_DATABASE_URL", database),
    }


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
        self.process = process.start(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        )
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        process.stop(self.process)
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


def fresh_database(database_url: str) -> None:
    """An empty database at the schema's latest migration (a benchmark's own)."""
    from changewatch.schema.migrate import migrate

    recreate_database(database_url)
    migrate(database_url)


def flush_redis(*urls: str) -> None:
    """Empty the Redis databases a run owns: nothing left from an earlier run."""
    import redis

    for url in urls:
        redis.Redis.from_url(url).flushdb()


def celery(*args: str) -> list[str]:
    """``celery -A changewatch.worker ARGS`` with this interpreter: a worker, Flower."""
    return [sys.executable, "-m", "celery", "-A", "changewatch.worker", *args]


@dataclass
class Worker:
    """A real Celery worker process consuming from Redis."""

    env: Mapping[str, str]
    name: str = "test"
    extra_args: tuple[str, ...] = ()
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        self.process = process.start(
            celery("worker", "--loglevel=INFO", "--hostname", f"{self.name}@%h", *self.extra_args),
            log=self.log_path,
            env={**os.environ, **self.env},
            cwd=ROOT,
        )
        return self

    def wait_ready(self, app: object, timeout: float = 180.0) -> None:
        """Until the worker answers a ping: it loads its model before it consumes."""

        def answered() -> bool:
            replies = app.control.ping(timeout=1.0)  # type: ignore[attr-defined]
            return any(self.name + "@" in name for reply in replies for name in reply)

        process.wait_until(
            answered,
            timeout,
            f"worker {self.name} not ready after {timeout}s",
            self.process,
            exited="worker exited with {code}; see its log",
            interval=0.0,  # each ping already waits a second for replies
        )

    def stop(self, timeout: float = 60.0) -> int | None:
        code = process.stop(self.process, timeout)
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


@contextlib.contextmanager
def s3_bucket(bucket: str) -> Iterator[Any]:
    """moto's S3 server for this run, with ``bucket`` created; yields an S3 client.

    Its endpoint and keys go into os.environ, so the workers started meanwhile (and
    ``boto3.client("s3")``) use it; it is stopped on the way out.
    """
    import boto3

    server = S3Server().start()
    os.environ.update(server.env())
    try:
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=bucket)
        yield s3
    finally:
        server.stop()
