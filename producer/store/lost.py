"""Jobs the reaper may find lost: ``sessions`` and ``comparisons`` rows still queued or
running after ``older_than`` seconds, and the claim that lets one reaper re-send each.

Both tables follow the same rule, so it is stated once here with the table as a
parameter (fixed names only, never input).
"""

from __future__ import annotations

from typing import Literal

from . import Conn, Row

Table = Literal["sessions", "comparisons"]

# What a re-send needs of each row, its key columns, and the order to re-send in.
_COLUMNS = {
    "sessions": "session_id, user_id, captured_at, images, updated_at",
    "comparisons": "current_session_id, previous_session_id, user_id, updated_at",
}
_KEYS = {
    "sessions": ("user_id", "session_id"),
    "comparisons": ("user_id", "current_session_id", "previous_session_id"),
}
_ORDER = {"sessions": " ORDER BY captured_at", "comparisons": ""}
TABLES: tuple[Table, ...] = ("sessions", "comparisons")

# The reaper's scan (across people, by time) and its claim of one row (by its keys,
# which name the person), per table.
STALE_SQL = {
    table: f"SELECT {_COLUMNS[table]} FROM {table} WHERE status IN ('queued', 'running')"
    " AND updated_at < now() - make_interval(secs => %s)" + _ORDER[table]
    for table in TABLES
}
CLAIM_SQL = {
    table: f"UPDATE {table} SET updated_at = now() WHERE "
    + " AND ".join(f"{key} = %s" for key in _KEYS[table])
    + " AND status IN ('queued', 'running') AND updated_at = %s RETURNING 1"
    for table in TABLES
}


def stale(conn: Conn, table: Table, older_than: float) -> list[Row]:
    """Rows queued or running, unchanged for ``older_than`` seconds."""
    return conn.execute(STALE_SQL[table], (older_than,)).fetchall()


def claim(conn: Conn, table: Table, row: Row) -> bool:
    """Touch the row only if nobody changed it since it was read: one reaper wins."""
    keys = _KEYS[table]
    claimed = conn.execute(
        CLAIM_SQL[table], (*(row[key] for key in keys), row["updated_at"])
    ).fetchone()
    return claimed is not None
