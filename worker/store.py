"""Postgres writes of the worker: job state, embeddings, analyses, comparisons.

The store keeps numbers true without reading a person's history:

- Requests are ordered (``analysis_requests.seq``); only the session's newest request
  writes, so a late retry of an older request cannot overwrite a newer re-analysis.
- A session's last good analysis (``sessions.good_*`` and its rows) is replaced only by a
  newer good one: a failed attempt records its error and nothing else.
- Baselines come from running sums per person, model and angle (``baseline_sums``, exact
  int64 fixed point), updated in the analysis's own transaction under the person's
  advisory lock. An appended session reads those sums and nothing else; one captured
  before others rescales only the sessions captured at or after it.
- Embeddings and analyses are keyed by model. Only workers of the active model write
  analyze results (checked inside the transaction); other models' rows come from backfills.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import numpy as np
import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from changewatch.schema.contract import ANGLES, AnalyzeJob, CompareJob, JobError, payload_size
from changewatch.worker import score
from changewatch.worker.score import Analysis, ComparedSession, StoredSession, Totals

Conn = psycopg.Connection[Any]

# Vectors cross the connection as bytea in Postgres's own (big-endian) binary order, so
# SQL can build them too (float4send); numpy decodes them without a Python loop.
_F32 = np.dtype(">f4")
_I64 = np.dtype(">i8")


def encode_vector(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=_F32).tobytes()


def decode_vector(data: bytes | memoryview) -> np.ndarray:
    return np.frombuffer(data, dtype=_F32).astype(np.float32)


def _encode_sum(total: np.ndarray) -> bytes:
    return np.asarray(total, dtype=_I64).tobytes()


def _decode_sum(data: bytes | memoryview) -> np.ndarray:
    return np.frombuffer(data, dtype=_I64).astype(np.int64)


class ModelNotActive(RuntimeError):
    """This worker's model is not the one results report: it must not write analyze results."""


@dataclass(frozen=True)
class Superseded:
    """A newer request for the session exists; this one wrote nothing."""

    session_id: UUID
    newest_task_id: str | None


def _lock_user(conn: Conn, user_id: UUID) -> None:
    conn.execute("SELECT lock_user(%s)", (user_id,))


# -- people -----------------------------------------------------------------------------

FORGOTTEN = "user_forgotten"


def _refusal(standing: str) -> JobError | None:
    if standing == "forgotten":
        return JobError(FORGOTTEN, "this person was forgotten (forget-user); nothing was written")
    if standing == "unknown":
        return JobError(
            "unknown_user",
            "no such person: enroll them first"
            " (python -m changewatch.producer enroll, or Producer.enroll)",
        )
    return None


def _check_user(conn: Conn, user_id: UUID) -> None:
    row = conn.execute("SELECT user_standing(%s)", (user_id,)).fetchone()
    refusal = _refusal(str(row[0]) if row else "unknown")
    if refusal is not None:
        raise refusal


def admit(pool: ConnectionPool, user_id: UUID) -> None:
    """Refuse a job for a person who is not enrolled, or was forgotten: ``JobError``."""
    with pool.connection() as conn:
        _check_user(conn, user_id)


# -- models -----------------------------------------------------------------------------


def register_model(conn: Conn, model_id: str, dim: int) -> str | None:
    """Record a worker's model; the first model ever registered becomes active.

    Returns the active model's id. Takes a plain connection: the prefork parent registers
    before any pool exists.
    """
    conn.execute(
        "INSERT INTO models (model_id, embedding_dim) VALUES (%s, %s)"
        " ON CONFLICT (model_id) DO NOTHING",
        (model_id, dim),
    )
    with contextlib.suppress(psycopg.errors.UniqueViolation), conn.transaction():
        conn.execute(
            "UPDATE models SET active = true, activated_at = now() WHERE model_id = %s"
            " AND NOT EXISTS (SELECT 1 FROM models WHERE active)",
            (model_id,),
        )
    row = conn.execute("SELECT model_id FROM models WHERE active").fetchone()
    return None if row is None else str(row[0])


def active_model(pool: ConnectionPool) -> str | None:
    with pool.connection() as conn:
        row = conn.execute("SELECT model_id FROM models WHERE active").fetchone()
    return None if row is None else str(row[0])


# -- job state --------------------------------------------------------------------------


