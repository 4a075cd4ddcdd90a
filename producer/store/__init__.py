"""Postgres, as the producer reads and writes it: one module per table it owns.

people (``users``, ``forgotten_users`` and what forget-user deletes), sessions
(``sessions``, ``analysis_requests``, ``rejected_messages``), comparisons, models
(``models``, ``backfill_jobs``), and lost (the reaper's rule for ``sessions`` and
``comparisons`` rows whose message is gone). The worker's side of the same tables is
worker.store; the public result objects are read in schema.results. Every statement the
producer runs is here: api, admin, bulk, models and the reaper call these with a
connection from ``Producer.connect`` (rows as dicts).
"""

from typing import Any

import psycopg

# What every module here takes and returns: a connection from ``Producer.connect`` and
# its rows, as dicts.
Conn = psycopg.Connection[Any]
Row = dict[str, Any]
