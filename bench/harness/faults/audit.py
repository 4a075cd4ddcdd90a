"""What Postgres (and the broker) say after the faults: statuses, duplicates, orphans."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import psycopg
import redis

from bench.harness.faults.series import ANGLES
from changewatch.producer import Producer, reaper


@dataclass
class Audit:
    sessions: int
    status: dict[str, int]
    min_attempts: int
    redelivered: int  # sessions that started more than once (attempts > 1)
    missing: int  # expected sessions without a row
    bad_analyses: int  # sessions without exactly one analyses row
    bad_embeddings: int  # sessions whose angle_embeddings count differs from their images
    bad_sums: int  # people whose running baseline sums differ from their stored embeddings
    duplicated: int  # more than one analyses row, or a repeated angle
    unordered: int  # analyses whose per_angle list is not in the contract's angle order
    orphans: dict[str, int]
    unfinished: list[str]

    @property
    def clean(self) -> bool:
        return (
            self.missing == 0
            and self.status.get("succeeded", 0) == self.sessions
            and self.min_attempts >= 1
            and self.bad_analyses == 0
            and self.bad_embeddings == 0
            and self.bad_sums == 0
            and self.unordered == 0
            and not any(self.orphans.values())
        )


def sums_mismatched(dsn: str, users: set[uuid.UUID]) -> int:
    """People whose running sums (kept incrementally by every write) are not exactly the
    sums of their stored embeddings, for any model."""
    from changewatch.worker.store import load_totals, rebuild_totals

    bad = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        for user in users:
            models = conn.execute(
                "SELECT DISTINCT model_id FROM analyses WHERE user_id = %s", (user,)
            ).fetchall()
            for (model,) in models:
                kept = load_totals(conn, user, model)
                truth = rebuild_totals(conn, user, model)
                same = kept is not None and kept.sessions == truth.sessions
                for angle, (count, total) in truth.angles.items():
                    stored = kept.angles.get(angle) if kept else None
                    same = same and stored is not None and stored[0] == count
                    same = same and stored is not None and bool((stored[1] == total).all())
                bad += not same
    return bad


def audit(dsn: str, expected: Mapping[uuid.UUID, int]) -> Audit:
    """Check the sessions in ``expected`` (session id -> number of images) in Postgres."""
    ids = list(expected)
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            """
            SELECT s.session_id, s.status, s.attempts,
                   (SELECT count(*) FROM analyses a WHERE a.session_id = s.session_id),
                   (SELECT count(*) FROM angle_embeddings e WHERE e.session_id = s.session_id),
                   (SELECT count(DISTINCT e.angle) FROM angle_embeddings e
                     WHERE e.session_id = s.session_id),
                   s.user_id,
                   (SELECT a.per_angle FROM analyses a WHERE a.session_id = s.session_id)
              FROM sessions s WHERE s.session_id = ANY(%s)
            """,
            (ids,),
        ).fetchall()
        orphans = {}
        for table in ("angle_embeddings", "analyses"):
            row = conn.execute(
                f"SELECT count(*) FROM {table} t"  # fixed table names
                " WHERE NOT EXISTS (SELECT 1 FROM sessions s WHERE s.session_id = t.session_id)"
            ).fetchone()
            orphans[table] = int(row[0]) if row else 0
        row = conn.execute(
            "SELECT count(*) FROM comparisons c WHERE NOT EXISTS (SELECT 1 FROM sessions s"
            " WHERE s.session_id IN (c.current_session_id, c.previous_session_id))"
        ).fetchone()
        orphans["comparisons"] = int(row[0]) if row else 0
    status: dict[str, int] = {}
    bad_analyses = bad_embeddings = redelivered = duplicated = 0
    min_attempts = min((r[2] for r in rows), default=0)
    unfinished = []
    unordered = 0
    for sid, state, attempts, n_analyses, n_emb, n_distinct, _, per_angle in rows:
        listed = [p["angle"] for p in per_angle or []]
        unordered += listed != sorted(listed, key=ANGLES.index)
        status[state] = status.get(state, 0) + 1
        redelivered += attempts > 1
        bad_analyses += n_analyses != 1
        bad_embeddings += not (n_emb == n_distinct == expected[sid])
        duplicated += n_analyses > 1 or n_emb > n_distinct
        if state not in ("succeeded", "failed"):
            unfinished.append(f"{sid}:{state}")
    return Audit(
        sessions=len(ids),
        status=status,
        min_attempts=min_attempts,
        redelivered=redelivered,
        missing=len(ids) - len(rows),
        bad_analyses=bad_analyses,
        bad_embeddings=bad_embeddings,
        bad_sums=sums_mismatched(dsn, {r[6] for r in rows}),
        duplicated=duplicated,
        unordered=unordered,
        orphans=orphans,
        unfinished=unfinished,
    )


def whereabouts(dsn: str, broker: redis.Redis, ids: Sequence[uuid.UUID]) -> list[str]:
    """For each unfinished session: its status and attempts, and where its message is.

    ``queue`` (waiting), ``unacked`` (delivered, not acknowledged: the recovery sweep
    puts it back once no live worker holds it) or ``nowhere`` (the broker has lost it).
    """
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT session_id, status, attempts, task_id FROM sessions"
            " WHERE session_id = ANY(%s) AND status NOT IN ('succeeded', 'failed')",
            (list(ids),),
        ).fetchall()
    if not rows:
        return []
    queued = {json.loads(m)["headers"]["id"] for m in broker.lrange("changewatch", 0, -1)}
    unacked = {json.loads(v)[0]["headers"]["id"] for v in broker.hvals("unacked")}
    return [
        f"{sid} {status} attempts={attempts} message="
        + ("queue" if task in queued else "unacked" if task in unacked else "nowhere")
        for sid, status, attempts, task in rows
    ]


def finished_count(dsn: str, ids: Sequence[uuid.UUID]) -> dict[str, int]:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=3) as conn:
        rows = conn.execute(
            "SELECT status, count(*) FROM sessions WHERE session_id = ANY(%s) GROUP BY status",
            (list(ids),),
        ).fetchall()
    return {state: int(n) for state, n in rows}


def wait_final(
    dsn: str, ids: Sequence[uuid.UUID], timeout: float, poll: float = 0.2
) -> dict[str, int]:
    """``finished_count`` once every session is succeeded or failed; TimeoutError else."""
    deadline = time.monotonic() + timeout
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        counts = finished_count(dsn, ids)
        if counts.get("succeeded", 0) + counts.get("failed", 0) == len(ids):
            return counts
        time.sleep(poll)
    raise TimeoutError(f"sessions not final after {timeout}s: {counts}")


def wait_final_reaping(
    dsn: str, producer: Producer, ids: Sequence[uuid.UUID], timeout: float
) -> dict[str, int]:
    """``finished_count`` once every session is final, or at ``timeout``; meanwhile a
    reaper pass every 30 s, as compose runs it (a failed pass is printed: the broker or
    database may be the thing failing over)."""
    began = last_reap = time.monotonic()
    counts: dict[str, int] = {}
    while time.monotonic() - began < timeout:
        counts = finished_count(dsn, ids)
        if counts.get("succeeded", 0) + counts.get("failed", 0) == len(ids):
            break
        if time.monotonic() - last_reap > 30:
            try:
                print(f"reaper: {reaper.reap(producer).report()}")
            except Exception as exc:
                print(f"reaper pass failed: {exc!r}")
            last_reap = time.monotonic()
        time.sleep(0.2)
    return counts


def succeeded_attempts(dsn: str) -> dict[uuid.UUID, int]:
    """Every succeeded session and its attempts, as the database shows them now."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=3) as conn:
        rows = conn.execute(
            "SELECT session_id, attempts FROM sessions WHERE status = 'succeeded'"
        ).fetchall()
    return {sid: int(n) for sid, n in rows}