def start_job(pool: ConnectionPool, job: AnalyzeJob, task_id: str | None) -> int | Superseded:
    """Record the request if new and, if it is the session's newest, mark the session running.

    Returns the request's sequence number, or ``Superseded`` when a newer request for the
    session was recorded first (a late retry or redelivery of an older request). A session
    id already owned by another user is refused.
    """
    task = task_id or f"untracked-{job.session_id}"
    try:
        return _start_job(pool, job, task)
    except psycopg.errors.ForeignKeyViolation:
        # The person is not enrolled, or forget-user ran: their row is what the new
        # session row references, so the insert waited for the forget and then failed.
        admit(pool, job.user_id)
        raise


def _start_job(pool: ConnectionPool, job: AnalyzeJob, task: str) -> int | Superseded:
    images = Jsonb(job.to_payload()["images"])
    with pool.connection() as conn, conn.transaction():
        with conn.pipeline():  # one round trip for the three statements
            # A message sent straight to the broker has no row yet.
            conn.execute(
                "INSERT INTO sessions (session_id, user_id, captured_at, images, task_id)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (session_id) DO NOTHING",
                (job.session_id, job.user_id, job.captured_at, images, task),
            )
            current = conn.execute(
                "SELECT user_id, request_seq, task_id FROM sessions"
                " WHERE session_id = %s FOR UPDATE",
                (job.session_id,),
            )
            request = conn.execute(
                "INSERT INTO analysis_requests (task_id, session_id) VALUES (%s, %s)"
                " ON CONFLICT (task_id) DO NOTHING RETURNING seq, session_id",
                (task, job.session_id),
            )
        owner, newest_seq, newest_task = current.fetchone() or (None, None, None)
        row = (
            request.fetchone()
            or conn.execute(  # a retry: its request is recorded
                "SELECT seq, session_id FROM analysis_requests WHERE task_id = %s", (task,)
            ).fetchone()
        )
        if owner != job.user_id:
            raise JobError("session_of_other_user", "this session id belongs to another user")
        assert row is not None
        seq, request_session = int(row[0]), row[1]
        if request_session != job.session_id:
            raise JobError("invalid_payload", f"task id {task} was sent for another session")
        if newest_seq is not None and seq < newest_seq:
            return Superseded(job.session_id, newest_task)
        conn.execute(
            """
            UPDATE sessions
               SET status = 'running', attempts = attempts + 1, request_seq = %s,
                   captured_at = %s, images = %s, task_id = %s, error_code = NULL,
                   error_message = NULL, started_at = clock_timestamp(), finished_at = NULL,
                   updated_at = clock_timestamp()
             WHERE session_id = %s
            """,
            (seq, job.captured_at, images, task, job.session_id),
        )
    return seq


def reject_message(
    pool: ConnectionPool,
    task_name: str,
    task_id: str | None,
    payload: dict[str, Any],
    error: JobError,
    mark_job: bool = True,
) -> None:
    """Record a message that is not a valid job; mark its session failed if one exists.

    A job for a forgotten person is recorded without its payload or ids (nothing of
    theirs is written again); an oversized payload by its size and field names.
    """
    session_id = user_id = None
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        session_id = UUID(str(payload.get("session_id")))
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        user_id = UUID(str(payload.get("user_id")))
    if error.code == FORGOTTEN:
        payload, session_id, mark_job = {"withheld": "the person was forgotten"}, None, False
    elif error.code == "payload_too_large":
        payload = {
            "withheld": "too large",
            "bytes": payload_size(payload),
            "fields": sorted(map(str, payload))[:50],
        }
    with pool.connection() as conn, conn.transaction():
        conn.execute(
            """
            INSERT INTO rejected_messages
                   (task_name, task_id, session_id, payload, error_code, error_message)
            VALUES (%s, %s, %s, %s, %s, %s)
            """,
            (task_name, task_id, session_id, Jsonb(payload), error.code, error.message[:2000]),
        )
    if mark_job and session_id and user_id and task_name.endswith("analyze_session"):
        fail_job(pool, session_id, user_id, error.code, error.message)


