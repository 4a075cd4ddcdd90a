"""changewatch's Celery worker: ``celery -A changewatch.worker worker``."""

from changewatch.worker.app import app

__all__ = ["app"]
