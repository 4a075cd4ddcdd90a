"""The data tier's benches run end to end and report what they promise: bench.tiers (each
tier's cost per session) and bench.store.cost (WAL per session, by relation)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from bench.harness.faults.postgres_cluster import postgres_bindir
from bench.harness.process import have
from bench.harness.services import ROOT
from tests.helpers import require


def _run(*args: str) -> dict[str, Any]:
    require(have("redis-server"), "redis-server is not installed")
    require(postgres_bindir() is not None, "PostgreSQL server binaries (initdb) not found")
    proc = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_tiers_reports_each_tiers_cost_per_session_and_where_it_saturates() -> None:
    """Two brokers with their results beside them, people routed by user_id: each
    broker's share is reported as well."""
    out = _run("bench.tiers", "--workers", "2", "--concurrency", "1", "--sessions", "6",
               "--warmup", "2", "--brokers", "2")  # fmt: skip
    assert out["statuses"] == {"succeeded": 6}
    shares = [b["sessions_share"] for b in out["redis_per_session_by_broker"]]
    assert len(shares) == 2 and sum(shares) == 1.0
    busier, quieter = sorted(out["redis_per_session_by_broker"], key=lambda b: -b["sessions_share"])
    if busier["sessions_share"] > quieter["sessions_share"]:  # each carries its people's jobs
        assert busier["commands"] > quieter["commands"]
    cost = out["per_session"]
    assert cost["redis"]["commands"] > 0 and cost["redis"]["cpu_s"] > 0
    assert cost["postgres"]["statements"] > 0 and cost["postgres"]["wal_bytes"] > 0
    assert cost["s3"]["requests"] >= 1 and cost["s3"]["bytes"] > 0
    for tier in ("redis", "postgres"):
        assert out["saturation"][tier]["sessions_per_s"] > 0
    assert any("INSERT INTO angle_embeddings" in q for q in out["statements_per_session"])


def test_store_cost_finds_the_wal_in_the_embeddings_not_the_sums() -> None:
    """The person's sums are a checkpoint (migration 0011): most of a session's WAL is its
    embeddings, not the sums rewritten."""
    out = _run("bench.store.cost", "--people", "1", "--history", "10", "--warmup", "1",
               "--sessions", "10")  # fmt: skip
    by_relation = out["wal_by_relation_per_session"]
    assert out["wal_bytes_per_session"] > out["embedding_bytes_per_session"] > 0
    assert by_relation["angle_embeddings (TOAST)"] > by_relation["packed_sums (TOAST)"]