def fail_job(
    pool: ConnectionPool,
    session_id: UUID,
    user_id: UUID,
    code: str,
    message: str,
    task_id: str | None = None,
) -> None:
    """Mark the attempt failed: only the job's own user's session, and only while this
    request (``task_id``, when given) is the session's newest. Its good analysis stays."""
    with pool.connection() as conn:
        conn.execute(
            """
            UPDATE sessions SET status = 'failed', error_code = %s, error_message = %s,
                   finished_at = clock_timestamp(), updated_at = clock_timestamp()
             WHERE session_id = %s AND user_id = %s AND (%s::text IS NULL OR task_id = %s)
            """,
            (code, message[:2000], session_id, user_id, task_id, task_id),
        )


# -- the incremental analysis write -----------------------------------------------------


_TOTALS_SQL = """
    SELECT angle, sessions, total FROM baseline_sums
     WHERE user_id = %(uid)s AND model_id = %(model)s
"""
_SESSIONS_SQL = """
    SELECT a.session_id, a.captured_at, a.change_score, a.is_first_session,
           a.baseline_session_count, a.per_angle, e.angle, e.embedding
      FROM analyses a JOIN angle_embeddings e USING (session_id, model_id)
     WHERE a.user_id = %(uid)s AND a.model_id = %(model)s
"""
# The sessions a write rescores: captured at or after the earlier of the session's new
# capture time and the one its current analysis has (it moves, or it arrives late).
_SUFFIX_SQL = (
    _SESSIONS_SQL
    + """
       AND a.captured_at >= LEAST(%(at)s, COALESCE(
           (SELECT captured_at FROM analyses WHERE session_id = %(sid)s AND model_id = %(model)s),
           %(at)s))
"""
)


def _totals_from(rows: list[Any]) -> Totals | None:
    if not rows:
        return None
    totals = Totals()
    for angle, count, total in rows:
        if angle == "session":
            totals.sessions = int(count)
        else:
            totals.angles[angle] = (int(count), _decode_sum(total))
    return totals


def _sessions_from(rows: Any) -> dict[UUID, dict[str, Any]]:
    """Embeddings and stored analyses by session id, angles in the contract's order."""
    found: dict[UUID, dict[str, Any]] = {}
    for sid, at, change, first, count, per_angle, angle, embedding in rows:
        item = found.setdefault(
            sid, {"captured_at": at, "stored": (change, first, count, per_angle), "angles": {}}
        )
        item["angles"][angle] = decode_vector(embedding)
    for item in found.values():  # whatever the heap order
        item["angles"] = {a: item["angles"][a] for a in ANGLES if a in item["angles"]}
    return found


def _load_totals(conn: Conn, user_id: UUID, model_id: str) -> Totals | None:
    with conn.cursor(binary=True) as cur:
        cur.execute(_TOTALS_SQL, {"uid": user_id, "model": model_id})
        return _totals_from(cur.fetchall())


def _rebuild_totals(conn: Conn, user_id: UUID, model_id: str) -> Totals:
    """Sums from the stored embeddings: a person's first write, or after a migration."""
    totals = Totals()
    with conn.cursor(binary=True) as cur:
        cur.execute(_SESSIONS_SQL, {"uid": user_id, "model": model_id})
        for item in _sessions_from(cur).values():
            totals.add(item["angles"])
    return totals


@dataclass
class _State:
    """What one analysis write reads, in one round trip: its guard row, the person's
    sums and the sessions it rescores."""

    guard: tuple[Any, ...] | None
    totals: Totals | None
    suffix: dict[UUID, dict[str, Any]]


def _read_for_write(
    conn: Conn,
    guard_sql: str,
    *,
    user_id: UUID,
    session_id: UUID,
    captured_at: datetime,
    model_id: str,
) -> _State:
    """Lock the person, then read everything the write needs, pipelined."""
    params = {"uid": user_id, "sid": session_id, "at": captured_at, "model": model_id}
    with conn.pipeline():
        _lock_user(conn, user_id)
        guard = conn.execute(guard_sql, params)
        totals = conn.cursor(binary=True)
        totals.execute(_TOTALS_SQL, params)
        suffix = conn.cursor(binary=True)
        suffix.execute(_SUFFIX_SQL, params)
    return _State(guard.fetchone(), _totals_from(totals.fetchall()), _sessions_from(suffix))


def _stored_values(analysis: Analysis) -> tuple[Any, ...]:
    return (
        analysis.change_score,
        analysis.is_first_session,
        analysis.baseline_session_count,
        analysis.per_angle,
    )


