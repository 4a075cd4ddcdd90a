"""Prometheus metrics of a worker process (prometheus_client), served on its own port.

Per-stage latency histograms answer "where does a session's time go", which is what the
benchmark reports and what an operator watches.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, Info, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..schema import brokers
from ..settings import Settings

# A session's stages, in the order they run: the label of every stage metric and log line.
# batch: waiting for a micro-batch's forward pass; store: the whole write transaction
# (under the person's lock), score included.
STAGES = ("fetch", "decode", "batch", "embed", "score", "store")
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

JOBS = Counter(
    "changewatch_jobs_total",
    "Finished jobs by task, outcome and error code",
    ["task", "outcome", "error_code"],
)
STAGE_SECONDS = Histogram(
    "changewatch_stage_seconds",
    "Time spent per stage of a session",
    ["stage"],
    buckets=_LATENCY_BUCKETS,
)
SESSION_SECONDS = Histogram(
    "changewatch_session_seconds",
    "Whole analyze task, from start to stored result",
    buckets=_LATENCY_BUCKETS,
)
BATCH_IMAGES = Histogram(
    "changewatch_batch_images",
    "Images per forward pass",
    buckets=(1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256),
)
BATCH_SESSIONS = Histogram(
    "changewatch_batch_sessions",
    "Sessions sharing one forward pass",
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32),
)
MODEL = Info("changewatch_model", "The model this worker embeds with")
GPU_MEMORY = Gauge("changewatch_gpu_memory_bytes", "GPU memory allocated by torch")


@contextmanager
def stage(name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        STAGE_SECONDS.labels(name).observe(time.perf_counter() - started)


class QueueDepth(Collector):
    """Messages waiting per queue, read from Redis at scrape time (Flower shows none)."""

    def __init__(self, client: redis.Redis, queues: list[str]) -> None:
        self.client = client  # follows a Sentinel promotion (schema/brokers.py)
        self.queues = queues

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "changewatch_queue_depth", "Messages waiting in the broker per queue", labels=["queue"]
        )
        try:
            for queue in self.queues:
                family.add_metric([queue], float(self.client.llen(queue)))
        except redis.RedisError:
            return  # no sample rather than a wrong one; broker health is checked elsewhere
        yield family


def serve(settings: Settings, queues: list[str] | None = None) -> int | None:
    """Serve /metrics on ``settings.metrics_port`` (0 turns it off); the port, or None."""
    if settings.metrics_port <= 0:
        return None
    # On RabbitMQ the management plugin's own exporter has every queue's depth.
    client = brokers.redis_client(settings)
    if client is not None and queues:
        REGISTRY.register(QueueDepth(client, queues))
    start_http_server(settings.metrics_port, addr=settings.metrics_addr)
    return settings.metrics_port
