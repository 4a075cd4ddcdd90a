"""Test session: real Redis and Postgres on this machine, moto's S3 server over HTTP,
and a real Celery worker process. Missing services skip locally and fail in CI."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

# Before anything imports celeryconfig: the tests' own Redis databases and Postgres database,
# never whatever the shell points at (the tests flush and drop them).
os.environ["CELERY_BROKER_URL"] = os.environ.get(
    "CHANGEWATCH_TEST_BROKER_URL", "redis://127.0.0.1:6379/14"
)
os.environ["CELERY_RESULT_BACKEND"] = os.environ.get(
    "CHANGEWATCH_TEST_RESULT_BACKEND", "redis://127.0.0.1:6379/15"
)
os.environ["DATABASE_URL"] = os.environ.get(
    "CHANGEWATCH_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/changewatch_test"
)

import boto3
import psycopg
import pytest
import redis

from changewatch.producer import Producer
from changewatch.schema.migrate import ensure_login, migrate
from scripts.localstack import PHOTOS, ROOT, S3Server, Worker, free_port, recreate_database

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
BUCKET = "changewatch-test"
# Small enough to test the limit without huge uploads, above every real photo (<= 3.1 MB).
MAX_IMAGE_BYTES = 8_000_000
ARTIFACTS = ROOT / "artifacts"
WORKER_LOGIN = "changewatch_test_worker"


def run_module(
    module: str, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m MODULE ARGS`` from the repo root, as a user or a deployment runs it."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def require(ok: bool, why: str) -> None:
    """Skip on a developer machine, fail in CI: CI must never pass by skipping."""
    if not ok:
        if IN_CI:
            pytest.fail(why)
        pytest.skip(why)


def _redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(os.environ["CELERY_BROKER_URL"]).ping())
    except redis.RedisError:
        return False


def _postgres_up() -> bool:
    try:
        admin = psycopg.conninfo.make_conninfo(os.environ["DATABASE_URL"], dbname="postgres")
        with psycopg.connect(admin, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


@pytest.fixture(scope="session")
def photos() -> Path:
    require(PHOTOS.is_dir(), f"real photos not found at {PHOTOS}")
    return PHOTOS


@pytest.fixture(scope="session")
def database_url() -> str:
    require(_postgres_up(), "PostgreSQL is not reachable on 127.0.0.1:5432")
    url = os.environ["DATABASE_URL"]
    recreate_database(url)
    migrate(url)
    return url


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = S3Server().start()
    os.environ.update(server.env())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3(s3_server: S3Server) -> object:
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture(scope="session")
def broker() -> str:
    require(_redis_up(), "Redis is not reachable on 127.0.0.1:6379")
    for url in (os.environ["CELERY_BROKER_URL"], os.environ["CELERY_RESULT_BACKEND"]):
        redis.Redis.from_url(url).flushdb()
    return os.environ["CELERY_BROKER_URL"]


@pytest.fixture(scope="session")
def producer(database_url: str, broker: str) -> Producer:
    return Producer()


@pytest.fixture(scope="session")
def worker(database_url: str, broker: str, s3: object, producer: Producer) -> Iterator[Worker]:
    ARTIFACTS.mkdir(exist_ok=True)
    # The worker logs in as a member of changewatch_worker, as deployments do: every
    # pipeline test then also proves that role's rights are enough, and no more is used.
    ensure_login(database_url, WORKER_LOGIN, secrets.token_urlsafe(16), "changewatch_worker")
    proc = Worker(
        env={
            "DATABASE_URL": psycopg.conninfo.make_conninfo(database_url, user=WORKER_LOGIN),
            "CHANGEWATCH_MODEL_WEIGHTS": "random",
            "CHANGEWATCH_DEVICE": "cpu",
            "CHANGEWATCH_METRICS_PORT": str(free_port()),
            "CHANGEWATCH_METRICS_ADDR": "127.0.0.1",
            "CHANGEWATCH_ALLOWED_BUCKETS": BUCKET,
            "CHANGEWATCH_MAX_IMAGE_BYTES": str(MAX_IMAGE_BYTES),
        },
        name="pytest",
        log_path=ARTIFACTS / "worker.log",
    ).start()
    try:
        proc.wait_ready(producer.celery)
        yield proc
    finally:
        proc.stop()


class Uploader:
    """Puts photos where a job may read them: s3://BUCKET/<user_id>/..."""

    def __init__(self, client: object) -> None:
        self.client = client

    def put(self, user_id: uuid.UUID, name: str, data: bytes) -> str:
        key = f"{user_id}/{uuid.uuid4().hex[:8]}-{name}"
        self.client.put_object(Bucket=BUCKET, Key=key, Body=data)  # type: ignore[attr-defined]
        return f"s3://{BUCKET}/{key}"

    def session(self, user_id: uuid.UUID, files: dict[str, Path]) -> dict[str, str]:
        return {
            angle: self.put(user_id, path.name, path.read_bytes()) for angle, path in files.items()
        }


@pytest.fixture(scope="session")
def uploader(s3: object) -> Uploader:
    return Uploader(s3)
