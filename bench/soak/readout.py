"""What the soak reads back from Postgres and the workers' logs once the faults are over."""

from __future__ import annotations

import collections
import contextlib
import json
import uuid
from collections.abc import Container
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from bench.harness.faults.audit import Scores, same_scores, scores
from bench.harness.faults.series import Job
from changewatch.worker.store import decode_vector


def in_state(dsn: str, status: str) -> list[uuid.UUID]:
    with psycopg.connect(dsn, connect_timeout=3) as conn:
        return [
            r[0]
            for r in conn.execute("SELECT session_id FROM sessions WHERE status = %s", (status,))
        ]


def recovery_seconds(dsn: str, kills: list[tuple[datetime, list[uuid.UUID]]]) -> list[float]:
    """Per kill: seconds until the last session running at that moment finished (the
    killed worker's jobs, put back by the recovery sweep, are the slowest)."""
    out = []
    with psycopg.connect(dsn) as conn:
        for killed_at, running in kills:
            row = conn.execute(
                "SELECT max(finished_at) FROM sessions WHERE session_id = ANY(%s)", (running,)
            ).fetchone()
            if row and row[0]:
                out.append(round((row[0] - killed_at).total_seconds(), 1))
    return out


def restarted_after(dsn: str, when: datetime) -> float | None:
    """Seconds from ``when`` until the first session started after it had finished (a
    later attempt overwrites ``started_at``, so this can only be later than the truth)."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT min(finished_at) FROM sessions WHERE started_at > %s AND status = 'succeeded'",
            (when,),
        ).fetchone()
    return round((row[0] - when).total_seconds(), 1) if row and row[0] else None


def embeddings(dsn: str, ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, np.ndarray]]:
    """Each session's stored angle embeddings."""
    out: dict[uuid.UUID, dict[str, np.ndarray]] = collections.defaultdict(dict)
    with psycopg.connect(dsn) as conn, conn.cursor(binary=True) as cur:
        cur.execute(
            "SELECT session_id, angle, embedding FROM angle_embeddings WHERE session_id = ANY(%s)",
            (ids,),
        )
        for sid, angle, vector in cur:
            out[sid][angle] = decode_vector(vector)
    return out


def rescore(dsn: str, user: uuid.UUID) -> dict[uuid.UUID, list[Any]]:
    """The user's analyses recomputed now from the stored embeddings (as a write would)."""
    from changewatch.worker.store import history_scores

    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT a.model_id FROM analyses a JOIN sessions s USING (session_id)"
            " WHERE s.user_id = %s LIMIT 1",
            (user,),
        ).fetchone()
        if row is None:
            return {}
        analyses = history_scores(conn, user, row[0])
    return {
        a.session_id: [a.change_score, [p["change_score"] for p in a.per_angle]] for a in analyses
    }


def history_rows(dsn: str, user: uuid.UUID) -> list[dict[str, Any]]:
    """The user's sessions as stored: job state, analysis and when it was computed."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            """
            SELECT s.session_id, s.captured_at, s.status, s.attempts, s.started_at,
                   s.finished_at, a.change_score, a.baseline_session_count, a.per_angle,
                   a.computed_at,
                   (SELECT count(*) FROM angle_embeddings e WHERE e.session_id = s.session_id)
              FROM sessions s LEFT JOIN analyses a USING (session_id)
             WHERE s.user_id = %s ORDER BY s.captured_at
            """,
            (user,),
        ).fetchall()
    keys = ("session_id", "captured_at", "status", "attempts", "started_at", "finished_at",
            "change_score", "baseline", "per_angle", "computed_at", "angles")  # fmt: skip
    return [
        {
            k: v if isinstance(v, (int, float, list)) else str(v)
            for k, v in zip(keys, r, strict=True)
        }
        for r in rows
    ]


def stored_counts(logs: list[Path]) -> collections.Counter[str]:
    """How many executions wrote each session's analysis, from the workers' JSON logs."""
    counts: collections.Counter[str] = collections.Counter()
    for path in logs:
        for line in path.read_text(errors="replace").splitlines():
            if '"analysis stored"' not in line:
                continue
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if record.get("message") == "analysis stored":
                    counts[record["session_id"]] += 1
    return counts


def codes_and_analyses(dsn: str, sent: list[uuid.UUID]) -> tuple[dict[Any, int], dict[Any, int]]:
    """Failed sessions per error code, and analyses rows per session, of the sent ones."""
    with psycopg.connect(dsn) as conn:
        codes = dict(
            conn.execute(
                "SELECT error_code, count(*) FROM sessions WHERE session_id = ANY(%s)"
                " AND status = 'failed' GROUP BY error_code",
                (sent,),
            ).fetchall()
        )
        analyses_rows = dict(
            conn.execute(
                "SELECT session_id, count(*) FROM analyses WHERE session_id = ANY(%s)"
                " GROUP BY session_id",
                (sent,),
            ).fetchall()
        )
    return codes, analyses_rows


@dataclass
class Comparison:
    """Every finished history against the undisturbed in-order reference run."""

    dsn: str
    reference: list[Scores]
    reference_vectors: list[dict[str, np.ndarray]]
    stored: collections.Counter[str]
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    max_score_diff: float = 0.0
    max_embedding_diff: float = 0.0

    @classmethod
    def of(
        cls,
        dsn: str,
        jobs: list[Job],
        analysed: Container[uuid.UUID],
        reference: tuple[list[uuid.UUID], list[Scores]],
        stored: collections.Counter[str],
    ) -> Comparison:
        """``reference``: the in-order run's session ids and their scores."""
        ids, reference_scores = reference
        vectors = embeddings(dsn, ids)
        out = cls(dsn, reference_scores, [vectors[i] for i in ids], stored)
        by_user: dict[uuid.UUID, list[Job]] = collections.defaultdict(list)
        for job in jobs:
            by_user[job.user_id].append(job)
        for history in by_user.values():
            history.sort(key=lambda j: j.index)
            # An unfinished history cannot match; it is counted as lost or failed.
            if all(j.session_id in analysed for j in history):
                out.check(history)
        return out

    def check(self, history: list[Job]) -> None:
        """One user's sessions, in capture order, against the reference's."""
        got = scores(self.dsn, [j.session_id for j in history])
        vectors = embeddings(self.dsn, [j.session_id for j in history])
        for job, (a, na, pa) in zip(history, got, strict=True):
            b, nb, pb = self.reference[job.index]
            diff = max([abs(a - b)] + [abs(pa[k] - pb.get(k, float("inf"))) for k in pa])
            # The same photos were embedded in other micro-batches than the reference's.
            mine, theirs = vectors[job.session_id], self.reference_vectors[job.index]
            emb = max(float(np.abs(mine[k] - theirs[k]).max()) for k in mine)
            self.max_score_diff = max(self.max_score_diff, diff)
            self.max_embedding_diff = max(self.max_embedding_diff, emb)
            if not same_scores((a, na, pa), (b, nb, pb)):
                self.mismatches.append(
                    {
                        "session_id": str(job.session_id),
                        "user_id": str(job.user_id),
                        "index": job.index,
                        "score_diff": diff,
                        "baseline_counts": [na, nb],
                        "max_embedding_diff": emb,
                        "stored": self.stored.get(str(job.session_id), 0),
                        "got": [a, pa],
                        "reference": [b, pb],
                        "rescored_now": rescore(self.dsn, job.user_id)[job.session_id],
                        "history": history_rows(self.dsn, job.user_id),
                    }
                )
