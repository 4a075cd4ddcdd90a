"""The incremental analysis write: ``angle_embeddings``, ``analyses`` and ``packed_sums``.

The store keeps numbers true without reading a person's history:

- Baselines come from running sums per person, model and angle (``packed_sums``, exact
  int64 fixed point), updated in the analysis's own transaction under the person's
  lock (a row lock on their ``users`` row). An appended session reads those sums and
  nothing else; one captured before others rescales only the sessions captured at or
  after it.
- The stored sums are a checkpoint, written every ``SUMS_EVERY`` sessions: they cover
  the analyses marked ``summed``, and a write adds the embeddings of the few others (read
  with the history) to get the exact sums. Rewriting ~150 KiB of sums on every session
  was most of its WAL (bench.store.cost; migration 0011). They are stored packed
  (``schema.vectors.encode_sum``): ~83 KB for six angles with their regions, not 154 KB.
- A write is opened (lock, guard, history read in one round trip), scored by
  ``score.rescore`` while the lock is held, then saved: the caller sees each step.
- Embeddings and analyses are keyed by model. Only workers of the active model write
  analyze results (checked inside the transaction); other models' rows come from backfills.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import numpy as np
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from ...schema.contract import ANGLES, AnalyzeJob
from ...schema.errors import Code, JobError
from .. import score
from ..score import Analysis, History, Removal, Rescore, Scored, StoredSession, Totals
from .jobs import NEWEST_REQUEST, Superseded, check_not_deleted, succeeded
from .models import ModelNotActive
from .people import check_user, lock_user
from .vectors import (
    Conn,
    decode_grid,
    decode_grid_sum,
    decode_sum,
    decode_vector,
    encode_sum,
    encode_vector,
)

# The stored sums: packed (``packed_sums``), or raw (``baseline_sums``) where a worker of
# the release before the packing stored them last (migration 0012): read both, the raw
# ones win (a packed write deletes them). One statement; ``raw`` says which table.
_TOTALS_SQL = """
    SELECT false AS raw, angle, sessions, total, region_sessions, region_total
      FROM packed_sums WHERE user_id = %(uid)s AND model_id = %(model)s
    UNION ALL
    SELECT true, angle, sessions, total, region_sessions, region_total
      FROM baseline_sums WHERE user_id = %(uid)s AND model_id = %(model)s
"""
# The sessions not in the stored sums yet (the checkpoint's tail), with their embeddings.
_TAIL_SQL = """
    SELECT a.session_id, e.angle, e.embedding, e.regions
      FROM analyses a JOIN angle_embeddings e USING (user_id, session_id, model_id)
     WHERE a.user_id = %(uid)s AND a.model_id = %(model)s AND NOT a.summed
"""
# Once this many sessions would be outside the stored sums, a write stores them again:
# packed sums cost ~83 KB of WAL (six angles, regions included) against ~77 KB of
# embeddings per session, and a write reads at most this many sessions' embeddings more.
# Measured (docs/benchmarks.md, 2026-12-07): 16 would save ~5.7 KB of WAL per session
# (5%) for ~0.7 ms more writer CPU and ~0.4 ms more Postgres CPU (the longer tail read),
# on a store whose bound is CPU; 8 stays.
SUMS_EVERY = 8
_SUMMED_SQL = (
    "UPDATE analyses SET summed = true WHERE user_id = %s AND model_id = %s AND NOT summed"
)
_SESSIONS_SQL = """
    SELECT a.session_id, a.captured_at, a.change_score, a.is_first_session,
           a.baseline_session_count, a.per_angle, e.angle, e.embedding, e.regions
      FROM analyses a JOIN angle_embeddings e USING (user_id, session_id, model_id)
     WHERE a.user_id = %(uid)s AND a.model_id = %(model)s
