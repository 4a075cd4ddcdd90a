"""The broker seam gives each broker what it needs, from the one setting every part reads."""

from __future__ import annotations

import pytest

from changewatch.celeryconfig import celery_config
from changewatch.schema import brokers
from changewatch.settings import Settings

SENTINELS = "sentinel://10.0.0.1:26379/0;sentinel://10.0.0.2:26379/0"


def test_each_url_names_its_broker() -> None:
    assert brokers.kind("redis://h:6379/0") == "redis"
    assert brokers.kind("rediss://h:6380/0?ssl_cert_reqs=required") == "redis"
    assert brokers.kind(SENTINELS) == "sentinel"
    assert brokers.kind("amqp://u:p@h:5672/v") == "amqp"
    with pytest.raises(ValueError, match="unsupported broker"):
        brokers.kind("sqs://")


def test_redis_uses_the_transport_that_survives_a_restart() -> None:
    config = celery_config(Settings())
    assert config["broker_transport"] == "changewatch.schema.redis_broker:Transport"
    assert config["broker_transport_options"]["visibility_timeout"] == 3600


def test_sentinel_needs_the_master_name_and_gives_it_to_broker_and_results() -> None:
    with pytest.raises(ValueError, match="CHANGEWATCH_REDIS_MASTER_NAME"):
        celery_config(Settings(broker_url=SENTINELS))
    settings = Settings.from_env(
        {
            "CELERY_BROKER_URL": SENTINELS,
            "CELERY_RESULT_BACKEND": SENTINELS.replace("/0", "/1"),
            "CHANGEWATCH_REDIS_MASTER_NAME": "changewatch",
            "CHANGEWATCH_REDIS_SENTINEL_PASSWORD": "s3cret",
        }
    )
    config = celery_config(settings)
    assert config["broker_transport"].endswith(":SentinelTransport")
    for key in ("broker_transport_options", "result_backend_transport_options"):
        assert config[key]["master_name"] == "changewatch"
        assert config[key]["sentinel_kwargs"] == {"password": "s3cret"}
    assert brokers.producer_backend(settings).endswith(
        ":SendOnlySentinelBackend+" + settings.result_backend
    )


def test_rabbitmq_declares_a_quorum_queue_with_a_delivery_limit() -> None:
    settings = Settings.from_env(
        {"CELERY_BROKER_URL": "amqp://u:p@h:5672/v", "CHANGEWATCH_AMQP_DELIVERY_LIMIT": "7"}
    )
    config = celery_config(settings)
    (queue,) = config["task_queues"]
    # Past the limit a message is dead-lettered, at least once, to where a worker ends its
    # job failed (worker/dead_letters.py), not dropped with its session left running.
    assert queue.queue_arguments == {
        "x-queue-type": "quorum",
        "x-delivery-limit": 7,
        "x-dead-letter-exchange": "changewatch.dead",
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    assert queue.exchange.type == "topic"  # native delayed delivery needs topic
    assert config["broker_transport_options"] == {"confirm_publish": True}
    assert "broker_transport" not in config
    assert not brokers.keeps_jobs_in_redis(settings.broker_url)
    assert brokers.redis_client(settings) is None
