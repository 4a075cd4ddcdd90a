"""changewatch's Celery worker: ``celery -A worker worker``."""

from worker.app import app

__all__ = ["app"]
