"""The data tier can be sharded by person (Citus, distributed by ``user_id``).

Citus does not install here, so its rules are checked on the migrated schema and on the
store's own SQL, with Postgres's catalog and planner as the judges:

- Keys (pg_catalog): every table that holds a person's data has ``user_id`` in every
  primary key, unique key and foreign key, and its foreign keys join on ``user_id`` (the
  tables are then colocated, and no key spans two shards).
- Statements: every statement of the store (worker/store, producer/store, forget-user's
  rows) is prepared and its generic plan read: each scan of a person's table filters on
  ``user_id = $n`` (single-shard), each INSERT into one names ``user_id``, and each
  function it calls that touches a person's table takes the person. The few statements
  that must read across people are listed below with their reason; a new one fails here
  until it names the person or is listed.
- The person's lock is a row lock on their ``users`` row, not an advisory lock (an
  advisory lock holds only on the node that takes it).

docs/scaling.md ("Sharding by person") has the create_distributed_table calls that follow.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from changewatch.schema.forgetting.rows import CLAIM_SESSION_ID

ROOT = Path(__file__).resolve().parents[2]

# How each table is placed on a Citus cluster (docs/scaling.md). A new table fails the
# test until it is placed here.
BY_USER = {
    "users",
    "sessions",
    "analysis_requests",
    "angle_embeddings",
    "analyses",
    "baseline_sums",
    "packed_sums",
    "comparisons",
    "backfill_jobs",
    "deleted_sessions",
    "outbox",
}
REFERENCE = {"models"}  # small, shared by everyone: one copy on every node
ELSEWHERE = {
    # The digest of a forgotten id is all it keeps: distributed by user_digest.
    "forgotten_users": "user_digest",
    # Messages that may name no valid person (their own distribution column could be
    # NULL): kept on the coordinator.
    "rejected_messages": None,
    "schema_migrations": None,
}

# The store's modules: every statement they run.
STORE = [
    *sorted(ROOT.glob("worker/store/*.py")),
    *sorted(ROOT.glob("producer/store/*.py")),
    ROOT / "schema/forgetting/rows.py",
]

# Statements that read or write across people, by a fragment of their text, and why.
# Citus runs each on every shard: fine for what is rare or operators' work, never for the
# per-session path (only OTHER_OWNER is on it, and it reads one index entry per shard).
ACROSS_PEOPLE = {
    "WHERE session_id = %(sid)s AND user_id <> %(uid)s": (
        "a session id is one person's: the writers of a new session check nobody else has it"
    ),
    "WHERE session_id = %s AND user_id <> %s LIMIT 1": (
        "why a comparison or delete of a session that is not the person's is refused"
    ),
    "SELECT session_deleted(%s)": (
        "a backfill message and the producer's status name the session only"
    ),
    "FROM deleted_sessions WHERE session_digest = session_digest(%(s)s)": (
        "the producer's status and delete-session are keyed by the session id"
    ),
    "SELECT * FROM sessions WHERE session_id = %s": "the producer's status, by session id",
    "SELECT user_id FROM sessions WHERE session_id = %(s)s": "delete-session finds the person",
    "SELECT session_id, user_id FROM sessions WHERE session_id = ANY(%s)": (
        "compare checks both sessions' owner"
    ),
    "SELECT status, count(*) AS n FROM sessions WHERE session_id = ANY(%s)": (
        "a bulk enqueue's progress, by its session ids"
    ),
    "SELECT session_id, good_images FROM sessions WHERE session_id = ANY(%s)": (
        "the report's photos, by session ids"
    ),
    "SELECT session_id, user_id, captured_at, images FROM sessions WHERE": (
        "operators' list of failed jobs"
    ),
    "UPDATE sessions SET status = 'failed', error_code = %s, error_message = %s,": (
        "the reaper fails a lost job it cannot send again (rare)"
    ),
    "FROM comparisons c": "the producer reads a comparison by its two session ids",
    "SELECT s.user_id, s.session_id, s.good_request_seq": (
        "the backfill planner lists every session a model lacks"
    ),
    "(SELECT count(*) FROM analyses a WHERE a.model_id = m.model_id)": (
        "models lists each model's number of analyses"
    ),
    "SELECT count(*) AS n FROM sessions s JOIN analyses a": "a backfill's progress",
    "SELECT session_id, error_code, error_message FROM backfill_jobs": "a backfill's failures",
    "UPDATE backfill_jobs SET": "a backfill message names the session only (EmbedJob)",
    "SELECT s.user_id, s.good_captured_at, s.good_images": (
        "a backfill message names the session only: this finds the person"
    ),
    "SELECT good_request_seq, good_task_id FROM sessions": (
        "the backfill write's guard (the person's lock is held: same shard)"
    ),
    "FROM outbox ORDER BY id": "the relay sends every person's notifications in order",
    "DELETE FROM outbox WHERE id = ANY(%s)": "the relay, once the broker took them",
    "UPDATE outbox SET attempts": "the relay, when the broker refused one",
    "SELECT count(*) FROM outbox": "the outbox depth (a metric)",
    "WHERE status IN ('queued', 'running') AND updated_at < now()": (
        "the reaper scans every person's jobs by time"
    ),
}

_VERB = re.compile(r"^\s*(WITH|SELECT|INSERT|UPDATE|DELETE)\s")
_PLACEHOLDER = re.compile(r"%\((\w+)\)[sbt]|%[sbt]")
_CONDITIONS = ("Index Cond", "Recheck Cond", "Filter", "Join Filter", "TID Cond")
_BY_PERSON = re.compile(r"\buser_id = \$\d+")
_INSERT = re.compile(r"INSERT INTO (\w+)\s*\(([^)]*)\)", re.IGNORECASE)
_CALL = re.compile(r"\b(\w+)\(([^()]*)\)")


def store_statements(paths: list[Path]) -> Iterator[tuple[str, str]]:
    """(module, SQL) for every statement in the modules: their module-level strings (and
    dicts of them) as Python built them, and every SQL literal in their functions."""
    for path in paths:
        rel = path.relative_to(ROOT).with_suffix("")
        module = importlib.import_module("changewatch." + ".".join(rel.parts))
        built: list[str] = []
        for value in vars(module).values():
            values = value.values() if isinstance(value, dict) else [value]
            built += [v for v in values if isinstance(v, str) and _VERB.match(v)]
        yield from ((str(rel), sql) for sql in built)
        tree = ast.parse(path.read_text())
        functions = [f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)]
        formatted = {  # in functions: module-level ones are among the strings built above
            id(part)
            for function in functions
            for f in ast.walk(function)
            if isinstance(f, ast.JoinedStr)
            for part in f.values
        }
        for node in ast.walk(tree):
            literal = isinstance(node, ast.Constant) and isinstance(node.value, str)
            if not literal or not _VERB.match(node.value):
                continue
            if id(node) in formatted:  # SQL built when it runs: not checkable
                yield str(rel), "f-string: " + node.value
            elif not any(node.value in b for b in built):
                yield str(rel), node.value


def _numbered(sql: str) -> tuple[str, int]:
    """psycopg's placeholders as $n (a name keeps its number), and how many."""
    names: dict[str, int] = {}
    count = 0

    def number(match: re.Match[str]) -> str:
        nonlocal count
        if match.group(1) is None:
            count += 1
            return f"${count}"
        if match.group(1) not in names:
            count += 1
            names[match.group(1)] = count
        return f"${names[match.group(1)]}"

    return _PLACEHOLDER.sub(number, sql), count


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def problems(conn: psycopg.Connection[Any], sql: str) -> list[str]:
    """What in one statement could not run on a single person's shard."""
    found = []
    numbered, count = _numbered(sql)
    conn.execute("PREPARE cw_citus_check AS " + numbered)
    try:
        args = ", ".join(["NULL"] * count)
        explain = "EXPLAIN (VERBOSE, FORMAT JSON) EXECUTE cw_citus_check"
        row = conn.execute(explain + (f"({args})" if count else "")).fetchone()
    finally:
        conn.execute("DEALLOCATE cw_citus_check")
    assert row is not None
    plan = row[0] if isinstance(row[0], list) else json.loads(row[0])
    for node in _nodes(plan[0]["Plan"]):
        table = node.get("Relation Name")
        if table not in BY_USER or node["Node Type"] == "ModifyTable":
            continue
        conditions = " ".join(str(node.get(key, "")) for key in _CONDITIONS)
        if not _BY_PERSON.search(conditions):
            found.append(f"reads {table} without user_id = ...")
    for table, columns in _INSERT.findall(sql):
        if table in BY_USER and "user_id" not in [c.strip() for c in columns.split(",")]:
            found.append(f"inserts into {table} without user_id")
    for name, args in _CALL.findall(sql):
        arity = len(args.split(",")) if args.strip() else 0
        function = conn.execute(
            "SELECT proargnames, pg_get_functiondef(oid) FROM pg_proc"
            " WHERE proname = %s AND pronargs = %s AND pronamespace = 'public'::regnamespace",
            (name, arity),
        ).fetchone()
        if function is None:
            continue
        argnames, source = function
        touches = [t for t in BY_USER if re.search(rf"\b{t}\b", source)]
        if touches and (not argnames or argnames[0] != "u"):
            found.append(f"calls {name}() on {', '.join(sorted(touches))} without the person")
    return found


