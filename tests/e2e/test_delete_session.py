"""delete-session against the running stack, with real photos: afterwards the person's
history is, score for score, the history of a second person who sent the same sessions
without the deleted one; its photos and rows are gone; a late job for it is refused.

The reference person's sessions run one at a time, as the first person's do, so each
forward pass holds the same photos and the embeddings are the same bit for bit.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from botocore.exceptions import ClientError

from bench.harness.faults import paused
from bench.harness.services import S3Server
from changewatch.producer import Producer
from changewatch.schema.contract import ANALYZE_TASK, QUEUE
from changewatch.schema.errors import JobError
from tests.helpers import T0, Uploader, cli, query, six

pytestmark = pytest.mark.usefixtures("worker")

SESSIONS = 5
TOLERANCE = 1e-9
# Fields that name a session or a request rather than measure it.
NAMES = {"session_id", "user_id", "request_task_id", "captured_at"}


def _send(
    producer: Producer,
    user: uuid.UUID,
    images: list[dict[str, str]],
    weeks: list[int] | None = None,
) -> list[uuid.UUID]:
    """The person's sessions, in the given weeks (a week apart by default), each
    analyzed before the next is sent."""
    ids = []
    for i, files in enumerate(images):
        sid = uuid.uuid4()
        week = weeks[i] if weeks else i
        producer.analyze(user, sid, T0 + timedelta(days=7 * week), files)
        producer.wait(sid, timeout=240)
        ids.append(sid)
    return ids


def _numbers(value: Any, path: str = "") -> dict[str, Any]:
    """Every measured leaf of a result (numbers, flags, words), by its path."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key not in NAMES:
                out |= _numbers(item, f"{path}.{key}")
        return out
    if isinstance(value, list):
        out = {}
        for i, item in enumerate(value):
            out |= _numbers(item, f"{path}[{i}]")
        return out
    return {path: value}


def assert_same_history(producer: Producer, user: uuid.UUID, reference: uuid.UUID) -> int:
    """``history`` of both people: the same sessions, every number within 1e-9. Returns
    how many numbers were compared (and prints the largest difference, for ``-s``)."""
    mine, theirs = producer.history(user), producer.history(reference)
    assert len(mine) == len(theirs)
    compared, worst = 0, 0.0
    for a, b in zip(mine, theirs, strict=True):
        left, right = _numbers(a), _numbers(b)
        assert left.keys() == right.keys()
        for path, value in left.items():
            if isinstance(value, float) and not isinstance(value, bool):
                assert abs(value - right[path]) <= TOLERANCE, (path, value, right[path])
                compared, worst = compared + 1, max(worst, abs(value - right[path]))
            else:
                assert value == right[path], (path, value, right[path])
    print(f"history of {len(mine)} sessions: {compared} numbers, largest difference {worst:g}")
    return compared


def _gone(s3: Any, uri: str) -> bool:
    bucket, _, key = uri[len("s3://") :].partition("/")
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError:
        return True
    return False


def _rejected(dsn: str, task_id: str, timeout: float = 180.0) -> tuple[Any, ...]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = query(
            dsn,
            "SELECT error_code, session_id, payload FROM rejected_messages WHERE task_id = %s",
            (task_id,),
        )
        if rows:
            return rows[0]
        time.sleep(0.2)
    raise AssertionError(f"task {task_id} was never refused")