"""
# The sessions a write rescores: captured at or after the earlier of the session's new
# capture time and the one its current analysis has (it moves, or it arrives late).
_SUFFIX_SQL = (
    _SESSIONS_SQL
    + """
       AND a.captured_at >= LEAST(%(at)s, COALESCE(
           (SELECT captured_at FROM analyses
             WHERE user_id = %(uid)s AND session_id = %(sid)s AND model_id = %(model)s),
           %(at)s))
"""
)
_ANALYSIS_SQL = """
    INSERT INTO analyses (session_id, model_id, user_id, captured_at, request_seq,
                          embedding_dim, change_score, is_first_session,
                          baseline_session_count, per_angle, summed)
    VALUES (%(sid)s, %(model)s, %(uid)s, %(at)s, %(seq)s, %(dim)s, %(change)s,
            %(first)s, %(count)s, %(per_angle)s, %(summed)s)
    ON CONFLICT (user_id, session_id, model_id) DO UPDATE
       SET captured_at = EXCLUDED.captured_at,
           request_seq = EXCLUDED.request_seq, embedding_dim = EXCLUDED.embedding_dim,
           change_score = EXCLUDED.change_score,
           is_first_session = EXCLUDED.is_first_session,
           baseline_session_count = EXCLUDED.baseline_session_count,
           per_angle = EXCLUDED.per_angle, summed = EXCLUDED.summed, computed_at = now(),
           revision = CASE
               WHEN (analyses.captured_at, analyses.change_score,
                     analyses.is_first_session, analyses.baseline_session_count,
                     analyses.per_angle)
                    IS NOT DISTINCT FROM
                    (EXCLUDED.captured_at, EXCLUDED.change_score,
                     EXCLUDED.is_first_session, EXCLUDED.baseline_session_count,
                     EXCLUDED.per_angle)
               THEN analyses.revision ELSE nextval('analysis_revision') END
"""
_RESCORED_SQL = """
    UPDATE analyses SET change_score = %s, is_first_session = %s,
           baseline_session_count = %s, per_angle = %s, computed_at = now(),
           revision = nextval('analysis_revision')
     WHERE user_id = %s AND session_id = %s AND model_id = %s
"""
# One statement per table (unnest), not one per row: the bound is CPU, not I/O.
_EMBEDDINGS_SQL = (
    "INSERT INTO angle_embeddings (user_id, session_id, angle, model_id, embedding, regions)"
    " SELECT %s, %s, angle, %s, embedding, regions"
    "   FROM unnest(%s::text[], %b::bytea[], %b::bytea[]) AS u(angle, embedding, regions)"
)
_SUMS_SQL = (
    "INSERT INTO packed_sums (user_id, model_id, angle, sessions, total,"
    "                           region_sessions, region_total)"
    " SELECT %s, %s, angle, n, total, rn, rtotal"
    "   FROM unnest(%s::text[], %s::int[], %b::bytea[], %s::int[], %b::bytea[])"
    "     AS u(angle, n, total, rn, rtotal)"
    " ON CONFLICT (user_id, model_id, angle) DO UPDATE"
    "    SET sessions = EXCLUDED.sessions, total = EXCLUDED.total,"
    "        region_sessions = EXCLUDED.region_sessions, region_total = EXCLUDED.region_total"
)

Statement = tuple[str, Any]
Grids = dict[str, np.ndarray]


def _totals_from(rows: list[Any]) -> Totals | None:
    if not rows:
        return None
    totals = Totals()
    for angle, count, total, region_count, region_total in rows:
        if angle == "session":
            totals.sessions = int(count)
            continue
        totals.angles[angle] = (int(count), decode_sum(total))
        grid = decode_grid_sum(region_total)
        if grid is not None:
            totals.regions[angle] = (int(region_count), grid)
    return totals


def _sessions_from(rows: Any) -> dict[UUID, Scored]:
    """Embeddings, region vectors and stored analyses by session id, angles in the
    contract's order."""
    found: dict[UUID, tuple[datetime, tuple[Any, ...], dict[str, np.ndarray], Grids]] = {}
    for sid, at, change, first, count, per_angle, angle, embedding, regions in rows:
        item = found.setdefault(sid, (at, (change, first, count, per_angle), {}, {}))
        item[2][angle] = decode_vector(embedding)
        grid = decode_grid(regions)
        if grid is not None:
            item[3][angle] = grid
    return {  # angles in the contract's order, whatever the heap order
        sid: Scored(StoredSession(sid, at, _ordered(v), regions=_ordered(r)), stored)
        for sid, (at, stored, v, r) in found.items()
    }