def committed_lost(dsn: str, before: Mapping[uuid.UUID, int]) -> list[uuid.UUID]:
    """Sessions ``before`` (``succeeded_attempts`` then) that are no longer succeeded with
    no attempt since: their success was rolled back, not run again.

    A job whose COMMIT reached the standby while its connection died gets an error and
    runs again (a new attempt, the same numbers); that is not a lost result.
    """
    with psycopg.connect(dsn, autocommit=True, connect_timeout=3) as conn:
        rows = conn.execute(
            "SELECT session_id, status, attempts FROM sessions WHERE session_id = ANY(%s)",
            (list(before),),
        ).fetchall()
    now = {sid: (status, int(n)) for sid, status, n in rows}
    return [
        sid
        for sid, attempts in before.items()
        if sid not in now or (now[sid][0] != "succeeded" and now[sid][1] == attempts)
    ]


Scores = tuple[float, int, dict[str, float]]


def scores(dsn: str, ids: Sequence[uuid.UUID]) -> list[Scores]:
    """(change score, baseline count, {angle: score}) of each session, in ``ids`` order."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = {
            sid: (
                float(change),
                int(count),
                {a["angle"]: float(a["change_score"]) for a in per_angle},
            )
            for sid, change, count, per_angle in conn.execute(
                "SELECT session_id, change_score, baseline_session_count, per_angle"
                " FROM analyses WHERE session_id = ANY(%s)",
                (list(ids),),
            )
        }
    return [rows[sid] for sid in ids]


def same_scores(got: Scores, want: Scores, tolerance: float = 1e-6) -> bool:
    """Equal baseline counts and angles, every score within ``tolerance``."""
    (a, na, pa), (b, nb, pb) = got, want
    return (
        na == nb
        and pa.keys() == pb.keys()
        and abs(a - b) <= tolerance
        and all(abs(pa[k] - pb[k]) <= tolerance for k in pa)
    )