def test_delete_session_leaves_the_history_of_a_person_who_never_sent_it(
    photos: Path, uploader: Uploader, producer: Producer, s3: Any
) -> None:
    """Delete the middle one of five sessions with the CLI: the later sessions are
    rescored to the reference person's numbers, its photos, rows, comparison and results
    are gone and nothing is left; a late job for it is refused with session_deleted."""
    user, reference = uuid.uuid4(), uuid.uuid4()
    files = [six(photos, shift) for shift in range(SESSIONS)]
    images = [uploader.session(user, f) for f in files]
    ids = _send(producer, user, images)
    # The reference person sent the same sessions at the same times, but for the third.
    kept = files[:2] + files[3:]
    _send(producer, reference, [uploader.session(reference, f) for f in kept], [0, 1, 3, 4])
    gone = ids[2]
    producer.compare(user, ids[3], gone)
    producer.wait_comparison(ids[3], gone, timeout=240)
    before = producer.result(ids[3])["change_score"]

    code, report, err = cli("delete-session", str(gone))
    assert code == 0, err
    assert report is not None and report["status"] == "deleted"
    assert set(report["remaining"].values()) == {0}, report
    assert report["deleted"]["analyses"] == 1 and report["deleted"]["comparisons"] == 1
    assert report["deleted"]["objects"] == 6
    assert list(report["rescored"].values()) == [2]  # the two later sessions
    assert producer.result(ids[3])["change_score"] != before
    assert assert_same_history(producer, user, reference) > 100
    assert all(_gone(s3, uri) for uri in images[2].values())
    assert not any(_gone(s3, uri) for i in (1, 3) for uri in images[i].values())
    assert producer.status(gone)["error"]["code"] == "session_deleted"

    with pytest.raises(JobError, match="deleted") as refused:  # refused before enqueueing
        producer.analyze(user, gone, T0, images[3])
    assert refused.value.code == "session_deleted"
    late = producer.celery.send_task(  # as a sender writing to Redis directly
        ANALYZE_TASK,
        kwargs={
            "user_id": str(user),
            "session_id": str(gone),
            "captured_at": T0.isoformat(),
            "images": images[3],
        },
        queue=QUEUE,
    )
    assert late.get(timeout=120) == {"status": "deleted"}
    code_, session, payload = _rejected(producer.dsn, late.id)
    assert (code_, session) == ("session_deleted", None) and str(gone) not in str(payload)
    assert query(producer.dsn, "SELECT count(*) FROM sessions WHERE session_id = %s", (gone,)) == [
        (0,)
    ]
    assert assert_same_history(producer, user, reference) > 100

    code, _, err = cli("delete-session", str(uuid.uuid4()))
    assert code == 1 and "no session" in err


def _in_flight(producer: Producer, s3_server: S3Server, send: Any, delete: Any) -> None:
    """``send()`` a job whose photo reads hang on a frozen S3; once it runs, ``delete()``
    (in a thread: it deletes photos too), and let S3 go once the delete has committed."""
    assert s3_server.process is not None
    tombstones = query(producer.dsn, "SELECT count(*) FROM deleted_sessions")
    with paused(s3_server.process):
        sid = send()
        deadline = time.monotonic() + 60
        while producer.status(sid)["status"] != "running":
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.1)
        deleting = threading.Thread(target=delete)
        deleting.start()
        deadline = time.monotonic() + 120
        while query(producer.dsn, "SELECT count(*) FROM deleted_sessions") == tombstones:
            assert time.monotonic() < deadline, "the delete never committed"
            time.sleep(0.1)
    deleting.join(timeout=180)  # its photo deletion waited for S3


@pytest.mark.parametrize("job", ["of the deleted session", "of a later session"])
def test_delete_session_with_a_job_in_flight(
    job: str, photos: Path, uploader: Uploader, producer: Producer, s3: Any, s3_server: S3Server
) -> None:
    """A job of the person is running (its photo reads hang) when the delete commits. A
    re-analysis of the deleted session ends as ``{"status": "deleted"}`` without writing;
    a later session's analysis is stored. Either way the history is that of a person who
    sent the same sessions without the deleted one."""
    user, reference = uuid.uuid4(), uuid.uuid4()
    files = [six(photos, shift) for shift in (1, 3, 5, 7)]
    images = [uploader.session(user, f) for f in files]
    later = job == "of a later session"
    ids = _send(producer, user, images[:3] if later else images)
    kept = files[:1] + files[2:]
    _send(producer, reference, [uploader.session(reference, f) for f in kept], [0, 2, 3])
    gone, report, sent = ids[1], {}, {}

    def send() -> uuid.UUID:
        sid = uuid.uuid4() if later else gone
        at = T0 + timedelta(days=21 if later else 7)
        sent.update(producer.analyze(user, sid, at, images[3] if later else images[1]))
        return sid

    _in_flight(
        producer, s3_server, send, lambda: report.update(producer.delete_session(gone, s3=s3))
    )
    assert report and set(report["remaining"].values()) == {0}, report
    assert report["deleted"]["delivered_messages"] == (0 if later else 1)
    outcome = producer.celery.AsyncResult(sent["task_id"]).get(timeout=120)
    if later:
        assert outcome["status"] == "succeeded"
    else:
        assert outcome == {"status": "deleted"}
        code, session, _ = _rejected(producer.dsn, sent["task_id"])
        assert (code, session) == ("session_deleted", None)
    with psycopg.connect(producer.dsn) as conn:
        left = conn.execute(
            "SELECT (SELECT count(*) FROM analyses WHERE session_id = %(s)s),"
            " (SELECT count(*) FROM angle_embeddings WHERE session_id = %(s)s),"
            " (SELECT count(*) FROM sessions WHERE session_id = %(s)s)",
            {"s": gone},
        ).fetchone()
    assert left == (0, 0, 0)
    assert assert_same_history(producer, user, reference) > 50
    assert all(_gone(s3, uri) for uri in images[1].values())
