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
_KEYS = {"sessions": ("session_id",), "comparisons": ("current_session_id", "previous_session_id")}
_ORDER = {"sessions": " ORDER BY captured_at", "comparisons": ""}


def stale(conn: Conn, table: Table, older_than: float) -> list[Row]:
    """Rows queued or running, unchanged for ``older_than`` seconds."""
    return conn.execute(
        f"SELECT {_COLUMNS[table]} FROM {table} WHERE status IN ('queued', 'running')"
        " AND updated_at < now() - make_interval(secs => %s)" + _ORDER[table],
        (older_than,),
    ).fetchall()


def claim(conn: Conn, table: Table, row: Row) -> bool:
    """Touch the row only if nobody changed it since it was read: one reaper wins."""
    keys = _KEYS[table]
    where = " AND ".join(f"{key} = %s" for key in keys)
    claimed = conn.execute(
        f"UPDATE {table} SET updated_at = now() WHERE {where}"
        " AND status IN ('queued', 'running') AND updated_at = %s RETURNING 1",
        (*(row[key] for key in keys), row["updated_at"]),
    ).fetchone()
    return claimed is not None
