"""The ``models`` table: which embedding models exist, and which one results report."""

from __future__ import annotations

import contextlib

import psycopg
from psycopg_pool import ConnectionPool

from .vectors import Conn


class ModelNotActive(RuntimeError):
    """This worker's model is not the one results report: it must not write analyze results."""


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
