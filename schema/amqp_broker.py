"""RabbitMQ as changewatch's broker: quorum queues with a delivery limit.

Why each choice (Celery 5.7, kombu 5.7, py-amqp 5.4):

- Quorum queues are replicated through Raft: a message the broker confirmed survives
  the loss of a minority of nodes. The type must be set when a queue is declared (a
  policy cannot change it), so the jobs queue is declared here with
  ``x-queue-type=quorum``; the per-model backfill queues are created on demand as
  quorum queues too (``task_create_missing_queue_type``).
- ``x-delivery-limit``: a message delivered that many times (each worker that took it
  died) is taken out of the queue instead of killing workers forever. It is
  dead-lettered, at least once (``x-dead-letter-strategy``, which needs
  ``x-overflow=reject-publish``), to the ``changewatch.dead`` queue, declared with the
  jobs queue so that it exists before the first message reaches it; every worker's
  dead-letter pass (worker/dead_letters.py) records the job failed,
  ``delivery_limit_exceeded``, so its session ends instead of staying ``running``.
  Backfill queues get the broker's default (20 from RabbitMQ 4.0; none before: set a
  policy there).
- ``confirm_publish``: ``send_task`` returns only after the broker (a quorum of
  replicas) accepted the message; Celery's docs say quorum queues require it.
- A topic exchange: Celery 5.5+ turns on native delayed delivery for quorum queues (a
  retry's countdown waits in ``celery_delayed_*`` queues, not in a worker), which needs
  topic or fanout; with the default direct exchange an ETA task would block a worker.
- When a worker's connection dies, RabbitMQ itself gives its unacknowledged deliveries
  back to the queue (acks_late), so the Redis recovery sweep has no work here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kombu import Exchange, Queue

from .contract import QUEUE

if TYPE_CHECKING:
    from ..settings import Settings


DEAD_QUEUE = f"{QUEUE}.dead"


def dead_letter_queue() -> Queue:
    """Where the jobs queue puts a message past its delivery limit (a quorum queue too)."""
    return Queue(
        DEAD_QUEUE,
        Exchange(DEAD_QUEUE, type="fanout"),
        routing_key=DEAD_QUEUE,
        queue_arguments={"x-queue-type": "quorum"},
    )


class JobsQueue(Queue):
    """Declares its dead-letter queue first: RabbitMQ drops a message dead-lettered to
    an exchange that does not exist, and a poison message can reach its limit before
    any worker started."""

    def declare(self, nowait: bool = False, channel: Any = None) -> str | None:
        if self.queue_arguments and "x-dead-letter-exchange" in self.queue_arguments:
            dead_letter_queue()(channel or self.channel).declare()
        return super().declare(nowait=nowait, channel=channel)


def jobs_queue(delivery_limit: int) -> Queue:
    """The jobs queue as every producer and worker declares it (they must agree)."""
    arguments: dict[str, Any] = {"x-queue-type": "quorum"}
    if delivery_limit >= 0:
        arguments.update(
            {
                "x-delivery-limit": delivery_limit,
                "x-dead-letter-exchange": DEAD_QUEUE,
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            }
        )
    return JobsQueue(
        QUEUE,
        Exchange(QUEUE, type="topic"),
        routing_key=QUEUE,
        queue_arguments=arguments,
    )


def celery_options(settings: Settings, config: dict[str, Any]) -> dict[str, Any]:
    """``config`` for RabbitMQ: kombu's Redis-only transport options are left out."""
    out = {k: v for k, v in config.items() if k != "broker_transport_options"}
    out.update(
        task_queues=[jobs_queue(settings.amqp_delivery_limit)],
        task_default_exchange=QUEUE,
        task_default_exchange_type="topic",
        task_default_routing_key=QUEUE,
        task_default_queue_type="quorum",
        task_create_missing_queue_type="quorum",
        task_create_missing_queue_exchange_type="topic",
        broker_transport_options={"confirm_publish": True},
    )
    return out
