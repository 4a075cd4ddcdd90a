"""Migration 0008's rights: the worker deletes a session only through ``delete_session()``,
which always leaves a tombstone; the producer cannot call it; forget-user takes the
tombstones with the person."""

from __future__ import annotations

import contextlib
import secrets
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest


@pytest.fixture(scope="module")
def login_as(database_url: str) -> Iterator[Callable[[str], psycopg.Connection[Any]]]:
    """Login roles (cluster-wide names, so unique to this run) in the group roles."""
    made: list[str] = []

    def connect(group: str) -> psycopg.Connection[Any]:
        name = f"cw_delete_{group}_{secrets.token_hex(4)}"
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(f"CREATE ROLE {name} LOGIN IN ROLE changewatch_{group}")
        made.append(name)
        return psycopg.connect(
            psycopg.conninfo.make_conninfo(database_url, user=name), autocommit=True
        )

    yield connect
    with psycopg.connect(database_url, autocommit=True) as admin:
        for name in made:
            admin.execute(f"DROP OWNED BY {name}")
            admin.execute(f"DROP ROLE IF EXISTS {name}")


def _session(database_url: str) -> tuple[uuid.UUID, uuid.UUID]:
    user, sid = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute("SELECT enroll_user(%s)", (user,))
        admin.execute(
            "INSERT INTO sessions (session_id, user_id, captured_at, images)"
            " VALUES (%s, %s, now(), '{}')",
            (sid, user),
        )
    return user, sid


@contextlib.contextmanager
def _removed(database_url: str, user: uuid.UUID) -> Iterator[None]:
    """The person and their rows gone afterwards: a queued session would be the
    reaper tests' to find."""
    try:
        yield
    finally:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute("DELETE FROM users WHERE user_id = %s", (user,))


def test_the_worker_deletes_a_session_only_behind_a_tombstone(
    database_url: str, login_as: Callable[[str], psycopg.Connection[Any]]
) -> None:
    user, sid = _session(database_url)
    with login_as("worker") as conn:
        for sql in (
            "DELETE FROM sessions",
            "INSERT INTO deleted_sessions (session_digest, user_id)"
            " VALUES ('\\x00', gen_random_uuid())",
            "DELETE FROM deleted_sessions",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql)
        assert conn.execute("SELECT delete_session(%s, %s)", (uuid.uuid4(), sid)).fetchone() == (
            False,  # not that person's session: nothing happens
        )
        assert conn.execute("SELECT session_deleted(%s)", (sid,)).fetchone() == (False,)
        assert conn.execute("SELECT delete_session(%s, %s)", (user, sid)).fetchone() == (True,)
        assert conn.execute("SELECT session_deleted(%s)", (sid,)).fetchone() == (True,)
        assert conn.execute(
            "SELECT count(*) FROM sessions WHERE session_id = %s", (sid,)
        ).fetchone() == (0,)
        # The tombstone holds a digest, never the id itself.
        found = conn.execute(
            "SELECT count(*) FROM deleted_sessions WHERE session_digest::text LIKE %s",
            (f"%{sid.hex}%",),
        ).fetchone()
        assert found == (0,)

    with psycopg.connect(database_url, autocommit=True) as admin:  # forget-user's DELETE
        admin.execute("DELETE FROM users WHERE user_id = %s", (user,))
        left = admin.execute(
            "SELECT count(*) FROM deleted_sessions WHERE user_id = %s", (user,)
        ).fetchone()
    assert left == (0,)


def test_the_producer_cannot_delete_a_session_without_the_worker(
    database_url: str, login_as: Callable[[str], psycopg.Connection[Any]]
) -> None:
    """Deleting without rescoring would leave the later sessions' numbers wrong."""
    user, sid = _session(database_url)
    with login_as("producer") as conn, _removed(database_url, user):
        assert conn.execute("SELECT session_deleted(%s)", (sid,)).fetchone() == (False,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT delete_session(%s, %s)", (user, sid))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "INSERT INTO deleted_sessions (session_digest, user_id) VALUES ('\\x00', %s)",
                (user,),
            )
