"""Redis as the broker (one server or Sentinel): kombu's transports, kept usable after
their Connection closed; a redis-py client that follows a promotion; the producer's
result backend that does not subscribe to what it sends.

Why: when a worker loses Redis, Celery closes the old broker Connection, which sets its
transport's ``client`` to None (kombu/connection.py ``_do_close_transport``); closing
the channel afterwards puts its unacknowledged deliveries back (QoS.restore_unacked),
which builds a new pool from ``self.connection.client.hostname`` and raises
``AttributeError: 'NoneType' object has no attribute 'hostname'``. AttributeError is no
connection error, so Celery logs "Unrecoverable error" and the worker process exits,
dropping its warm model (measured with kombu 5.7.0: every Redis restart ended every
worker). Still in kombu main (redis.py ``_connparams`` has no None check).

The fix: the transport remembers the connection details it was made with, so a late
channel close still reaches Redis (or fails with a real connection error, which Celery
retries). Nothing else of kombu's behaviour changes. Celery picks these classes through
``broker_transport`` (schema/brokers.py), which kombu prefers to the URL's scheme.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

import redis
from celery.backends.redis import RedisBackend, SentinelBackend
from kombu.transport import redis as kombu_redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

__all__ = [
    "SentinelTransport",
    "Transport",
    "client",
    "send_only_backend",
    "sentinel_options",
    "transport_for",
]


class _RemembersClient:
    """``client`` that keeps its last connection details when kombu sets it to None."""

    _last_client: Any = None

    @property
    def client(self) -> Any:
        return self._last_client

    @client.setter
    def client(self, value: Any) -> None:
        if value is not None:  # kombu's close sets None; the details stay valid
            self._last_client = value


class Transport(_RemembersClient, kombu_redis.Transport):
    """kombu's Redis transport (``redis://``, ``rediss://``)."""


class SentinelTransport(_RemembersClient, kombu_redis.SentinelTransport):
    """kombu's Sentinel transport (``sentinel://``, ``master_name`` in the options)."""


TRANSPORT = f"{__name__}:Transport"
SENTINEL_TRANSPORT = f"{__name__}:SentinelTransport"


def transport_for(url: str) -> str | None:
    """The transport class Celery should use for this Redis broker URL.

    ``rediss://`` without ``ssl_*`` options keeps kombu's own class: kombu turns on TLS
    for that scheme only when it picks the class from the URL itself."""
    scheme = url.split("://", 1)[0].lower()
    if scheme == "sentinel":
        return SENTINEL_TRANSPORT
    if scheme == "rediss" and "ssl_" not in url:
        return None
    return TRANSPORT


def sentinel_options(master_name: str, sentinel_password: str) -> dict[str, Any]:
    """Transport options kombu's Sentinel transport and Celery's SentinelBackend need."""
    if not master_name:
        raise ValueError(
            "a sentinel:// URL needs the master's name: set CHANGEWATCH_REDIS_MASTER_NAME"
        )
    options: dict[str, Any] = {"master_name": master_name}
    if sentinel_password:
        options["sentinel_kwargs"] = {"password": sentinel_password}
    return options


def client(url: str, master_name: str = "", sentinel_password: str = "") -> redis.Redis:
    """A redis-py client for a ``redis://``, ``rediss://`` or ``sentinel://`` URL.

    For Sentinel, every ``;``-separated sentinel is asked for the current master on each
    new connection, so the client follows a promotion; a demoted master's READONLY turns
    into a ConnectionError that the retry below takes to the new master."""
    if not url.lower().startswith("sentinel://"):
        return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    parts = [urlparse(u.strip()) for u in url.split(";") if u.strip()]
    first = parts[0]
    sentinels = Sentinel(
        [(p.hostname or "127.0.0.1", p.port or 26379) for p in parts],
        sentinel_kwargs=sentinel_options(master_name, sentinel_password).get("sentinel_kwargs"),
        socket_timeout=2,
    )
    return sentinels.master_for(
        master_name,
        db=int((first.path or "/0").strip("/") or 0),
        username=first.username or None,
        password=first.password or None,
        socket_timeout=5,
        socket_connect_timeout=5,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 8),
    )


class _SendOnly:
    """A producer's result backend: it never subscribes to a task's result when sending.

    Celery subscribes every sent task's result channel (``on_task_call``) in case the
    sender calls ``AsyncResult.get()``; changewatch's producer waits on Postgres, so
    that was a SUBSCRIBE and an UNSUBSCRIBE per job serving nobody. ``get()`` still
    subscribes when somebody does call it."""

    def on_task_call(self, producer: Any, task_id: str) -> None:
        return None


class SendOnlyRedisBackend(_SendOnly, RedisBackend):
    pass


class SendOnlySentinelBackend(_SendOnly, SentinelBackend):
    pass


def send_only_backend(url: str) -> str:
    """Celery's ``backend_cls`` for a sending app: ``module:Class+URL``."""
    cls = (
        "SendOnlySentinelBackend" if url.lower().startswith("sentinel") else "SendOnlyRedisBackend"
    )
    return f"{__name__}:{cls}+{url}"
