"""What the producer's calls raise when a job failed or names nothing stored.

Their own module, so the modules that carry out one request (``deletion``, ``report``)
raise them without importing ``api``, which calls them.
"""

from __future__ import annotations

from typing import Any


class JobFailed(RuntimeError):
    """The job ran and failed; ``status`` holds the recorded code and message."""

    def __init__(self, status: dict[str, Any]) -> None:
        error = status.get("error") or {}
        super().__init__(f"{error.get('code', 'failed')}: {error.get('message', '')}")
        self.status = status


class NotFound(LookupError):
    pass