def key_problems(conn: psycopg.Connection[Any]) -> list[str]:
    """Tables, keys and foreign keys that could not be distributed by user_id."""
    found = []
    tables = {
        r[0]: set(r[1])
        for r in conn.execute(
            "SELECT c.relname, array_agg(a.attname::text) FROM pg_class c"
            " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped"
            " WHERE c.relkind IN ('r', 'p') AND c.relnamespace = current_schema()::regnamespace"
            " GROUP BY c.relname"
        )
    }
    placed = BY_USER | REFERENCE | set(ELSEWHERE)
    for table, columns in sorted(tables.items()):
        if table not in placed:
            found.append(f"{table}: not placed (by user_id, reference or elsewhere)")
        elif "user_id" in columns and table not in BY_USER:
            found.append(f"{table}: holds user_id but is not distributed by it")
        elif table in BY_USER and "user_id" not in columns:
            found.append(f"{table}: has no user_id")
    # Primary keys, unique constraints and unique indexes of the person's tables.
    for table, index, columns in conn.execute(
        "SELECT t.relname, i.relname, array_agg(a.attname::text ORDER BY k.n)"
        "  FROM pg_index x JOIN pg_class t ON t.oid = x.indrelid"
        "  JOIN pg_class i ON i.oid = x.indexrelid"
        "  CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, n)"
        "  LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum"
        " WHERE x.indisunique AND t.relnamespace = current_schema()::regnamespace"
        " GROUP BY t.relname, i.relname"
    ):
        if table in BY_USER and "user_id" not in columns:
            found.append(f"{table}: unique key {index} {columns} lacks user_id")
    for table, target, name, mine, theirs in conn.execute(
        "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text, c.conname,"
        "       array(SELECT attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, o)"
        "             JOIN pg_attribute ON attrelid = c.conrelid AND attnum = k.n ORDER BY o),"
        "       array(SELECT attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, o)"
        "             JOIN pg_attribute ON attrelid = c.confrelid AND attnum = k.n ORDER BY o)"
        "  FROM pg_constraint c"
        " WHERE c.contype = 'f' AND c.connamespace = current_schema()::regnamespace"
    ):
        if target in REFERENCE:
            continue  # distributed or reference -> reference: allowed
        if table not in BY_USER or target not in BY_USER:
            found.append(f"{table}: foreign key {name} to {target} crosses placements")
        elif ("user_id", "user_id") not in zip(mine, theirs, strict=True):
            found.append(f"{table}: foreign key {name} {mine} -> {target} {theirs} lacks user_id")
    return found


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url) as conn:
        conn.execute("SET plan_cache_mode = force_generic_plan")
        yield conn
        conn.rollback()