def _write_analysis(
    conn: Conn,
    state: _State,
    *,
    user_id: UUID,
    session_id: UUID,
    captured_at: datetime,
    model_id: str,
    request_seq: int,
    embeddings: dict[str, np.ndarray],
    then: tuple[tuple[str, tuple[Any, ...]], ...] = (),
) -> Analysis:
    """Replace the session's embeddings under ``model_id``, rescore what it changes,
    keep the sums, then run ``then`` (the caller's own updates), all in one pipeline.
    The caller holds the person's lock inside one transaction."""
    totals = state.totals or _rebuild_totals(conn, user_id, model_id)
    suffix = dict(state.suffix)
    old = suffix.pop(session_id, None)
    if old is not None:
        totals.add(old["angles"], sign=-1)
    totals.add(embeddings)
    others = [
        StoredSession(sid, item["captured_at"], item["angles"]) for sid, item in suffix.items()
    ]
    analyses = score.rescore_suffix(
        totals, [*others, StoredSession(session_id, captured_at, embeddings)]
    )
    mine = next(a for a in analyses if a.session_id == session_id)
    changed = [
        a
        for a in analyses
        if a.session_id != session_id and _stored_values(a) != suffix[a.session_id]["stored"]
    ]
    dim = int(next(iter(embeddings.values())).shape[0])
    touched = sorted(set(embeddings) | set(old["angles"] if old else ()))
    with conn.pipeline(), conn.cursor() as cur:
        if old is not None:
            cur.execute(
                "DELETE FROM angle_embeddings WHERE session_id = %s AND model_id = %s",
                (session_id, model_id),
            )
        # One statement per table (unnest), not one per row: the bound is CPU, not I/O.
        cur.execute(
            "INSERT INTO angle_embeddings (session_id, angle, model_id, embedding)"
            " SELECT %s, angle, %s, embedding FROM unnest(%s::text[], %b::bytea[])"
            "   AS u(angle, embedding)",
            (
                session_id,
                model_id,
                list(embeddings),
                [encode_vector(e) for e in embeddings.values()],
            ),
        )
        cur.execute(
            """
            INSERT INTO analyses (session_id, model_id, user_id, captured_at, request_seq,
                                  embedding_dim, change_score, is_first_session,
                                  baseline_session_count, per_angle)
            VALUES (%(sid)s, %(model)s, %(uid)s, %(at)s, %(seq)s, %(dim)s, %(change)s,
                    %(first)s, %(count)s, %(per_angle)s)
            ON CONFLICT (session_id, model_id) DO UPDATE
               SET user_id = EXCLUDED.user_id, captured_at = EXCLUDED.captured_at,
                   request_seq = EXCLUDED.request_seq, embedding_dim = EXCLUDED.embedding_dim,
                   change_score = EXCLUDED.change_score,
                   is_first_session = EXCLUDED.is_first_session,
                   baseline_session_count = EXCLUDED.baseline_session_count,
                   per_angle = EXCLUDED.per_angle, computed_at = now(),
                   revision = CASE
                       WHEN (analyses.captured_at, analyses.change_score,
                             analyses.is_first_session, analyses.baseline_session_count,
                             analyses.per_angle)
                            IS NOT DISTINCT FROM
                            (EXCLUDED.captured_at, EXCLUDED.change_score,
                             EXCLUDED.is_first_session, EXCLUDED.baseline_session_count,
                             EXCLUDED.per_angle)
                       THEN analyses.revision ELSE nextval('analysis_revision') END
            """,
            {
                "sid": session_id,
                "model": model_id,
                "uid": user_id,
                "at": captured_at,
                "seq": request_seq,
                "dim": dim,
                "change": mine.change_score,
                "first": mine.is_first_session,
                "count": mine.baseline_session_count,
                "per_angle": Jsonb(mine.per_angle),
            },
        )
        if changed:
            cur.executemany(
                """
                UPDATE analyses SET change_score = %s, is_first_session = %s,
                       baseline_session_count = %s, per_angle = %s, computed_at = now(),
                       revision = nextval('analysis_revision')
                 WHERE session_id = %s AND model_id = %s
                """,
                [
                    (
                        a.change_score,
                        a.is_first_session,
                        a.baseline_session_count,
                        Jsonb(a.per_angle),
                        a.session_id,
                        model_id,
                    )
                    for a in changed
                ],
            )
        counts = [totals.sessions] + [totals.angles[a][0] for a in touched]
        sums = [None] + [_encode_sum(totals.angles[a][1]) for a in touched]
        cur.execute(
            "INSERT INTO baseline_sums (user_id, model_id, angle, sessions, total)"
            " SELECT %s, %s, angle, n, total FROM unnest(%s::text[], %s::int[], %b::bytea[])"
            "   AS u(angle, n, total)"
            " ON CONFLICT (user_id, model_id, angle) DO UPDATE"
            "    SET sessions = EXCLUDED.sessions, total = EXCLUDED.total",
            (user_id, model_id, ["session", *touched], counts, sums),
        )
        for statement, params in then:
            cur.execute(statement, params)
    return mine


