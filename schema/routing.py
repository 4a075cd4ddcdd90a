"""Several brokers, each person's messages on one of them, chosen by user_id.

One Redis runs its commands on one thread: at about 16 commands a session it carries
some 1,200-6,000 sessions/s, 7-37 GPUs at 1,000 photos/s (docs/scaling.md,
``python -m bench.tiers``); 100 GPUs need several. Sentinel adds failover, not capacity.
So a deployment may list its brokers (``CHANGEWATCH_BROKERS``) and every message about a
person, jobs and notifications alike, goes to the broker ``contract.broker_index`` names:
a rule senders in any language compute the same way. Each worker consumes from one broker
(its ``CELERY_BROKER_URL``), so a worker group serves each broker; operators run one
Flower per broker. Results split the same way when ``CHANGEWATCH_RESULT_BACKENDS`` pairs a
result backend with each broker (a person's task results are then in their broker's).

Nothing about correctness depends on the routing: a person's writes are serialized by
their row lock in Postgres and ordered by request sequence, so jobs of one person on two
brokers (while the list of brokers changes, say) still end right; the reaper reads every
broker before it calls a job lost.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING
from uuid import UUID

from celery import Celery

from . import brokers as broker_kinds
from .contract import broker_index

if TYPE_CHECKING:
    from ..settings import Settings


def sending_app(settings: Settings) -> Celery:
    """A Celery app that only sends, to ``settings.broker_url``: configured like the
    workers', no tasks imported (the producer, the relay, the reaper)."""
    from ..celeryconfig import celery_config  # celeryconfig imports the broker seam

    app = Celery("changewatch-producer")
    app.config_from_object(celery_config(settings))
    # Celery prefers $CELERY_BROKER_URL to ``broker_url``, not to these: each app of a
    # deployment's several brokers must reach its own, whatever the environment says.
    app.conf.broker_write_url = app.conf.broker_read_url = settings.broker_url
    # It waits on Postgres, never on a result: no SUBSCRIBE per job sent.
    app.backend_cls = broker_kinds.producer_backend(settings)
    return app


class Brokers:
    """The deployment's brokers as Celery apps, made when first used: ``own`` serves
    ``settings.broker_url``, the others are sending apps like it."""

    def __init__(self, settings: Settings, own: Celery) -> None:
        self.settings = settings
        self.urls: tuple[str, ...] = settings.brokers or (settings.broker_url,)
        self._apps: dict[str, Celery] = {settings.broker_url: own}

    def app(self, url: str) -> Celery:
        if url not in self._apps:
            self._apps[url] = sending_app(
                replace(self.settings, broker_url=url, result_backend=self.results_for(url))
            )
        return self._apps[url]

    def results_for(self, url: str) -> str:
        """The result backend paired with this broker (the one, when not paired)."""
        pairs = self.settings.result_backends
        return pairs[self.urls.index(url)] if pairs else self.settings.result_backend

    def url_for(self, user_id: UUID | str) -> str:
        return self.urls[broker_index(user_id, len(self.urls))]

    def for_user(self, user_id: UUID | str) -> Celery:
        """The app whose broker takes every message about this person."""
        return self.app(self.url_for(user_id))

    def every(self) -> list[Celery]:
        """One app per broker, in routing order: what reads or asks all of them."""
        return [self.app(url) for url in self.urls]

    def every_backend(self) -> list[Celery]:
        """One app per distinct result backend: what looks for stored results."""
        seen: dict[str, Celery] = {}
        for url in self.urls:
            seen.setdefault(self.results_for(url), self.app(url))
        return list(seen.values())

    def close(self) -> None:
        """Release the connection pools of the apps made here (not ``own``'s)."""
        for url, app in self._apps.items():
            if url != self.settings.broker_url:
                app.close()