def test_every_key_of_a_persons_tables_carries_user_id(conn: psycopg.Connection[Any]) -> None:
    assert key_problems(conn) == []


def test_the_key_check_refuses_a_table_that_could_not_be_distributed(
    conn: psycopg.Connection[Any],
) -> None:
    """A person's table keyed by session alone, and a foreign key on session alone.

    The keys are NOT VALID: earlier tests leave rows that would not satisfy them, and the
    check reads the catalogue, not the rows.
    """
    conn.execute("CREATE TABLE scratch_notes (session_id uuid PRIMARY KEY, user_id uuid)")
    conn.execute("CREATE UNIQUE INDEX scratch_idx ON analyses (session_id, model_id, revision)")
    conn.execute(
        "ALTER TABLE outbox ADD CONSTRAINT scratch_fk FOREIGN KEY (user_id) REFERENCES users"
        " NOT VALID"
    )
    conn.execute(
        "ALTER TABLE deleted_sessions ADD CONSTRAINT scratch_fk2 FOREIGN KEY (session_digest)"
        " REFERENCES forgotten_users (user_digest) NOT VALID"
    )
    found = key_problems(conn)
    assert any(p.startswith("scratch_notes: not placed") for p in found), found
    assert any("scratch_idx" in p for p in found), found
    assert any("scratch_fk2" in p and "crosses" in p for p in found), found
    assert not any("scratch_fk " in p for p in found), found  # user_id -> user_id is fine


