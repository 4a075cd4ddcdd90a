"""A person's rows, forgotten in one transaction: the statements forget-user runs,
from the producer's CLI or the worker's ``changewatch.forget_person`` task alike.

It takes the person's lock (``lock_user``: a row lock on their ``users`` row) first, as
every worker write does, so a write for them either commits before the forget or finds
them gone. It runs as the
producer's or the worker's database role (migrations 0006 and 0009 grant both).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import tuple_row

Conn = psycopg.Connection[Any]

# Whether another person has a session of this id (the writers of a session check it:
# a session id is one person's). The one read across people a write makes; no lock, as
# Citus runs it on every shard (docs/scaling.md).
OTHER_OWNER = (
    "SELECT EXISTS (SELECT 1 FROM sessions WHERE session_id = %(sid)s AND user_id <> %(uid)s)"
)
# Taken before a writer inserts a session row, held to its commit. The rows are keyed by
# (user_id, session_id), so two people's first claims of one id never meet on a key and
# neither sees the other's uncommitted row: without it both pass OTHER_OWNER. With it the
# second waits, then sees the first's row and is refused. An advisory lock holds on the
# node that takes it: on Citus that is the coordinator, where every connection goes
# (docs/scaling.md). Its own two-key space (class 0x6377), apart from any one-key lock.
CLAIM_SESSION_ID = "SELECT pg_advisory_xact_lock(25463, hashtext(%(sid)s::text))"

# Tables holding a person's data, and how to count what is left of it.
LEFT = {
    "users": "SELECT count(*) FROM users WHERE user_id = %(u)s",
    "sessions": "SELECT count(*) FROM sessions WHERE user_id = %(u)s",
    "angle_embeddings": "SELECT count(*) FROM angle_embeddings WHERE user_id = %(u)s",
    "analysis_requests": "SELECT count(*) FROM analysis_requests WHERE user_id = %(u)s",
    "baseline_sums": "SELECT (SELECT count(*) FROM baseline_sums WHERE user_id = %(u)s)"
    " + (SELECT count(*) FROM packed_sums WHERE user_id = %(u)s)",
    "backfill_jobs": "SELECT count(*) FROM backfill_jobs WHERE user_id = %(u)s",
    "analyses": "SELECT count(*) FROM analyses WHERE user_id = %(u)s",
    "comparisons": "SELECT count(*) FROM comparisons WHERE user_id = %(u)s",
    # Kept on the coordinator (it may name no valid person): found by its sessions' ids.
    "rejected_messages": "SELECT count(*) FROM rejected_messages"
    " WHERE session_id = ANY(%(s)s) OR payload->>'user_id' = %(u)s::text",
    "outbox": "SELECT count(*) FROM outbox WHERE user_id = %(u)s",
}


def left(conn: Conn, user_id: UUID, sessions: list[UUID]) -> dict[str, int]:
    """Rows of the person's still in each table (any row factory)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        return {
            table: cur.execute(query, {"u": user_id, "s": sessions}).fetchone()[0]  # type: ignore[index]
            for table, query in LEFT.items()
        }


@dataclass
class Forgotten:
    """What the rows said of the person before they were deleted."""

    sessions: list[UUID] = field(default_factory=list)
    uris: set[str] = field(default_factory=set)  # the photos their sessions named
    task_ids: set[str] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=dict)  # rows deleted, by table


def forget(conn: Conn, user_id: UUID) -> Forgotten:
    """One transaction under the person's lock: a tombstone, then every row.

    The lock waits for an analysis being written for them; every write after this
    commits finds no ``users`` row (the foreign keys) and the tombstone.
    """
    found = Forgotten()
    with conn.transaction():
        conn.execute("SELECT lock_user(%s)", (user_id,))
        for row in conn.execute(
            "SELECT session_id, images, good_images FROM sessions WHERE user_id = %s", (user_id,)
        ):
            found.sessions.append(row["session_id"])
            for images in (row["images"], row["good_images"]):
                found.uris.update((images or {}).values())
        found.task_ids.update(
            r["task_id"]
            for r in conn.execute(
                "SELECT task_id FROM analysis_requests WHERE user_id = %(u)s"
                " UNION SELECT task_id FROM comparisons WHERE user_id = %(u)s"
                " UNION SELECT task_id FROM rejected_messages"
                "  WHERE session_id = ANY(%(s)s) OR payload->>'user_id' = %(u)s::text",
                {"s": found.sessions, "u": user_id},
            )
            if r["task_id"]
        )
        conn.execute(
            "INSERT INTO forgotten_users (user_digest) VALUES (user_digest(%s))"
            " ON CONFLICT DO NOTHING",
            (user_id,),
        )
        found.counts = left(conn, user_id, found.sessions)
        # Sessions, comparisons, sums and analyses hang off users (ON DELETE CASCADE);
        # requests, embeddings and backfills off sessions.
        conn.execute("DELETE FROM users WHERE user_id = %s", (user_id,))
        conn.execute(
            "DELETE FROM rejected_messages"
            " WHERE session_id = ANY(%s) OR payload->>'user_id' = %s::text",
            (found.sessions, user_id),
        )
    return found


# The rows that name one session, as delete-session counts them: before it deletes them
# (what it did) and after (what is left, all zeros). Its ``sessions`` row is counted by
# each side, which knows whether it is there.
SESSION_ROWS = {
    "analyses": "SELECT count(*) FROM analyses WHERE user_id = %(u)s AND session_id = %(s)s",
    "angle_embeddings": "SELECT count(*) FROM angle_embeddings"
    " WHERE user_id = %(u)s AND session_id = %(s)s",
    "analysis_requests": "SELECT count(*) FROM analysis_requests"
    " WHERE user_id = %(u)s AND session_id = %(s)s",
    "backfill_jobs": "SELECT count(*) FROM backfill_jobs"
    " WHERE user_id = %(u)s AND session_id = %(s)s",
    "comparisons": "SELECT count(*) FROM comparisons"
    " WHERE user_id = %(u)s AND (current_session_id = %(s)s OR previous_session_id = %(s)s)",
    "rejected_messages": "SELECT count(*) FROM rejected_messages WHERE session_id = %(s)s",
}


def session_rows(conn: Conn, user_id: UUID, session_id: UUID) -> dict[str, int]:
    """How many rows of each table name the person's session."""
    with conn.cursor(row_factory=tuple_row) as cur:
        counts = {}
        for table, query in SESSION_ROWS.items():
            row = cur.execute(query, {"u": user_id, "s": session_id}).fetchone()
            counts[table] = int(row[0]) if row else 0
        return counts
