"""The score store's contract, end to end through a real worker: numbers that stay true.

A failed re-analysis changes nothing but its attempt; the newest request wins; a partial
session is compared like with like; stored comparisons never go stale silently.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from changewatch.producer import JobFailed, Producer
from changewatch.schema.contract import ANALYZE_TASK, QUEUE
from tests.helpers import SERIES, T0, Uploader, query, six

pytestmark = pytest.mark.usefixtures("worker")


def analyze(
    producer: Producer, uploader: Uploader, user: uuid.UUID, sid: uuid.UUID, day: int, files: dict
) -> dict:
    producer.analyze(user, sid, T0 + timedelta(days=day), uploader.session(user, files))
    return producer.wait(sid, timeout=240)


def test_a_failed_reanalysis_changes_nothing_but_its_own_attempt(
    photos: Path, uploader: Uploader, producer: Producer
) -> None:
    """Re-analyzing session 1 later in time with a broken photo fails, and every number,
    its capture time included, stays as it was; result names the request it comes from."""
    user, ids = uuid.uuid4(), [uuid.uuid4() for _ in range(3)]
    before = [
        analyze(producer, uploader, user, s, 14 * i, six(photos, i)) for i, s in enumerate(ids)
    ]
    good_task = producer.status(ids[0])["task_id"]

    broken = uploader.session(user, six(photos))
    broken["left"] = uploader.put(
        user, "broken.jpg", (photos / "series" / SERIES[0]).read_bytes()[:3000]
    )
    producer.analyze(user, ids[0], T0 + timedelta(days=100), broken)
    with pytest.raises(JobFailed) as failed:
        producer.wait(ids[0], timeout=240)
    status = producer.status(ids[0])
    assert failed.value.status["error"]["code"] == "image_corrupt"
    assert status["status"] == "failed" and status["task_id"] != good_task

    after = [producer.result(s) for s in ids]
    assert after == before
    assert after[0]["captured_at"] == before[0]["captured_at"]
    assert after[0]["request_task_id"] == good_task
    assert after[1]["is_first_session"] is False and after[1]["baseline_session_count"] == 1


def test_the_newest_request_wins_over_a_late_retry_of_an_older_one(
    photos: Path, uploader: Uploader, producer: Producer
) -> None:
    """A redelivery or retry of request A that lands after request B has written must
    not overwrite B: it ends as superseded and writes nothing."""
    user, first, sid = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    analyze(producer, uploader, user, first, 0, six(photos))
    old_images = uploader.session(user, six(photos, 1))
    producer.analyze(user, sid, T0 + timedelta(days=7), old_images)
    producer.wait(sid, timeout=240)
    old_task = producer.status(sid)["task_id"]
    newest = analyze(producer, uploader, user, sid, 21, six(photos, 2))
    assert newest["captured_at"] == (T0 + timedelta(days=21)).isoformat()

    # The older request's message again, same task id, as a retry or redelivery sends it.
    payload = {
        "user_id": str(user),
        "session_id": str(sid),
        "captured_at": (T0 + timedelta(days=7)).isoformat(),
        "images": old_images,
    }
    producer.celery.AsyncResult(old_task).forget()  # so get() waits for this run's outcome
    late = producer.celery.send_task(ANALYZE_TASK, kwargs=payload, queue=QUEUE, task_id=old_task)
    outcome = late.get(timeout=240)
    assert outcome["status"] == "superseded"
    assert producer.result(sid) == newest
    assert producer.status(sid)["status"] == "succeeded"


def test_a_partial_session_is_compared_like_with_like(
    photos: Path, uploader: Uploader, producer: Producer
) -> None:
    """Three angles, each the same photo as in every earlier session: 0 for each angle,
    0 for the session, 0 in compare, although the history has six angles."""
    user, ids = uuid.uuid4(), [uuid.uuid4() for _ in range(3)]
    for i in range(2):
        analyze(producer, uploader, user, ids[i], 14 * i, six(photos))
    partial = {a: p for a, p in six(photos).items() if a in ("front", "up", "raised")}
    result = analyze(producer, uploader, user, ids[2], 28, partial)
    assert result["baseline_session_count"] == 2
    assert [a["angle"] for a in result["per_angle"]] == ["front", "up", "raised"]
    assert all(a["change_score"] == pytest.approx(0.0, abs=1e-9) for a in result["per_angle"])
    assert result["change_score"] == pytest.approx(0.0, abs=1e-9)

    producer.compare(user, ids[2], ids[0])
    compared = producer.wait_comparison(ids[2], ids[0], timeout=240)
    assert compared["comparison_method"] == "embedding"
    assert compared["overall_delta"] == pytest.approx(0.0, abs=1e-9)


def test_a_stored_comparison_follows_a_later_inserted_session(
    photos: Path, uploader: Uploader, producer: Producer
) -> None:
    """Inserting a session between two compared ones changes the later one's scores: the
    stored comparison is then stale, and reading it recomputes it from current data."""
    user, first, last, middle = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    analyze(producer, uploader, user, first, 0, six(photos))
    analyze(producer, uploader, user, last, 28, six(photos, 3))
    producer.compare(user, last, first)
    before = producer.wait_comparison(last, first, timeout=240)

    rescored = analyze(producer, uploader, user, middle, 14, six(photos, 5))
    assert rescored["baseline_session_count"] == 1
    later = producer.result(last)
    assert later["baseline_session_count"] == 2
    read = producer.comparison(last, first)
    assert read["status"] == "queued" and read["stale"] is True
    after = producer.wait_comparison(last, first, timeout=240)
    front = next(r for r in after["per_angle"] if r["angle"] == "front")
    later_front = next(a for a in later["per_angle"] if a["angle"] == "front")
    assert front["score_delta"] == pytest.approx(later_front["change_score"], abs=1e-9)
    assert front["score_delta"] != pytest.approx(
        next(r for r in before["per_angle"] if r["angle"] == "front")["score_delta"], abs=1e-9
    )
    # Embeddings did not change, so neither did the embedding distance.
    assert after["overall_delta"] == pytest.approx(before["overall_delta"], abs=1e-12)
    assert producer.comparison(last, first)["status"] == "succeeded"


def test_finished_at_includes_the_write(
    photos: Path, uploader: Uploader, producer: Producer
) -> None:
    """Job durations in the database cover the whole job, the write included."""
    user, sid = uuid.uuid4(), uuid.uuid4()
    analyze(producer, uploader, user, sid, 0, six(photos))
    rows = query(
        producer.dsn,
        "SELECT s.finished_at > a.computed_at, s.finished_at > s.started_at"
        " FROM sessions s JOIN analyses a USING (session_id) WHERE s.session_id = %s",
        (sid,),
    )
    assert rows == [(True, True)]
