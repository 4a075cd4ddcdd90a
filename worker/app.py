"""The Celery app and the worker's lifecycle hooks.

Resources (model, DB pool, S3 client) are built once per worker process: in the child
after the fork for prefork, or in the worker itself for the threads/solo pools, before
it starts consuming, so the first job never waits for a cold model.
"""

from __future__ import annotations

import logging
import time
from functools import cached_property
from typing import Any

from celery import Celery, signals
from celery.apps.worker import Worker as CeleryWorker
from celery.concurrency import get_implementation
from celery.concurrency.prefork import TaskPool as PreforkPool

from ..celeryconfig import celery_config
from .config import settings
from .dead_letters import DeadLetterStep
from .logs import use_json
from .metrics import serve as metrics_server
from .recovery import Recovery
from .relay import RelayStep

log = logging.getLogger(__name__)


class _Worker(CeleryWorker):
    """``celery worker`` with changewatch's heartbeat interval unless one is given."""

    def setup_instance(self, heartbeat_interval: float | None = None, **kwargs: Any) -> None:
        interval = heartbeat_interval or self.app.conf.get("changewatch_heartbeat_s")
        super().setup_instance(heartbeat_interval=interval, **kwargs)


class _App(Celery):
    @cached_property
    def Worker(self) -> Any:  # Celery's name
        return self.subclass_with_self(f"{__name__}:_Worker")


app = _App("changewatch", include=["changewatch.worker.tasks", "changewatch.worker.person_tasks"])
# A promise: Celery reads it on first use of app.conf, not when this module is imported.
app.add_defaults(lambda: celery_config(settings()))
app.steps["consumer"].add(Recovery)
app.steps["consumer"].add(RelayStep)
app.steps["consumer"].add(DeadLetterStep)


def _setup() -> None:
    # Imported here so that importing worker.app never loads torch.
    from . import resources

    try:
        resources.setup(settings())
    except Exception as exc:
        # Celery logs and swallows exceptions from signal handlers; a worker without its
        # model or database must not start consuming jobs it can only fail.
        log.critical("worker cannot start: %s", exc)
        raise SystemExit(f"changewatch worker cannot start: {exc}") from exc


def _is_prefork(pool_cls: Any) -> bool:
    cls = get_implementation(pool_cls)
    return isinstance(cls, type) and issubclass(cls, PreforkPool)


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def after_logging_setup(logger: logging.Logger, **_: Any) -> None:
    use_json(logger, settings().log_format)


def _choose_queues() -> None:
    """Consume this model's backfill queue always, the jobs queue only while it is active.

    Workers of a model that is not the active one never take analyze jobs, so two models
    on one deployment never split a person's history; ``producer model activate`` moves
    the jobs queue to the new model's workers (Celery's add_consumer/cancel_consumer).
    """
    import psycopg

    from ..schema.contract import QUEUE, backfill_queue
    from . import store
    from .embed import architecture, model_id_for

    s = settings()
    if s.precision == "int8":
        from .int8 import check_allowed

        check_allowed(s.model)  # a refused INT8 model never registers its id
    model_id = model_id_for(s.model_weights, s.model, s.precision)
    deadline = time.monotonic() + 120  # a worker may start while Postgres restarts
    while True:
        try:
            with psycopg.connect(s.database_url, autocommit=True, connect_timeout=10) as conn:
                active = store.register_model(conn, model_id, architecture(s.model).dim)
            break
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("cannot register the model yet (%s); retrying", exc)
            time.sleep(2)
    queues = app.amqp.queues
    queues.select_add(backfill_queue(model_id))
    if active != model_id:
        if QUEUE in queues.consume_from:
            queues.deselect([QUEUE])
        log.warning(
            "model %s is not the active model (%s): consuming only %s until it is activated",
            model_id,
            active,
            backfill_queue(model_id),
        )


@signals.worker_init.connect
def before_worker_start(sender: Any = None, **_: Any) -> None:
    try:
        _choose_queues()
    except Exception as exc:
        log.critical("worker cannot start: %s", exc)
        raise SystemExit(f"changewatch worker cannot start: {exc}") from exc
    if not _is_prefork(getattr(sender, "pool_cls", None) or app.conf.worker_pool):
        _setup()
        # One process holds every task: its registry is the whole worker's.
        try:
            port = metrics_server(settings(), [app.conf.task_default_queue])
        except OSError as exc:
            log.error("metrics not served: %s", exc)
        else:
            if port:
                log.info("metrics on :%d/metrics", port)


@signals.worker_process_init.connect
def before_child_start(**_: Any) -> None:
    _setup()


@signals.worker_shutdown.connect
@signals.worker_process_shutdown.connect
def after_worker_stop(**_: Any) -> None:
    from . import resources

    resources.teardown()
