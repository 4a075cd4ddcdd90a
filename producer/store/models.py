"""The ``models`` and ``backfill_jobs`` tables from the producer's side: which models
exist, which sessions a model still lacks, a backfill's claims and outcomes, and the
switch of the active model."""

from __future__ import annotations

from uuid import UUID

from . import Conn, Row

# The stored sessions that lack the model's analysis of their good request, oldest first.
_PENDING = """
    SELECT s.user_id, s.session_id, s.good_request_seq
      FROM sessions s
      LEFT JOIN analyses a ON a.user_id = s.user_id AND a.session_id = s.session_id
                          AND a.model_id = %(model)s
     WHERE s.good_request_seq IS NOT NULL
       AND a.request_seq IS DISTINCT FROM s.good_request_seq
       AND (%(user)s::uuid IS NULL OR s.user_id = %(user)s::uuid)
     ORDER BY s.good_captured_at, s.session_id
"""
_MISSING = f"SELECT count(*) AS n FROM ({_PENDING}) pending"


def pending(conn: Conn, model_id: str, user_id: UUID | None = None) -> list[Row]:
    return conn.execute(_PENDING, {"model": model_id, "user": user_id}).fetchall()


def missing(conn: Conn, model_id: str) -> int:
    """How many stored sessions lack ``model_id``'s analysis of their good request."""
    row = conn.execute(_MISSING, {"model": model_id, "user": None}).fetchone()
    return int(row["n"]) if row else 0


def listing(conn: Conn) -> list[Row]:
    """Every registered model with its number of analyses, oldest registration first."""
    return conn.execute(
        """
        SELECT m.model_id, m.embedding_dim, m.active, m.registered_at, m.activated_at,
               (SELECT count(*) FROM analyses a WHERE a.model_id = m.model_id) AS analyses
          FROM models m ORDER BY m.registered_at
        """
    ).fetchall()


def known(conn: Conn, lock: bool = False) -> dict[str, bool]:
    """model id -> whether it is the active one; ``lock`` holds the rows to the end of the
    transaction, so two activations never interleave."""
    query = "SELECT model_id, active FROM models" + (" FOR UPDATE" if lock else "")
    return {r["model_id"]: r["active"] for r in conn.execute(query).fetchall()}


def make_active(conn: Conn, model_id: str) -> None:
    conn.execute("UPDATE models SET active = false WHERE active AND model_id <> %s", (model_id,))
    conn.execute(
        "UPDATE models SET active = true, activated_at = now() WHERE model_id = %s AND NOT active",
        (model_id,),
    )


def claim_backfill(conn: Conn, row: Row, model_id: str, in_flight_s: float) -> bool:
    """Record the session's backfill as queued, unless one for the same request is
    queued or running and younger than ``in_flight_s`` (its message is still coming)."""
    claimed = conn.execute(
        """
        INSERT INTO backfill_jobs (user_id, session_id, model_id, request_seq)
        VALUES (%(uid)s, %(sid)s, %(model)s, %(seq)s)
        ON CONFLICT (user_id, session_id, model_id) DO UPDATE
           SET status = 'queued', request_seq = EXCLUDED.request_seq,
               error_code = NULL, error_message = NULL, updated_at = now()
         WHERE backfill_jobs.status NOT IN ('queued', 'running')
            OR backfill_jobs.request_seq <> EXCLUDED.request_seq
            OR backfill_jobs.updated_at < now() - make_interval(secs => %(stale)s)
        RETURNING 1
        """,
        {
            "uid": row["user_id"],
            "sid": row["session_id"],
            "model": model_id,
            "seq": row["good_request_seq"],
            "stale": in_flight_s,
        },
    ).fetchone()
    return claimed is not None


def backfill_outcomes(
    conn: Conn, model_id: str, session_ids: list[UUID], since: float
) -> tuple[int, list[Row]]:
    """(sessions now re-embedded, failures recorded since ``since``, a Unix time)."""
    done = conn.execute(
        "SELECT count(*) AS n FROM sessions s JOIN analyses a"
        " ON a.user_id = s.user_id AND a.session_id = s.session_id AND a.model_id = %s"
        " WHERE s.session_id = ANY(%s) AND a.request_seq = s.good_request_seq",
        (model_id, session_ids),
    ).fetchone()
    failed = conn.execute(
        "SELECT session_id, error_code, error_message FROM backfill_jobs"
        " WHERE model_id = %s AND session_id = ANY(%s) AND status = 'failed'"
        " AND updated_at >= to_timestamp(%s)",
        (model_id, session_ids, since),
    ).fetchall()
    return int(done["n"] if done else 0), failed
