"""Structured logs: one JSON object per line, with job and session ids on job events.

Never image bytes or credentials: only what is passed explicitly in ``extra`` fields
listed in ``FIELDS`` is written besides the message.
"""

from __future__ import annotations

import json
import logging
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


def job_event(message: str, **fields: Any) -> None:
    job_log.info(message, extra={k: v for k, v in fields.items() if k in FIELDS})
