"""changewatch's Celery worker: ``celery -A changewatch.worker worker``."""

from .app import app

__all__ = ["app"]
