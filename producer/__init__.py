"""changewatch's producer: validate a session job and enqueue it (Python API and CLI)."""

from changewatch.producer.api import JobFailed, NotFound, Producer
from changewatch.schema.contract import ANALYZE_TASK, ANGLES, COMPARE_TASK, QUEUE, JobError

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
