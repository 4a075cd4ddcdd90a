"""Fault injection for changewatch: services the tests own, and ways to break them.

Everything here runs on loopback and in temporary folders, never against the machine's
shared Redis (6379) or Postgres cluster (5432). One module per part of the stack:

- ``redis_server.RedisServer``: a private ``redis-server`` with an append-only file, so
  queued and unacknowledged jobs survive a restart (``stop``/``start``/``restart``, hard
  or clean);
- ``postgres_cluster.PostgresCluster``: a throwaway cluster made with the Debian
  ``initdb``/``pg_ctl`` (run as the ``postgres`` user when we are root), stopped and
  started with ``pg_ctl``;
- ``patroni.PatroniCluster``: one etcd and two Postgres nodes under Patroni, synchronous
  replication, reached through a multi-host URL; ``kill_primary`` SIGKILLs the primary
  (its postmaster, or the whole node) and waits for the promotion;
- ``storage.TcpProxy``: a loopback TCP relay; stopping it makes the service behind it
  (moto's S3) refuse connections (and resets open ones) while its data stays intact;
- ``workers``: ``pause``/``resume``/``paused``/``kill9``, SIGSTOP/SIGCONT/SIGKILL for a
  process, so a server hangs (clients time out instead of being refused) or a worker
  dies mid-task;
- ``stack.FaultStack``: all of the above plus moto's S3 server and real workers, wired
  together with the shipped Celery settings, for ``tests/e2e/test_faults.py`` and
  ``python -m bench.soak``; ``series``: the real-photo sessions they send;
- ``audit``: what Postgres says after the faults (statuses, duplicates, orphans).

Every public name is importable from here: ``from bench.harness.faults import FaultStack``.
"""

from __future__ import annotations

from bench.harness.faults.audit import (
    Audit,
    Scores,
    audit,
    committed_lost,
    finished_count,
    same_scores,
    scores,
    succeeded_attempts,
    sums_mismatched,
    wait_final,
    wait_final_reaping,
    whereabouts,
)
from bench.harness.faults.patroni import PatroniCluster, patroni_available
from bench.harness.faults.postgres_cluster import PostgresCluster, postgres_bindir
from bench.harness.faults.redis_server import RedisServer
from bench.harness.faults.series import (
    ANGLES,
    BUCKET,
    SERIES_PLAN,
    T0,
    Job,
    send_histories,
    send_sessions,
    series_jobs,
    upload_series,
)
from bench.harness.faults.stack import FaultStack, celery_app
from bench.harness.faults.storage import TcpProxy
from bench.harness.faults.workers import kill9, pause, paused, resume
from bench.harness.process import have

__all__ = [
    "ANGLES",
    "BUCKET",
    "SERIES_PLAN",
    "T0",
    "Audit",
    "FaultStack",
    "Job",
    "PatroniCluster",
    "PostgresCluster",
    "RedisServer",
    "Scores",
    "TcpProxy",
    "audit",
    "celery_app",
    "committed_lost",
    "finished_count",
    "have",
    "kill9",
    "patroni_available",
    "pause",
    "paused",
    "postgres_bindir",
    "resume",
    "same_scores",
    "scores",
    "send_histories",
    "send_sessions",
    "series_jobs",
    "succeeded_attempts",
    "sums_mismatched",
    "upload_series",
    "wait_final",
    "wait_final_reaping",
    "whereabouts",
]
