"""The Celery app and the worker's lifecycle hooks.

Resources (model, DB pool, S3 client) are built once per worker process: in the child
after the fork for prefork, or in the worker itself for the threads/solo pools, before
it starts consuming, so the first job never waits for a cold model.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, signals
from celery.concurrency import get_implementation
from celery.concurrency.prefork import TaskPool as PreforkPool

from worker.logs import use_json
from worker.metrics import serve_from_env as metrics_server

log = logging.getLogger(__name__)

app = Celery("changewatch", include=["worker.tasks"])
app.config_from_object("celeryconfig")


def _setup() -> None:
    # Imported here so that producers importing worker.settings never load torch.
    from worker import resources

    try:
        resources.setup()
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
    use_json(logger)


@signals.worker_init.connect
def before_worker_start(sender: Any = None, **_: Any) -> None:
    if not _is_prefork(getattr(sender, "pool_cls", None) or app.conf.worker_pool):
        _setup()
        # One process holds every task: its registry is the whole worker's.
        try:
            port = metrics_server(app.conf.broker_url, [app.conf.task_default_queue])
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
    from worker import resources

    resources.teardown()
