"""Apply schema/migrations/*.sql in name order, each once, each in its own transaction."""

from __future__ import annotations

from importlib.resources import files

import psycopg

# Any constant works; it keeps two concurrent `migrate` runs (compose, CI) from racing.
_MIGRATE_LOCK = 7_240_101

_CREATE_VERSIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     text PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


def migration_files() -> list[tuple[str, str]]:
    folder = files("schema").joinpath("migrations")
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(name.removesuffix(".sql"), folder.joinpath(name).read_text()) for name in names]


def migrate(database_url: str, until: str | None = None) -> list[str]:
    """Return the versions applied by this call (empty when already up to date).

    ``until`` stops after that version (tests of a migration on older data use it).
    """
    applied: list[str] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATE_LOCK,))
        try:
            conn.execute(_CREATE_VERSIONS)
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for version, sql in migration_files():
                if until is not None and version > until:
                    break
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(sql)  # type: ignore[arg-type]  # trusted file shipped with us
                    conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
                applied.append(version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATE_LOCK,))
    return applied


def ensure_database(database_url: str) -> bool:
    """Create the database named in the URL if it is missing; True when created."""
    info = psycopg.conninfo.conninfo_to_dict(database_url)
    name = info.get("dbname")
    if not name:
        return False
    admin = psycopg.conninfo.make_conninfo(database_url, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            return False
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
    return True


# The group roles of migration 0002 that a service's login role may join.
GROUPS = ("changewatch_worker", "changewatch_producer")


def ensure_login(database_url: str, user: str, password: str, group: str) -> bool:
    """Create (or update the password of) a login role in ``group``; True when created.

    Services log in as these, never as the schema's owner: a leaked worker or producer
    credential can then do that service's job and nothing more.
    """
    if group not in GROUPS:
        raise ValueError(f"group must be one of {GROUPS}, got {group!r}")
    sql = psycopg.sql
    role = sql.Identifier(user)
    with psycopg.connect(database_url, autocommit=True) as conn, conn.transaction():
        # Hashed by libpq (SCRAM, as the server asks): no plain password in server logs.
        hashed = conn.pgconn.encrypt_password(password.encode(), user.encode()).decode()
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)).fetchone()
        verb = sql.SQL("ALTER" if exists else "CREATE")
        conn.execute(
            sql.SQL("{} ROLE {} LOGIN PASSWORD {}").format(verb, role, sql.Literal(hashed))
        )
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), role))
    return not exists