def _ordered(by_angle: Grids) -> Grids:
    return {a: by_angle[a] for a in ANGLES if a in by_angle}


def _stored_totals(rows: list[Any]) -> tuple[Totals | None, bool]:
    """The latest checkpoint, and whether it is raw: raw rows when there are any (written
    by the release before the packing, after the packed ones), else the packed ones."""
    raw = [row[1:] for row in rows if row[0]]
    packed = [row[1:] for row in rows if not row[0]]
    return _totals_from(raw or packed), bool(raw)


def load_totals(conn: Conn, user_id: UUID, model_id: str) -> Totals | None:
    """The person's sums as the store keeps them: the stored ones and the tail."""
    params = {"uid": user_id, "model": model_id}
    with conn.cursor(binary=True) as cur:
        cur.execute(_TOTALS_SQL, params)
        totals, _ = _stored_totals(cur.fetchall())
        cur.execute(_TAIL_SQL, params)
        tail = _tail_from(cur.fetchall())
    if totals is not None:
        _add_tail(totals, tail)
    return totals


@dataclass
class Tail:
    """The sessions the stored sums leave out: their ids, and per angle their embeddings
    and region vectors stacked, so they are added with one fixed-point pass per angle."""

    sessions: set[UUID]
    angles: dict[str, list[np.ndarray]]
    regions: dict[str, list[np.ndarray]]


def _tail_from(rows: list[Any]) -> Tail:
    tail = Tail(set(), {}, {})
    for sid, angle, embedding, regions in rows:
        tail.sessions.add(sid)
        tail.angles.setdefault(angle, []).append(decode_vector(embedding))
        grid = decode_grid(regions)
        if grid is not None:
            tail.regions.setdefault(angle, []).append(grid)
    return tail


def _add_tail(totals: Totals, tail: Tail) -> None:
    """``totals`` plus the tail's sessions (exact: int64 sums in any order)."""
    totals.sessions += len(tail.sessions)
    for into, stacks in ((totals.angles, tail.angles), (totals.regions, tail.regions)):
        for angle, vectors in stacks.items():
            added = score.to_fixed(np.stack(vectors)).sum(axis=0)
            count, total = into.get(angle, (0, np.zeros(added.shape, np.int64)))
            into[angle] = (count + len(vectors), total + added)


def rebuild_totals(conn: Conn, user_id: UUID, model_id: str) -> Totals:
    """Sums from the stored embeddings: a person's first write, or after a migration."""
    totals = Totals()
    with conn.cursor(binary=True) as cur:
        cur.execute(_SESSIONS_SQL, {"uid": user_id, "model": model_id})
        for item in _sessions_from(cur).values():
            totals.add(item.session.angles, regions=item.session.regions)
    return totals


@dataclass(frozen=True)
class Target:
    """Whose analysis a write replaces, under which model and request."""

    user_id: UUID
    session_id: UUID
    captured_at: datetime
    model_id: str
    request_seq: int

    @property
    def params(self) -> dict[str, Any]:
        return {
            "uid": self.user_id,
            "sid": self.session_id,
            "at": self.captured_at,
            "model": self.model_id,
        }