def save_analysis(
    pool: ConnectionPool,
    job: AnalyzeJob,
    request_seq: int,
    model_id: str,
    embeddings: dict[str, np.ndarray],
    photos: dict[str, dict[str, Any]] | None = None,
) -> Analysis | Superseded:
    """Store the request's analysis as the session's good one and mark it succeeded.

    ``photos``: per angle, what the photo says about itself (quality, camera), kept with
    the session's good request.

    Nothing is written when a newer request was recorded meanwhile (``Superseded``), and
    ``ModelNotActive`` is raised when ``model_id`` stopped being the active model.
    """
    with pool.connection() as conn, conn.transaction():
        state = _read_for_write(
            conn,
            """
            SELECT s.request_seq, s.task_id, m.active
              FROM sessions s JOIN models m ON m.model_id = %(model)s
             WHERE s.session_id = %(sid)s AND s.user_id = %(uid)s
               FOR UPDATE OF s FOR SHARE OF m
            """,
            user_id=job.user_id,
            session_id=job.session_id,
            captured_at=job.captured_at,
            model_id=model_id,
        )
        if state.guard is None:
            _check_user(conn, job.user_id)  # forgotten while the photos were embedded
            raise JobError("session_not_found", f"session {job.session_id} is gone")
        newest_seq, newest_task, active = state.guard
        if newest_seq != request_seq:
            return Superseded(job.session_id, newest_task)
        if not active:
            raise ModelNotActive(f"model {model_id} is not the active model")
        analysis = _write_analysis(
            conn,
            state,
            user_id=job.user_id,
            session_id=job.session_id,
            captured_at=job.captured_at,
            model_id=model_id,
            request_seq=request_seq,
            embeddings=embeddings,
            then=(
                (
                    """
                    UPDATE sessions
                       SET status = 'succeeded', finished_at = clock_timestamp(),
                           updated_at = clock_timestamp(), good_task_id = task_id,
                           good_request_seq = request_seq, good_captured_at = captured_at,
                           good_images = images, good_at = clock_timestamp(),
                           good_photos = %s
                     WHERE session_id = %s
                    """,
                    (Jsonb(photos) if photos is not None else None, job.session_id),
                ),
            ),
        )
    return analysis


# -- backfill ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BackfillSource:
    """What a backfill re-embeds: the session's last good request."""

    session_id: UUID
    user_id: UUID
    captured_at: datetime
    images: dict[str, str]
    request_seq: int
    done: bool  # this model already has the analysis of that request


def start_backfill(pool: ConnectionPool, session_id: UUID, model_id: str) -> BackfillSource | None:
    """Mark the backfill running; None when the session has no good analysis to re-embed."""
    with pool.connection() as conn, conn.transaction():
        row = conn.execute(
            """
            SELECT s.user_id, s.good_captured_at, s.good_images, s.good_request_seq,
                   a.request_seq IS NOT DISTINCT FROM s.good_request_seq AS done
              FROM sessions s
              LEFT JOIN analyses a ON a.session_id = s.session_id AND a.model_id = %s
             WHERE s.session_id = %s AND s.good_request_seq IS NOT NULL
            """,
            (model_id, session_id),
        ).fetchone()
        conn.execute(
            "UPDATE backfill_jobs SET status = 'running', attempts = attempts + 1,"
            " updated_at = clock_timestamp() WHERE session_id = %s AND model_id = %s",
            (session_id, model_id),
        )
    if row is None:
        return None
    user_id, at, images, seq, done = row
    return BackfillSource(session_id, user_id, at, images, int(seq), bool(done))


