"""Structured logs: one JSON object per line, with job and session ids on job events.

Never image bytes or credentials: only what is passed explicitly in ``extra`` fields
listed in ``FIELDS`` is written besides the message.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

FIELDS = (
    "event",
    "task",
    "task_id",
    "session_id",
    "stage",
    "seconds",
    "outcome",
    "error_code",
    "attempt",
    "images",
    "batch_images",
    "batch_sessions",
)

job_log = logging.getLogger("changewatch.jobs")
# The ids of the job this thread runs, bound once by the task wrapper (worker.outcome), so
# every stage line carries them without each stage being handed them.
_job: ContextVar[dict[str, Any] | None] = ContextVar("changewatch_job", default=None)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.processName,
            "thread": record.threadName,
        }
        for name in FIELDS:
            if name in record.__dict__:
                out[name] = record.__dict__[name]
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def use_json(logger: logging.Logger, log_format: str = "json") -> None:
    """Switch every handler of ``logger`` to JSON lines, unless the format is ``text``
    (``CHANGEWATCH_LOG_FORMAT``)."""
    if log_format == "text":
        return
    for handler in logger.handlers:
        handler.setFormatter(JsonFormatter())


@contextmanager
def job_ids(**ids: Any) -> Iterator[None]:
    """Bind the running job's ids (task_id, session_id) to every job_event inside."""
    token = _job.set(ids)
    try:
        yield
    finally:
        _job.reset(token)


def job_event(message: str, **fields: Any) -> None:
    merged = {**(_job.get() or {}), **fields}
    job_log.info(message, extra={k: v for k, v in merged.items() if k in FIELDS})
