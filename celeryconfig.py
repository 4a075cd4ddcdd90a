"""All Celery settings for changewatch's producer, workers and Flower, built from Settings.

``celery_config(settings)`` is the configuration: ``worker.app`` adds it lazily (read on
first use, not at import) and the producer configures its own app with it. Each line
says why it is set.
"""

from __future__ import annotations

import os
from typing import Any

from .schema import brokers
from .schema.contract import QUEUE
from .settings import Settings


def celery_config(settings: Settings) -> dict[str, Any]:
    # What differs between Redis, Sentinel and RabbitMQ is added by the one broker seam.
    config = {**_messages(settings), **_recovery(settings), **_watching(settings)}
    return brokers.celery_options(settings, config)


def _messages(s: Settings) -> dict[str, Any]:
    return {
        # Where jobs go and where Celery keeps task results (Flower and AsyncResult read these).
        "broker_url": s.broker_url,
        "result_backend": s.result_backend,
        # The task payloads are a public contract for non-Python producers: JSON only,
        # never pickle.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        # A result the backend cannot take yet (its Redis restarting) waits for it, with
        # Celery's backoff (10 ms doubling to 10 s), instead of raising out of the task:
        # that raise left the message neither acknowledged nor rejected, and a worker on
        # RabbitMQ whose prefetch window filled with such messages got no more jobs
        # (tests/e2e/test_failover.py), for good: even after Redis came back. No limit on
        # the retries (Celery's default): the job is stored in Postgres already, and its
        # message is acknowledged as soon as Redis answers again.
        "result_backend_always_retry": True,
        # One named queue so operators and other producers know where jobs go.
        "task_default_queue": QUEUE,
        # Ack after the task ran so a crashed worker's job is redelivered; effects are
        # idempotent.
        "task_acks_late": True,
        # A child killed mid-task (OOM, kill -9) puts its job back on the queue instead of
        # dropping it.
        "task_reject_on_worker_lost": True,
        # Take one message per free slot: a warm model is the bottleneck, not the broker
        # round trip.
        "worker_prefetch_multiplier": 1,
        # Threads share one warm model per worker process; fetch/decode/DB release the GIL.
        "worker_pool": s.worker_pool,
        # Sessions in flight: one per core keeps decoding in parallel with inference without
        # starving the model of cores (measured in bench/: 2 beats 4 on a 2-core machine).
        "worker_concurrency": s.worker_concurrency or os.cpu_count() or 2,
    }


def _recovery(s: Settings) -> dict[str, Any]:
    return {
        # A dead worker's jobs come back through worker.recovery: every recovery_every
        # seconds one worker (they take turns) lists kombu's unacked messages older than
        # recovery_min_age and asks every live worker which it holds (Celery's query_task);
        # those no live worker has held for recovery_confirm seconds go back in the queue:
        # a killed worker's job runs again within about 35 s of its delivery. 0 turns the
        # sweep off. The minimum age is 15 s, past a normal job's run: a healthy run then
        # has nothing to ask about, and the sweep costs two Redis commands, not a
        # broadcast with replies from every worker (bench/broker_calls.py).
        "changewatch_recovery_every": s.recovery_every,
        "changewatch_recovery_min_age": s.recovery_min_age,
        "changewatch_recovery_confirm": s.recovery_confirm,
        # A task a live worker has listed as running for longer than this is stuck (after a
        # broker connection loss the threads pool cannot cancel it; Celery may never clear
        # it): its message goes back too. Far longer than a job with its S3 and Postgres
        # timeouts.
        "changewatch_recovery_stuck_after": s.recovery_stuck_after,
        # The visibility timeout is only the backstop for when no worker sweeps: kombu
        # restores a message this long after its delivery even if its worker still runs it,
        # so it must outlast anything a live worker holds a job for (a run with its
        # boto3/psycopg timeouts, a retry countdown of at most 120 s, micro-batch waits):
        # an hour is far past all of them. unacked_restore_interval: kombu's own sweep of
        # messages past that timeout, every this many seconds: 5 minutes, for a backstop
        # of an hour (each pass is a lock and a range read on every worker).
        "broker_transport_options": {
            "visibility_timeout": s.visibility_timeout,
            "unacked_restore_interval": s.unacked_restore_interval,
            "unacked_restore_throttle": 1,
            # No longer BRPOP timeout (polling_interval): kombu uses it for every reply
            # queue too, and a 5 s BRPOP left from one broadcast swallows the replies of
            # the next (inspect, ping, the recovery sweep's query_task), measured by
            # tests/e2e/test_launch.py. The idle command it would save is about one a
            # session.
        },
        "result_backend_transport_options": {"visibility_timeout": s.visibility_timeout},
        # Keep retrying the broker at start-up (compose starts everything at once).
        "broker_connection_retry_on_startup": True,
        # Redelivered anyway by acks_late; cancel so a lost connection cannot double-run a job.
        "worker_cancel_long_running_tasks_on_connection_loss": True,
    }


def _watching(s: Settings) -> dict[str, Any]:
    return {
        # Heartbeats every 10 s, not Celery's 2 s (worker.app reads this): Flower's
        # online/offline follows the interval each heartbeat states, and 2 s cost each
        # worker 30 PUBLISHes a minute, most of the commands a session left
        # (bench/broker_calls.py).
        "changewatch_heartbeat_s": s.heartbeat_s,
        # Task events only while a monitor listens: Flower (and ``celery events``) turn
        # them on in every worker (its enable_events broadcast, every 5 s), so without one
        # no worker publishes three events per job to nobody (bench/broker_calls.py).
        "worker_send_task_events": False,
        # "sent" events let Flower show jobs that are still queued (one PUBLISH per job;
        # only the sender can emit it, so it cannot wait for Flower to ask).
        "task_send_sent_event": True,
        # No STARTED result: "running" is in Postgres (producer status) and in Flower's
        # task-started event; storing it cost a GET and a MULTI/SETEX/PUBLISH/EXEC per job.
        "task_track_started": False,
        # Results are also in Postgres; Redis only needs them long enough for --wait and
        # Flower.
        "result_expires": 24 * 3600,
        "timezone": "UTC",
        "enable_utc": True,
    }