_FINISH_BACKFILL = (
    "UPDATE backfill_jobs SET status = %s, error_code = %s, error_message = %s,"
    " updated_at = clock_timestamp() WHERE session_id = %s AND model_id = %s"
)


def _backfill_outcome(
    session_id: UUID, model_id: str, error: JobError | None
) -> tuple[str, tuple[Any, ...]]:
    return _FINISH_BACKFILL, (
        "failed" if error else "succeeded",
        error.code if error else None,
        error.message[:2000] if error else None,
        session_id,
        model_id,
    )


def finish_backfill(
    pool: ConnectionPool, session_id: UUID, model_id: str, error: JobError | None = None
) -> None:
    with pool.connection() as conn:
        conn.execute(*_backfill_outcome(session_id, model_id, error))


def save_backfill(
    pool: ConnectionPool, source: BackfillSource, model_id: str, embeddings: dict[str, np.ndarray]
) -> Analysis | Superseded:
    """Store ``model_id``'s analysis of the session's good request, unless a newer good
    analysis arrived meanwhile (then the next backfill pass takes that one)."""
    with pool.connection() as conn, conn.transaction():
        state = _read_for_write(
            conn,
            "SELECT good_request_seq, good_task_id FROM sessions"
            " WHERE session_id = %(sid)s FOR UPDATE",
            user_id=source.user_id,
            session_id=source.session_id,
            captured_at=source.captured_at,
            model_id=model_id,
        )
        if state.guard is None or state.guard[0] != source.request_seq:
            return Superseded(source.session_id, state.guard[1] if state.guard else None)
        analysis = _write_analysis(
            conn,
            state,
            user_id=source.user_id,
            session_id=source.session_id,
            captured_at=source.captured_at,
            model_id=model_id,
            request_seq=source.request_seq,
            embeddings=embeddings,
            then=(_backfill_outcome(source.session_id, model_id, None),),
        )
    return analysis


# -- comparisons ------------------------------------------------------------------------


def start_comparison(pool: ConnectionPool, job: CompareJob, task_id: str | None) -> None:
    """Mark the comparison running, once its person is known to be enrolled."""
    with pool.connection() as conn:
        _check_user(conn, job.user_id)
        conn.execute(
            """
            INSERT INTO comparisons (current_session_id, previous_session_id, user_id, status,
                                     task_id)
            SELECT %(cur)s, %(prev)s, %(uid)s, 'running', %(task)s
             WHERE EXISTS (SELECT 1 FROM sessions WHERE session_id = %(cur)s)
               AND EXISTS (SELECT 1 FROM sessions WHERE session_id = %(prev)s)
            ON CONFLICT (current_session_id, previous_session_id) DO UPDATE
               SET status = 'running', user_id = EXCLUDED.user_id, error_code = NULL,
                   error_message = NULL, task_id = EXCLUDED.task_id, updated_at = now()
            """,
            {
                "cur": job.current_session_id,
                "prev": job.previous_session_id,
                "uid": job.user_id,
                "task": task_id,
            },
        )


def finish_comparison(
    pool: ConnectionPool,
    job: CompareJob,
    result: dict[str, Any] | None,
    error: JobError | None = None,
    inputs: tuple[ComparedSession, ComparedSession] | None = None,
) -> None:
    """Record the outcome, with the analysis revisions it was computed from: when either
    changes later, readers see the stored numbers as stale and have them recomputed."""
    current, previous = inputs if inputs else (None, None)
    with pool.connection() as conn:
        conn.execute(
            """
            UPDATE comparisons
               SET status = %s, result = %s, error_code = %s, error_message = %s,
                   model_id = %s, current_revision = %s, previous_revision = %s,
                   updated_at = now()
             WHERE current_session_id = %s AND previous_session_id = %s
            """,
            (
                "failed" if error else "succeeded",
                Jsonb(result) if result is not None else None,
                error.code if error else None,
                error.message if error else None,
                current.model_id if current else None,
                current.revision if current else None,
                previous.revision if previous else None,
                job.current_session_id,
                job.previous_session_id,
            ),
        )


