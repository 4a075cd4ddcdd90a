"""Operator actions against the running stack: replay failed jobs, forget a user, bulk
enqueue, and the reaper re-sending a job whose message was lost (the worker's health
checks are in tests/integration/test_operations.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg.types.json import Jsonb

from bench.harness.services import ROOT
from changewatch.producer import Producer, reaper
from changewatch.producer.admin import forget_user, retry_failed
from changewatch.schema.contract import ANALYZE_TASK, QUEUE
from tests.helpers import BUCKET, T0, Uploader, analyze_args, cli, series_sessions

pytestmark = pytest.mark.usefixtures("worker")


def test_failed_job_is_replayed_after_the_cause_is_fixed(
    photos: Path, uploader: Uploader, producer: Producer, s3: object
) -> None:
    """A job failed for a missing photo stays findable, and `retry` finishes it later."""
    user, session = uuid.uuid4(), uuid.uuid4()
    images = uploader.session(user, series_sessions(photos)[0])
    late_key = f"{user}/late-upload.jpg"
    images["front"] = f"s3://{BUCKET}/{late_key}"
    code, out, _ = cli(*analyze_args(user, session, T0, images), "--wait")
    assert code == 1 and out["error"]["code"] == "image_missing"

    s3.put_object(  # type: ignore[attr-defined]
        Bucket=BUCKET, Key=late_key, Body=(photos / "series" / "DSCN0042.jpg").read_bytes()
    )
    code, out, err = cli("retry", str(session))
    assert code == 0, err
    assert out["requeued"] == 1
    result = producer.wait(session, timeout=240)
    assert result["is_first_session"] is True
    assert producer.status(session)["attempts"] == 2

    code, _, err = cli("retry", str(session))
    assert code == 2 and "not_failed" in err


def test_retry_all_failed_requeues_every_failed_job(
    photos: Path, uploader: Uploader, producer: Producer
) -> None:
    """After an outage an operator replays all failed jobs at once."""
    user = uuid.uuid4()
    good = uploader.session(user, series_sessions(photos)[1])
    bad = {**good, "up": f"s3://{BUCKET}/{user}/missing.jpg"}
    failed = [uuid.uuid4(), uuid.uuid4()]
    for sid in failed:
        producer.analyze(user, sid, T0, bad)
    for sid in failed:
        with pytest.raises(Exception, match="image_missing"):
            producer.wait(sid, timeout=240)
    queued = retry_failed(producer)
    assert {q["session_id"] for q in queued} >= {str(s) for s in failed}


def test_forget_user_removes_every_row_and_photo_and_only_theirs(
    photos: Path, uploader: Uploader, producer: Producer, s3: object
) -> None:
    """forget-user deletes all of one person's data, proves it, and spares everyone else."""
    gone, kept = uuid.uuid4(), uuid.uuid4()
    ids = {}
    for user in (gone, kept):
        files = series_sessions(photos)
        ids[user] = [uuid.uuid4(), uuid.uuid4()]
        for i, sid in enumerate(ids[user]):
            producer.analyze(user, sid, T0.replace(day=5 + i), uploader.session(user, files[i]))
            producer.wait(sid, timeout=240)
        producer.compare(user, ids[user][1], ids[user][0])
        producer.wait_comparison(ids[user][1], ids[user][0], timeout=240)

    results = producer.celery.backend.client
    named = [
        k for k in results.scan_iter("celery-task-meta-*") if str(gone).encode() in results.get(k)
    ]
    assert len(named) >= 3  # two analyses and a comparison, stored by Celery

    report = forget_user(producer, str(gone), s3=s3)
    assert report["deleted"]["sessions"] == 2 and report["deleted"]["comparisons"] == 1
    assert report["deleted"]["objects"] == 8 and report["deleted"]["results"] >= 3
    assert set(report["remaining"].values()) == {0}, report["remaining"]
    assert not any(results.exists(k) for k in named)
    with psycopg.connect(producer.dsn) as conn:
        # A tombstone refuses later jobs; it does not say who they were.
        tombstone = conn.execute(
            "SELECT user_digest(%s) IN (SELECT user_digest FROM forgotten_users),"
            " (SELECT count(*) FROM forgotten_users WHERE user_digest::text LIKE %s)",
            (gone, f"%{gone.hex}%"),
        ).fetchone()
    assert tombstone == (True, 0)

    with psycopg.connect(producer.dsn) as conn:
        left = conn.execute(
            "SELECT count(*) FROM angle_embeddings WHERE session_id = ANY(%s)", (ids[kept],)
        ).fetchone()
    assert left == (8,)
    assert producer.result(ids[kept][1])["baseline_session_count"] == 1
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{kept}/")  # type: ignore[attr-defined]
    assert listed["KeyCount"] == 8


