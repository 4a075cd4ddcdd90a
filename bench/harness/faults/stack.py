"""The whole private stack a fault run breaks: Redis, Postgres, S3 behind a proxy, workers."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from celery import Celery

from bench.harness.faults.patroni import PatroniCluster
from bench.harness.faults.postgres_cluster import PostgresCluster
from bench.harness.faults.rabbitmq import RabbitVhost
from bench.harness.faults.redis_server import RedisServer
from bench.harness.faults.sentinel import MASTER_NAME, SentinelCluster
from bench.harness.faults.series import BUCKET
from bench.harness.faults.storage import TcpProxy
from bench.harness.faults.workers import resume
from bench.harness.services import S3Server, Worker
from changewatch.schema import brokers
from changewatch.schema.routing import sending_app as producer_celery
from changewatch.settings import Settings


def celery_app(broker_url: str, backend_url: str, master_name: str = "") -> Celery:
    """A producer-side Celery app for a private broker."""
    settings = Settings(
        broker_url=broker_url, result_backend=backend_url, redis_master_name=master_name
    )
    app = producer_celery(settings)
    app.conf.update(
        # Celery prefers $CELERY_BROKER_URL and $CELERY_RESULT_BACKEND over any setting
        # (celery.app.utils.Settings), and the test session sets both for the machine's
        # Redis. The read/write URLs and the backend class are not overridden by them.
        broker_read_url=broker_url,
        broker_write_url=broker_url,
        result_backend=backend_url,
    )
    app.backend_cls = brokers.producer_backend(settings)
    return app


@dataclass
class FaultStack:
    """Private Redis, Postgres and S3 (behind a proxy), and real workers that use them.

    With ``database="patroni"`` Postgres is a Patroni pair and ``database_url`` the
    multi-host URL every part of changewatch is given.

    Workers reach S3 through ``proxy`` so that an S3 outage can be a refusal (proxy
    down) as well as a hang (moto paused), without moto losing its in-memory objects.
    """

    root: Path
    dbname: str = "changewatch_faults"
    # "redis" (one server), "sentinel" (primary, replica, three sentinels) or "amqp" (a
    # vhost of the machine's RabbitMQ; results in a private Redis).
    broker: str = "redis"
    redis: RedisServer | SentinelCluster = field(init=False)
    rabbit: RabbitVhost | None = None
    # "postgres" (one throwaway cluster) or "patroni" (one etcd, two Postgres nodes under
    # Patroni, synchronous replication; DATABASE_URL names both, target_session_attrs).
    database: str = "postgres"
    postgres: PostgresCluster | PatroniCluster = field(init=False)
    s3: S3Server = field(init=False)
    proxy: TcpProxy = field(init=False)
    workers: list[Worker] = field(default_factory=list)
    app: Celery = field(init=False)
    # bench.tiers: a fixed port for the private Redis (0: a free one), and more Postgres
    # server options (e.g. full_page_writes=on, as deployments run).
    redis_port: int = 0
    postgres_options: str = ""

    def start(self) -> FaultStack:
        from changewatch.schema.migrate import migrate  # keeps importing the harness light

        self.root.mkdir(parents=True, exist_ok=True)
        if self.broker == "sentinel":
            self.redis = SentinelCluster(self.root / "sentinel").start()
        else:
            redis_root = self.root / "redis"
            port = {"port": self.redis_port} if self.redis_port else {}
            self.redis = RedisServer(redis_root, **port).start()
        if self.broker == "amqp":
            self.rabbit = RabbitVhost().start()
        if self.database == "patroni":
            self.postgres = PatroniCluster.create().start()
        else:
            self.postgres = PostgresCluster.create()
            self.postgres.options = self.postgres_options
            self.postgres.init().start()
        with psycopg.connect(self.postgres.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.dbname}"')
        migrate(self.database_url)
        self.s3 = S3Server().start()
        self.proxy = TcpProxy(self.s3.port).start()
        self.app = celery_app(self.broker_url, self.backend_url, self.master_name)
        client = self.s3_client()
        client.create_bucket(Bucket=BUCKET)
        return self

    @property
    def database_url(self) -> str:
        return self.postgres.url(self.dbname)

    @property
    def master_name(self) -> str:
        return MASTER_NAME if self.broker == "sentinel" else ""

    @property
    def broker_url(self) -> str:
        return self.rabbit.url() if self.rabbit is not None else self.redis.url(0)

    @property
    def backend_url(self) -> str:
        return self.redis.url(1)

    def s3_client(self) -> Any:
        """A client that talks to moto directly (not through the proxy): uploads, checks."""
        import boto3

        env = self.s3.env()
        return boto3.client(
            "s3",
            endpoint_url=self.s3.endpoint,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
        )

    def worker_env(self, concurrency: int = 2) -> dict[str, str]:
        return {
            **self.s3.env(),
            "AWS_ENDPOINT_URL_S3": self.proxy.endpoint,
            "CELERY_BROKER_URL": self.broker_url,
            "CELERY_RESULT_BACKEND": self.backend_url,
            "DATABASE_URL": self.database_url,
            "CHANGEWATCH_MODEL_WEIGHTS": "random",
            "CHANGEWATCH_DEVICE": "cpu",
            "CHANGEWATCH_METRICS_PORT": "0",
            "CHANGEWATCH_WORKER_CONCURRENCY": str(concurrency),
            "CHANGEWATCH_REDIS_MASTER_NAME": self.master_name,
        }

    def start_worker(self, name: str, concurrency: int = 2, wait: bool = True) -> Worker:
        worker = Worker(
            env=self.worker_env(concurrency),
            name=name,
            log_path=self.root / f"worker-{name}.log",
        ).start()
        self.workers.append(worker)
        if wait:
            worker.wait_ready(self.app)
        return worker

    def close(self) -> None:
        for worker in self.workers:
            with contextlib.suppress(Exception):
                if worker.process is not None:
                    resume(worker.process)
                worker.stop(timeout=20)
        for step in (
            lambda: self.proxy.stop(),
            lambda: self.s3.process is not None and resume(self.s3.process),
            lambda: self.s3.stop(),
            lambda: self.redis.stop(),
            lambda: self.rabbit is not None and self.rabbit.stop(),
            lambda: self.postgres.destroy(),
        ):
            with contextlib.suppress(Exception):
                step()
        with contextlib.suppress(Exception):
            self.app.close()