def load_for_comparison(pool: ConnectionPool, session_id: UUID, user_id: UUID) -> ComparedSession:
    """The session's analysis under the active model, or a JobError that says why not."""
    with pool.connection() as conn, conn.cursor(binary=True) as cur:
        cur.execute(
            """
            SELECT s.user_id, s.status, a.model_id, a.change_score, a.per_angle, a.revision,
                   a.captured_at, a.baseline_session_count
              FROM sessions s
              LEFT JOIN analyses a ON a.session_id = s.session_id
                    AND a.model_id = (SELECT model_id FROM models WHERE active)
             WHERE s.session_id = %s
            """,
            (session_id,),
        )
        row = cur.fetchone()
        if row is None:
            raise JobError("session_not_found", f"session {session_id} does not exist")
        owner, status, model_id, change, per_angle, revision, at, earlier = row
        if owner != user_id:
            raise JobError(
                "not_same_user",
                f"session {session_id} does not belong to user {user_id}; "
                "only sessions of the same user can be compared",
            )
        if model_id is None:
            code = (
                "session_not_ready" if status in ("queued", "running") else "session_not_analyzed"
            )
            raise JobError(code, f"session {session_id} has no analysis yet (status {status})")
        cur.execute(
            "SELECT angle, embedding FROM angle_embeddings WHERE session_id = %s AND model_id = %s",
            (session_id, model_id),
        )
        by_angle = {angle: decode_vector(e) for angle, e in cur}
    angles = {a: by_angle[a] for a in ANGLES if a in by_angle}
    return ComparedSession(
        session_id=session_id,
        model_id=model_id,
        change_score=float(change),
        angle_scores={p["angle"]: float(p["change_score"]) for p in per_angle},
        angles=angles,
        session=score.session_embedding(angles) if angles else None,
        revision=int(revision),
        captured_at=at,
        baseline_session_count=int(earlier),
    )


# The comparison's windows: the last 5 earlier sessions, and those of the 30 days before
# (at most 200 sessions read, newest first, whatever the history's length).
_WINDOWS_SQL = """
    WITH earlier AS (
        SELECT session_id, captured_at,
               row_number() OVER (ORDER BY captured_at DESC, session_id DESC) AS rank
          FROM analyses
         WHERE user_id = %(uid)s AND model_id = %(model)s AND captured_at < %(at)s
         ORDER BY captured_at DESC, session_id DESC
         LIMIT 200)
    SELECT w.session_id, w.captured_at, w.rank, e.angle, e.embedding
      FROM earlier w
      JOIN angle_embeddings e ON e.session_id = w.session_id AND e.model_id = %(model)s
     WHERE w.rank <= %(rolling)s OR w.captured_at >= %(at)s - make_interval(days => %(days)s)
"""


def load_windows(
    pool: ConnectionPool,
    user_id: UUID,
    model_id: str,
    before: datetime,
    rolling: int = 5,
    days: int = 30,
) -> list[tuple[StoredSession, int]]:
    """Earlier sessions (strictly before ``before``) for the comparison layers, each with
    its rank (1 = the previous session), newest first."""
    params = {
        "uid": user_id,
        "model": model_id,
        "at": before,
        "rolling": rolling,
        "days": days,
    }
    found: dict[UUID, tuple[datetime, int, dict[str, np.ndarray]]] = {}
    with pool.connection() as conn, conn.cursor(binary=True) as cur:
        cur.execute(_WINDOWS_SQL, params)
        for sid, at, rank, angle, embedding in cur:
            found.setdefault(sid, (at, int(rank), {}))[2][angle] = decode_vector(embedding)
    ordered = sorted(found.items(), key=lambda item: item[1][1])
    return [(StoredSession(sid, at, angles), rank) for sid, (at, rank, angles) in ordered]


def history_scores(conn: Conn, user_id: UUID, model_id: str) -> list[Analysis]:
    """The person's analyses recomputed from the stored embeddings alone (the reference
    the soak and tests hold the incremental sums to)."""
    with conn.cursor(binary=True) as cur:
        cur.execute(_SESSIONS_SQL, {"uid": user_id, "model": model_id})
        found = _sessions_from(cur)
    return score.analyze_history(
        [StoredSession(sid, item["captured_at"], item["angles"]) for sid, item in found.items()]
    )
