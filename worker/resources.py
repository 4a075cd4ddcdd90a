"""What a worker process creates once at start and passes down to every task.

Built after any fork (nothing here may touch CUDA in a parent that forks), closed at
shutdown. Tasks get them from ``current()``.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
from psycopg_pool import ConnectionPool

from ..settings import Settings
from . import metrics, store
from .batch import MicroBatcher
from .embed import Embedder
from .fetch import make_s3_client

log = logging.getLogger(__name__)


@dataclass
class Resources:
    settings: Settings
    embedder: Embedder
    batcher: MicroBatcher
    db: ConnectionPool
    s3: Any
    fetch_pool: ThreadPoolExecutor
    # The active model as last read (and when): a cheap check before taking a job; the
    # write transaction checks again, so a stale answer can cost work, never a wrong row.
    _active: tuple[float, str | None] = (float("-inf"), None)

    @property
    def model_id(self) -> str:
        return self.embedder.model_id

    def model_is_active(self, max_age_s: float = 5.0) -> bool:
        checked, active = self._active
        if time.monotonic() - checked > max_age_s:
            active = store.active_model(self.db)
            self._active = (time.monotonic(), active)
        return active == self.model_id

    def forget_active_model(self) -> None:
        self._active = (float("-inf"), None)

    @classmethod
    def create(cls, settings: Settings) -> Resources:
        if settings.pipeline == "reference" and settings.precision == "int8":
            raise ValueError("CHANGEWATCH_PIPELINE=reference is the seed's fp32 model step")
        embedder = Embedder(
            settings.model_weights,
            settings.precision,
            fold_batchnorm=settings.pipeline == "fast",
            model=settings.model,
            model_cache=settings.model_cache,
        )
        embedder.setup(settings.device)
        metrics.MODEL.info(
            {
                "model_id": embedder.model_id,
                "device": str(embedder.device),
                "pipeline": settings.pipeline,
                "precision": settings.precision,
            }
        )
        if embedder.device.type == "cuda":
            metrics.GPU_MEMORY.set_function(lambda: torch.cuda.memory_allocated(embedder.device))
        max_batch = settings.max_batch or (64 if embedder.device.type == "cuda" else 8)
        batcher = MicroBatcher(embedder, max_batch, settings.max_wait_ms / 1000)
        batcher.start()
        # check: an empty query before a connection is handed out, so one left broken by
        # a database failover (Patroni) or restart is replaced (DATABASE_URL's
        # target_session_attrs finds the new primary) instead of failing a job's attempt.
        db = ConnectionPool(
            settings.database_url,
            min_size=1,
            max_size=settings.db_pool_max,
            open=True,
            name="changewatch-worker",
            check=ConnectionPool.check_connection,
        )
        return cls(
            settings=settings,
            embedder=embedder,
            batcher=batcher,
            db=db,
            s3=make_s3_client(settings),
            fetch_pool=ThreadPoolExecutor(max_workers=16, thread_name_prefix="fetch"),
        )

    def close(self) -> None:
        self.batcher.stop()
        self.fetch_pool.shutdown(wait=False, cancel_futures=True)
        self.db.close()


_lock = threading.Lock()
_current: Resources | None = None


def setup(settings: Settings | None = None) -> Resources:
    """Create this process's resources once; later calls return the same ones."""
    global _current
    with _lock:
        if _current is None:
            _current = Resources.create(settings or Settings.from_env())
        return _current


def current() -> Resources:
    return _current if _current is not None else setup()


def teardown() -> None:
    global _current
    with _lock:
        if _current is not None:
            _current.close()
            _current = None