@dataclass(frozen=True)
class Write:
    """An open analysis write: one transaction holding the person's lock, with the
    history the score step needs (``history``). ``save`` stores what it scored."""

    conn: Conn
    target: Target
    history: History
    # The sessions the stored sums leave out (added into ``history.totals``); False when
    # no sums were stored (rebuilt from the embeddings): the next write stores them.
    tail: tuple[UUID, ...] = ()
    sums_stored: bool = True
    # The stored sums were raw (migration 0012): the next checkpoint deletes them.
    raw_sums: bool = False

    def _checkpoint(self, replaces: bool) -> bool:
        """Whether this write stores the sums (and marks every analysis summed)."""
        return not self.sums_stored or replaces or len(self.tail) + 1 >= SUMS_EVERY

    def session(
        self, embeddings: dict[str, np.ndarray], regions: Grids | None = None
    ) -> StoredSession:
        t = self.target
        return StoredSession(t.session_id, t.captured_at, embeddings, regions=regions or {})

    def save(
        self, scored: Rescore, embeddings: dict[str, np.ndarray], then: tuple[Statement, ...]
    ) -> Analysis:
        """Replace the session's embeddings (region vectors from ``scored.session``), its
        analysis and the rescored ones, keep the sums, then run ``then`` (the caller's own
        updates), all in one pipeline."""
        t, mine = self.target, scored.analysis
        dim = int(next(iter(embeddings.values())).shape[0])
        regions = scored.session.regions if scored.session is not None else {}
        grids = [encode_vector(regions[a]) if a in regions else None for a in embeddings]
        checkpoint = self._checkpoint(scored.replaces)
        with self.conn.pipeline(), self.conn.cursor() as cur:
            if scored.replaces:
                cur.execute(
                    "DELETE FROM angle_embeddings"
                    " WHERE user_id = %s AND session_id = %s AND model_id = %s",
                    (t.user_id, t.session_id, t.model_id),
                )
            vectors = [encode_vector(e) for e in embeddings.values()]
            cur.execute(
                _EMBEDDINGS_SQL,
                (t.user_id, t.session_id, t.model_id, list(embeddings), vectors, grids),
            )
            cur.execute(
                _ANALYSIS_SQL,
                {
                    **t.params,
                    "seq": t.request_seq,
                    "dim": dim,
                    "change": mine.change_score,
                    "first": mine.is_first_session,
                    "count": mine.baseline_session_count,
                    "per_angle": Jsonb(mine.per_angle),
                    "summed": checkpoint,
                },
            )
            if scored.changed:
                cur.executemany(_RESCORED_SQL, [_rescored(a, t) for a in scored.changed])
            if checkpoint:
                self._store_sums(cur, scored.totals)
            for statement, params in then:
                cur.execute(statement, params)
        return mine

    def remove(self, removal: Removal) -> None:
        """Take the session out of this model's history: the later sessions' new numbers
        and the sums without it (a sum left counting nothing goes), in one pipeline. Its
        own rows go with its ``sessions`` row (``deletions``), in the same transaction."""
        t = self.target
        with self.conn.pipeline(), self.conn.cursor() as cur:
            if removal.changed:
                cur.executemany(_RESCORED_SQL, [_rescored(a, t) for a in removal.changed])
            self._store_sums(cur, removal.totals)
            cur.execute(
                "DELETE FROM packed_sums WHERE user_id = %s AND model_id = %s AND sessions = 0",
                (t.user_id, t.model_id),
            )

    def _store_sums(self, cur: Any, totals: Totals) -> None:
        """Every angle's sums (the tail's angles changed too), then every analysis summed."""
        t = self.target
        store_sums(cur, t.user_id, t.model_id, totals)
        if self.raw_sums:  # packed now, so no reader may take the raw ones for newer
            cur.execute(
                "DELETE FROM baseline_sums WHERE user_id = %s AND model_id = %s",
                (t.user_id, t.model_id),
            )
        if self.tail:
            cur.execute(_SUMMED_SQL, (t.user_id, t.model_id))


def store_sums(cur: Any, user_id: UUID, model_id: str, totals: Totals) -> None:
    """The person's sums, packed, one row per angle and one counting the sessions."""
    angles = sorted(totals.angles)
    sums = _sum_rows(totals, angles)
    cur.execute(_SUMS_SQL, (user_id, model_id, ["session", *angles], *sums))


