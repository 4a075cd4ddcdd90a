"""Deleting a session, as pure functions: the numbers left are those of a history in
which it never was, bit for bit, and the wire task's payload is checked like the others."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from changewatch.schema import authority
from changewatch.schema.contract import DELETE_TASK, parse_delete
from changewatch.schema.errors import JobError
from changewatch.worker.score import (
    History,
    Scored,
    StoredSession,
    Totals,
    analyze_history,
    remove,
    stored_values,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)
RNG = np.random.default_rng(11)


def session(day: int, angles: tuple[str, ...]) -> StoredSession:
    return StoredSession(
        uuid.uuid4(),
        T0 + timedelta(days=day),
        {a: RNG.normal(size=32).astype(np.float32) for a in angles},
    )


def history_of(sessions: list[StoredSession], since: datetime) -> History:
    """What a write reads: sums over everything, stored numbers from ``since`` on."""
    totals = Totals()
    for item in sessions:
        totals.add(item.angles)
    stored = {a.session_id: a for a in analyze_history(sessions)}
    suffix = {
        s.session_id: Scored(s, stored_values(stored[s.session_id]))
        for s in sessions
        if s.captured_at >= since
    }
    return History(totals, suffix)


@pytest.mark.parametrize("gone", [0, 2, 3, 6])
def test_removing_a_session_leaves_the_numbers_of_a_history_without_it(gone: int) -> None:
    """The first, a middle one, one tied with another's capture time, and the last: the
    later sessions' numbers and the sums equal those of the history without it."""
    three, four = ("front", "left", "right"), ("front", "left", "right", "up")
    sessions = [
        session(0, three),
        session(7, four),
        session(14, ("front", "raised", "down")),  # the only session with raised, down
        session(21, three),
        session(28, four),
        session(28, three),  # captured with the one before: not each other's baseline
        session(35, four),
    ]
    sessions[3] = StoredSession(sessions[3].session_id, sessions[4].captured_at, sessions[3].angles)
    victim = sessions[gone]
    removal = remove(history_of(sessions, victim.captured_at), victim.session_id)

    without = [s for s in sessions if s is not victim]
    expected = {a.session_id: a for a in analyze_history(without)}
    before = {a.session_id: a for a in analyze_history(sessions)}
    for analysis in removal.changed:
        assert analysis == expected[analysis.session_id]  # exact, not approximately
    unchanged = set(expected) - {a.session_id for a in removal.changed}
    assert all(before[sid] == expected[sid] for sid in unchanged)

    reference = Totals()
    for item in without:
        reference.add(item.angles)
    assert removal.totals.sessions == reference.sessions
    for angle in set(reference.angles) | set(removal.totals.angles):
        count, total = removal.totals.angles.get(angle, (0, np.zeros(32, np.int64)))
        ref_count, ref_total = reference.angles.get(angle, (0, np.zeros(32, np.int64)))
        assert count == ref_count and np.array_equal(total, ref_total), angle


SECRET = "unit-test-delete-secret"


def test_the_delete_payload_is_checked_like_every_other() -> None:
    """Its fields, then its token: signed with the shared secret, for this session."""
    user, sid = uuid.uuid4(), uuid.uuid4()
    token = authority.sign(SECRET, DELETE_TASK, sid)
    payload = {"user_id": str(user), "session_id": str(sid), "token": token}
    job = parse_delete(payload, SECRET)
    assert (job.user_id, job.session_id) == (user, sid)
    assert job.to_payload() == payload
    with pytest.raises(JobError, match="unknown field"):
        parse_delete({**payload, "all": True}, SECRET)
    with pytest.raises(JobError) as err:
        parse_delete({**payload, "session_id": "nope"}, SECRET)
    assert err.value.code == "invalid_uuid"
    assert DELETE_TASK == "changewatch.delete_session"


def test_a_delete_without_a_token_for_that_session_is_refused() -> None:
    user, sid = uuid.uuid4(), uuid.uuid4()
    other = authority.sign(SECRET, DELETE_TASK, uuid.uuid4())
    forget = authority.sign(SECRET, "changewatch.forget_person", sid)
    for token in ("", "v1.1.abc", other, forget):
        with pytest.raises(JobError) as err:
            parse_delete({"user_id": str(user), "session_id": str(sid), "token": token}, SECRET)
        assert err.value.code in ("not_authorized", "token_expired")
    with pytest.raises(JobError) as err:  # a worker without the secret deletes nothing
        token = authority.sign(SECRET, DELETE_TASK, sid)
        parse_delete({"user_id": str(user), "session_id": str(sid), "token": token}, "")
    assert err.value.code == "not_authorized"
