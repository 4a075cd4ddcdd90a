"""Deleting one session (``changewatch.delete_session``): one transaction under the
person's lock.

For every model with an analysis of the session, the write reads the history as an
analysis write does (``open_write``: the sums and the sessions from its capture time
on), ``score.remove`` takes it out of the sums and rescores the later sessions through
``score.rescore_suffix``, and ``Write.remove`` stores that. Then ``delete_session()``
(migration 0008) deletes the session's rows behind a tombstone. The numbers left are
those of a history in which the session never was; a job of the session that reaches its
write afterwards finds it gone and the tombstone (``session_deleted``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from psycopg_pool import ConnectionPool

from ...schema.contract import DeleteJob, other_users_session
from ...schema.errors import Code, JobError
from ...schema.forgetting.rows import OTHER_OWNER, session_rows
from ...schema.status import Status
from .. import score
from .analyses import Target, open_write
from .people import check_user, lock_user
from .vectors import Conn

# The analysis a removal starts from (the session row is already locked).
_ANALYSIS_GUARD = """
    SELECT 1 FROM analyses WHERE user_id = %(uid)s AND session_id = %(sid)s AND model_id = %(model)s
"""
_TASKS_SQL = """
    SELECT task_id FROM analysis_requests WHERE user_id = %(u)s AND session_id = %(s)s
    UNION SELECT task_id FROM comparisons
     WHERE user_id = %(u)s AND (current_session_id = %(s)s OR previous_session_id = %(s)s)
    UNION SELECT task_id FROM rejected_messages WHERE session_id = %(s)s
"""


@dataclass
class Deleted:
    """What the delete did: rows by table, later sessions rescored per model, and what
    the caller still has to remove outside Postgres (photos, Celery's results)."""

    already: bool = False  # deleted before (a re-sent delete): nothing left to do here
    counts: dict[str, int] = field(default_factory=dict)
    rescored: dict[str, int] = field(default_factory=dict)
    objects: set[str] = field(default_factory=set)
    task_ids: set[str] = field(default_factory=set)

    def report(self, job: DeleteJob) -> dict[str, Any]:
        return {
            **job.to_payload(),
            "status": Status.SUCCEEDED,
            "already_deleted": self.already,
            "deleted": self.counts,
            "rescored": self.rescored,
            "objects": sorted(self.objects),
            "task_ids": sorted(self.task_ids),
        }


def _owner(conn: Conn, job: DeleteJob) -> dict[str, Any] | None:
    """The session's row, locked; None when it was deleted before (by this person)."""
    key = {"u": job.user_id, "s": job.session_id}
    row = conn.execute(
        "SELECT images, good_images FROM sessions"
        " WHERE user_id = %(u)s AND session_id = %(s)s FOR UPDATE",
        key,
    ).fetchone()
    if row is not None:
        return {"images": row[0], "good_images": row[1]}
    if conn.execute("SELECT session_deleted(%(u)s, %(s)s)", key).fetchone() == (True,):
        return None
    # Not theirs, now or before: someone else's (a read across people, on this refusal only)?
    if conn.execute(OTHER_OWNER, {"uid": job.user_id, "sid": job.session_id}).fetchone() == (True,):
        raise other_users_session()
    raise JobError(Code.SESSION_NOT_FOUND, f"session {job.session_id} does not exist")


def _rescore_without(conn: Conn, job: DeleteJob) -> dict[str, int]:
    """Every model's history without the session: model id -> later sessions rescored."""
    rescored = {}
    models = conn.execute(
        "SELECT model_id, captured_at FROM analyses"
        " WHERE user_id = %s AND session_id = %s ORDER BY model_id",
        (job.user_id, job.session_id),
    ).fetchall()
    for model_id, captured_at in models:
        target = Target(job.user_id, job.session_id, captured_at, model_id, 0)
        _, write = open_write(conn, _ANALYSIS_GUARD, target)
        removal = score.remove(write.history, job.session_id)
        write.remove(removal)
        rescored[model_id] = len(removal.changed)
    return rescored


def delete_session(pool: ConnectionPool, job: DeleteJob) -> Deleted:
    """The session out of every model's sums, later sessions rescored, its rows gone.

    Raises ``JobError``: the person forgotten or unknown, the session another person's
    or no session at all.
    """
    done = Deleted()
    with pool.connection() as conn, conn.transaction():
        lock_user(conn, job.user_id)
        check_user(conn, job.user_id)
        row = _owner(conn, job)
        if row is None:
            done.already = True
            return done
        for images in (row["images"], row["good_images"]):
            done.objects.update((images or {}).values())
        params = {"u": job.user_id, "s": job.session_id}
        done.counts = session_rows(conn, job.user_id, job.session_id)  # counted before they go
        done.task_ids = {r[0] for r in conn.execute(_TASKS_SQL, params) if r[0]}
        done.rescored = _rescore_without(conn, job)
        conn.execute("SELECT delete_session(%s, %s)", (job.user_id, job.session_id))
        done.counts["sessions"] = 1
    return done