def _sum_rows(totals: Totals, angles: list[str]) -> tuple[list[Any], ...]:
    """The sums rows' columns: counts, angle sums, region counts, region sums."""
    regions = [totals.regions.get(a) for a in angles]
    return (
        [totals.sessions] + [totals.angles[a][0] for a in angles],
        [None] + [encode_sum(totals.angles[a][1]) for a in angles],
        [0] + [r[0] if r else 0 for r in regions],
        [None] + [encode_sum(r[1]) if r else None for r in regions],
    )


def _rescored(a: Analysis, t: Target) -> tuple[Any, ...]:
    values = score.stored_values(a)[:3]
    return (*values, Jsonb(a.per_angle), t.user_id, a.session_id, t.model_id)


def open_write(conn: Conn, guard_sql: str, target: Target) -> tuple[tuple[Any, ...] | None, Write]:
    """Lock the person, then read the guard row and the history, pipelined."""
    with conn.pipeline():
        lock_user(conn, target.user_id)
        guard = conn.execute(guard_sql, target.params)
        totals = conn.cursor(binary=True)
        totals.execute(_TOTALS_SQL, target.params)
        suffix = conn.cursor(binary=True)
        suffix.execute(_SUFFIX_SQL, target.params)
        tail_rows = conn.cursor(binary=True)
        tail_rows.execute(_TAIL_SQL, target.params)
    found, raw = _stored_totals(totals.fetchall())
    sessions = _sessions_from(suffix)
    tail = _tail_from(tail_rows.fetchall())
    stored = found is not None
    if found is None:  # every session's embeddings, the tail's too
        found = rebuild_totals(conn, target.user_id, target.model_id)
    else:
        _add_tail(found, tail)
    history = History(found, sessions)
    write = Write(conn, target, history, tuple(tail.sessions), stored, raw_sums=raw)
    return guard.fetchone(), write


@contextmanager
def analysis_write(
    pool: ConnectionPool, job: AnalyzeJob, request_seq: int, model_id: str
) -> Iterator[Write | Superseded]:
    """Open the write of the request's analysis as the session's good one.

    Yields ``Superseded`` (and writes nothing) when a newer request was recorded
    meanwhile; raises ``ModelNotActive`` when ``model_id`` stopped being the active model.
    """
    target = Target(job.user_id, job.session_id, job.captured_at, model_id, request_seq)
    with pool.connection() as conn, conn.transaction():
        guard, write = open_write(conn, NEWEST_REQUEST, target)
        if guard is None:
            check_user(conn, job.user_id)  # forgotten while the photos were embedded
            check_not_deleted(conn, job.user_id, job.session_id)  # or deleted
            raise JobError(Code.SESSION_NOT_FOUND, f"session {job.session_id} is gone")
        newest_seq, newest_task, active = guard
        if newest_seq != request_seq:
            yield Superseded(job.session_id, newest_task)
            return
        if not active:
            raise ModelNotActive(f"model {model_id} is not the active model")
        yield write


def save_analysis(
    write: Write,
    scored: Rescore,
    embeddings: dict[str, np.ndarray],
    photos: dict[str, dict[str, Any]] | None = None,
) -> Analysis:
    """Store the scored analysis and mark the request the session's good one."""
    t = write.target
    return write.save(scored, embeddings, (succeeded(t.user_id, t.session_id, photos),))


def history_scores(conn: Conn, user_id: UUID, model_id: str) -> list[Analysis]:
    """The person's analyses recomputed from the stored embeddings alone (the reference
    the soak and tests hold the incremental sums to)."""
    with conn.cursor(binary=True) as cur:
        cur.execute(_SESSIONS_SQL, {"uid": user_id, "model": model_id})
        found = _sessions_from(cur)
    return score.analyze_history([item.session for item in found.values()])