def test_bulk_enqueue_reports_bad_lines_and_waits_with_progress(
    tmp_path: Path, photos: Path, uploader: Uploader, producer: Producer
) -> None:
    """A backfill file: good lines run, bad lines are named, a progress bar shows the rate."""
    user = uuid.uuid4()
    lines = []
    for i, files in enumerate(series_sessions(photos)):
        lines.append(
            json.dumps(
                {
                    "user_id": str(user),
                    "session_id": str(uuid.uuid4()),
                    "captured_at": T0.replace(day=5 + i).isoformat(),
                    "images": uploader.session(user, files),
                }
            )
        )
    lines.insert(1, json.dumps({"user_id": str(user), "session_id": "nope"}))
    lines.append("{not json")
    path = tmp_path / "backfill.jsonl"
    path.write_text("\n".join(lines) + "\n")

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "changewatch.producer",
            "bulk",
            str(path),
            "--wait",
            "--timeout",
            "240",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = json.loads(proc.stdout)
    assert proc.returncode == 1  # two bad lines
    assert out["enqueued"] == 3 and out["succeeded"] == 3 and out["unfinished"] == 0
    assert [(bad["line"], bad["code"]) for bad in out["invalid"]] == [
        (2, "invalid_payload"),
        (5, "invalid_json"),
    ]
    assert "analyze: 100%" in proc.stderr and "job/s" in proc.stderr


def _lose_message(producer: Producer, user: uuid.UUID, images: dict[str, str]) -> uuid.UUID:
    """A session recorded ``queued`` 10 min ago whose message the broker no longer has:
    what a Redis crash between a worker's pop and its ``unacked`` write leaves behind."""
    session = uuid.uuid4()
    producer.enroll(user)
    with producer.connect() as conn:
        conn.execute(
            "INSERT INTO sessions (session_id, user_id, captured_at, images, status, task_id,"
            " updated_at) VALUES (%s, %s, %s, %s, 'queued', %s, now() - interval '10 minutes')",
            (
                session,
                user,
                T0,
                Jsonb(images),
                str(uuid.uuid4()),
            ),
        )
    return session


def test_reaper_resends_a_session_whose_message_was_lost(
    photos: Path, uploader: Uploader, producer: Producer
) -> None:
    """A job whose broker message is gone would stay ``queued`` forever; `reap` finds it,
    sends it again, and it succeeds. A second pass finds nothing more to do."""
    user = uuid.uuid4()
    lost = _lose_message(producer, user, uploader.session(user, series_sessions(photos)[0]))

    code, out, err = cli("reap", "--older-than", "60")
    assert code == 0, err
    assert out == {"resent_sessions": [str(lost)], "resent_comparisons": []}
    result = producer.wait(lost, timeout=240)
    assert result["is_first_session"] is True and result["change_score"] == 0.0

    code, out, err = cli("reap", "--older-than", "0")
    assert code == 0, err
    assert str(lost) not in out["resent_sessions"]


def test_reaper_leaves_alone_a_job_whose_message_the_broker_holds(
    photos: Path, uploader: Uploader, producer: Producer
) -> None:
    """A job waiting out a retry countdown (held by a worker, unacknowledged) looks as old
    as a lost one in Postgres; the reaper must not send it twice, and the workers'
    recovery sweep (every 15 s) must not take it for a dead worker's over its 40 s."""
    user = uuid.uuid4()
    images = uploader.session(user, series_sessions(photos)[1])
    session = _lose_message(producer, user, images)
    payload = {
        "user_id": str(user),
        "session_id": str(session),
        "captured_at": T0.isoformat(),
        "images": images,
    }
    producer.celery.send_task(ANALYZE_TASK, kwargs=payload, queue=QUEUE, countdown=40)
    deadline = time.monotonic() + 30
    while str(session) not in reaper.alive(producer).sessions:  # taken by the worker
        assert time.monotonic() < deadline, "the worker never received the delayed task"
        time.sleep(0.2)

    assert str(session) not in reaper.reap(producer, older_than=60).sessions
    assert producer.status(session)["status"] == "queued"
    assert producer.wait(session, timeout=240)["is_first_session"] is True
    assert producer.status(session)["attempts"] == 1  # ran once: the reaper sent nothing
