"""Fixtures for tests/unit, tests/integration and tests/e2e (helpers are in tests/helpers.py).

The services: real Redis and Postgres on this machine, moto's S3 server over HTTP, and a
real Celery worker process. Missing services skip locally and fail in CI; tests/unit needs
none of them. Each test is marked ``unit``, ``integration`` or ``e2e`` by its folder."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import boto3
import psycopg
import pytest
import redis

from bench.harness.services import (
    PHOTOS,
    S3Server,
    Worker,
    free_port,
    own_services,
    recreate_database,
)
from changewatch.producer import Producer
from changewatch.schema.migrate import ensure_login, migrate
from changewatch.settings import Settings
from tests.helpers import (
    ARTIFACTS,
    BUCKET,
    DELETE_SECRET,
    MAX_IMAGE_BYTES,
    NOTIFY_QUEUE,
    WORKER_LOGIN,
    Uploader,
    _postgres_up,
    _redis_up,
    require,
)

# The tests' own Redis databases and Postgres database, never whatever the shell points at
# (the tests flush and drop them). In-process code gets them as a Settings object; the
# environment carries them only to the worker and CLI processes the tests start.
SERVICES = own_services(
    "CHANGEWATCH_TEST",
    broker="redis://127.0.0.1:6379/14",
    backend="redis://127.0.0.1:6379/15",
    database="postgresql://postgres@127.0.0.1:5432/changewatch_test",
)
# The operator's producer holds the delete secret (delete-session signs its own token);
# senders the tests build without it are refused.
SERVICES["CHANGEWATCH_DELETE_SECRET"] = DELETE_SECRET
SETTINGS = Settings.from_env(SERVICES)
os.environ.update(SERVICES)

TIERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each test is marked by its folder: tests/unit, tests/integration or tests/e2e.

    Tests marked ``compiled_int8`` run last: an AOTInductor program brings its own OpenMP
    runtime into the process, and eager torch in the same process runs 1.3-2x slower
    after it (tests/unit/test_model.py measured so), so no other test comes after them.
    """
    here = Path(__file__).parent
    for item in items:
        try:
            folder = item.path.relative_to(here).parts[0]
        except ValueError:
            continue
        if folder in TIERS:
            item.add_marker(folder)
    items.sort(key=lambda item: item.get_closest_marker("compiled_int8") is not None)


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
    return Producer(SETTINGS)


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
            "CHANGEWATCH_NOTIFY_QUEUE": NOTIFY_QUEUE,
            "CHANGEWATCH_DELETE_SECRET": DELETE_SECRET,
        },
        name="pytest",
        log_path=ARTIFACTS / "worker.log",
    ).start()
    try:
        proc.wait_ready(producer.celery)
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def uploader(s3: object) -> Uploader:
    return Uploader(s3)
