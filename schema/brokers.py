"""The one seam where brokers differ: Redis (one server, or Sentinel) and RabbitMQ.

Everything else asks here instead of testing a URL's scheme itself:

- ``kind(url)``: ``redis``, ``sentinel`` or ``amqp``.
- ``celery_options(settings, config)``: what Celery needs for that broker and result
  backend (producer, workers and Flower all build their config through celeryconfig).
- ``keeps_jobs_in_redis(broker_url)``, ``app_keeps_jobs_in_redis(app)``: whether
  kombu's queue and ``unacked`` keys exist to read (schema/broker.py): the recovery
  sweep, the reaper and forget-user's message drop need them. On RabbitMQ the broker
  itself gives a dead consumer's deliveries back, and a forgotten person's queued job
  is refused by the worker when consumed (the tombstone in store.people), so those
  parts say they are not needed there.
- ``redis_client(settings)``: a redis-py client for the broker (the queue-depth metric).
- ``producer_backend(settings)``: the result backend a sending-only app uses.

Broker-specific code lives in one module per broker: schema/redis_broker.py and
schema/amqp_broker.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from . import amqp_broker, redis_broker

if TYPE_CHECKING:
    import redis
    from celery import Celery

    from ..settings import Settings

Kind = Literal["redis", "sentinel", "amqp"]
_KINDS: dict[str, Kind] = {
    "redis": "redis",
    "rediss": "redis",
    "socket": "redis",
    "sentinel": "sentinel",
    "amqp": "amqp",
    "amqps": "amqp",
    "pyamqp": "amqp",
}


def kind(url: str) -> Kind:
    """Which broker a URL names; ValueError for one changewatch does not support."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in _KINDS:
        raise ValueError(
            f"unsupported broker URL scheme {scheme!r}: use redis://, rediss://,"
            " sentinel:// (Redis Sentinel) or amqp:// (RabbitMQ)"
        )
    return _KINDS[scheme]


def keeps_jobs_in_redis(broker_url: str) -> bool:
    """Whether jobs wait in kombu's Redis keys (schema/broker.py can read them)."""
    return kind(broker_url) in ("redis", "sentinel")


def app_keeps_jobs_in_redis(app: Celery) -> bool:
    """Whether the broker ``app`` really writes to is Redis (or Sentinel).

    Asked of its connection, not of ``app.conf.broker_url``: Celery prefers
    ``$CELERY_BROKER_URL`` to that setting, but not to ``broker_write_url``."""
    with app.connection_for_write() as conn:
        return bool(conn.transport.driver_type == "redis")


def celery_options(settings: Settings, config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with what this broker and result backend need (a new dict)."""
    out = dict(config)
    broker = kind(settings.broker_url)
    if broker == "amqp":
        out = amqp_broker.celery_options(settings, out)
    else:
        transport = redis_broker.transport_for(settings.broker_url)
        if transport:
            out["broker_transport"] = transport
        if broker == "sentinel":
            out["broker_transport_options"] = {
                **out.get("broker_transport_options", {}),
                **_sentinel(settings),
            }
    if settings.result_backend.lower().startswith("sentinel://"):
        out["result_backend_transport_options"] = {
            **out.get("result_backend_transport_options", {}),
            **_sentinel(settings),
        }
    return out


def _sentinel(settings: Settings) -> dict[str, Any]:
    return redis_broker.sentinel_options(
        settings.redis_master_name, settings.redis_sentinel_password
    )


def producer_backend(settings: Settings) -> str:
    """The result backend as a sending-only app names it (Celery's ``backend_cls``)."""
    if kind(settings.result_backend) in ("redis", "sentinel"):
        return redis_broker.send_only_backend(settings.result_backend)
    return settings.result_backend


def redis_client(settings: Settings) -> redis.Redis | None:
    """A client for the broker's Redis (following Sentinel), or None on RabbitMQ."""
    if not keeps_jobs_in_redis(settings.broker_url):
        return None
    return redis_broker.client(
        settings.broker_url, settings.redis_master_name, settings.redis_sentinel_password
    )
