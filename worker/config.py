"""This worker process's settings, read from the environment once, when first needed.

Their own module, so the consumer steps that ``worker.app`` adds (the relay, the
dead-letter pass) read them without importing the app that imports them.
"""

from __future__ import annotations

import functools

from ..settings import Settings


@functools.cache
def settings() -> Settings:
    """This worker's settings: read from the environment once, when first needed."""
    return Settings.from_env()
