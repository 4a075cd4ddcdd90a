"""Where the database is: one variable, read by the producer, the worker and migrate."""

from __future__ import annotations

import os

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/changewatch"


def database_url() -> str:
    return os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