def test_every_statement_of_the_store_names_the_person(conn: psycopg.Connection[Any]) -> None:
    statements = list(store_statements(STORE))
    assert len(statements) > 80  # the scan found the store's SQL
    failing, used = [], set()
    for module, sql in statements:
        flat = " ".join(sql.split())
        allowed = [k for k in ACROSS_PEOPLE if " ".join(k.split()) in flat]
        if sql.startswith("f-string: "):
            failing.append(f"{module}: {flat[:160]}: build it as a module constant")
            continue
        found = problems(conn, sql)
        if found and allowed:
            used.update(allowed)
        elif found:
            failing.append(f"{module}: {flat[:160]}: {'; '.join(found)}")
    assert failing == []
    assert set(ACROSS_PEOPLE) - used == set(), "listed, but no longer reading across people"


def test_the_statement_check_refuses_what_spans_people(conn: psycopg.Connection[Any]) -> None:
    assert problems(conn, "SELECT 1 FROM sessions WHERE session_id = %s") == [
        "reads sessions without user_id = ..."
    ]
    assert problems(
        conn,
        "SELECT a.change_score FROM analyses a JOIN angle_embeddings e"
        " ON e.session_id = a.session_id WHERE a.user_id = %(u)s",
    ) == ["reads angle_embeddings without user_id = ..."]
    assert problems(
        conn, "INSERT INTO angle_embeddings (session_id, angle, model_id) VALUES (%s, 'x', 'm')"
    ) == ["inserts into angle_embeddings without user_id"]
    assert problems(conn, "SELECT session_deleted(%s)") == [
        "calls session_deleted() on deleted_sessions without the person"
    ]
    assert problems(conn, "SELECT session_deleted(%s, %s)") == []
    # Joined on the person, the planner carries user_id = $1 to every table.
    assert (
        problems(
            conn,
            "SELECT e.angle FROM analyses a JOIN angle_embeddings e"
            " USING (user_id, session_id, model_id) WHERE a.user_id = %s",
        )
        == []
    )


def test_the_person_lock_is_a_row_lock_on_their_users_row(
    conn: psycopg.Connection[Any],
) -> None:
    (source,) = conn.execute("SELECT prosrc FROM pg_proc WHERE proname = 'lock_user'").fetchone()
    assert "advisory" not in source
    assert re.search(r"FROM users WHERE user_id = u FOR NO KEY UPDATE", source)
    for path in STORE:
        # The one advisory lock is the session id's claim, not a person's: it serializes
        # two people's first claims of one id on the node every connection reaches.
        assert "advisory_xact_lock" not in path.read_text().replace(CLAIM_SESSION_ID, ""), path
