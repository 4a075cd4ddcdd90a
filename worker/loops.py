"""A consumer step that runs one pass every few seconds in a thread of its own.

The recovery sweep and the outbox relay both work this way: the worker's own event
loop keeps serving (answering the sweep's broadcast among others) while a pass waits on
the broker or Postgres. One connection serves every pass; a pass that fails (the
service may be down) is tried again on a fresh connection after the interval. A
consumer restarted after a lost connection keeps the thread it has.
"""

from __future__ import annotations

import logging
import threading
from contextlib import AbstractContextManager
from typing import Any, Protocol

from celery import bootsteps

log = logging.getLogger(__name__)


class Passes(Protocol):
    """What a loop runs: ``once`` on a connection from ``connect``, every ``every_s``."""

    every_s: float

    def connect(self) -> AbstractContextManager[Any]: ...

    def once(self, conn: Any) -> Any: ...


class LoopStep(bootsteps.StartStopStep):
    """Subclasses say what runs (``passes``, None where it is not needed) and its names."""

    requires = ("celery.worker.consumer.tasks:Tasks",)
    label = "loop"  # what the log line calls it
    thread_name = "changewatch-loop"

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()

    def passes(self, parent: Any) -> Passes | None:
        raise NotImplementedError

    def start(self, parent: Any) -> None:
        if self.thread is not None and self.thread.is_alive():
            return  # the consumer restarts after a lost connection; one thread is enough
        passes = self.passes(parent)
        if passes is None:
            return
        self.stopping.clear()
        self.thread = threading.Thread(
            target=self._run,
            args=(passes,),
            name=self.thread_name,
            daemon=True,
        )
        self.thread.start()

    def _run(self, passes: Passes) -> None:
        while not self.stopping.is_set():
            try:
                with passes.connect() as conn:
                    while not self.stopping.is_set():
                        passes.once(conn)
                        self.stopping.wait(passes.every_s)
            except Exception as exc:
                log.warning("%s failed: %s: %s", self.label, type(exc).__name__, exc)
                self.stopping.wait(passes.every_s)

    def shutdown(self, parent: Any) -> None:
        self.stopping.set()
