"""changewatch's producer: validate a session job and enqueue it (Python API and CLI)."""

from ..schema.contract import ANALYZE_TASK, ANGLES, COMPARE_TASK, QUEUE, JobError
from .api import JobFailed, NotFound, Producer

__all__ = [
    "ANALYZE_TASK",
    "ANGLES",
    "COMPARE_TASK",
    "QUEUE",
    "JobError",
    "JobFailed",
    "NotFound",
    "Producer",
]
