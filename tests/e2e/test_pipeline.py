"""End to end: CLI -> Redis -> real Celery worker -> S3 server -> Postgres, with real photos."""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.request
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema
import psycopg
import pytest
import redis
from kombu.utils.uuid import uuid as kombu_uuid
from psycopg.rows import dict_row

from bench.harness.services import ROOT, Worker
from changewatch.producer import JobFailed, Producer
from changewatch.producer.admin import forget_user
from changewatch.schema import json_schemas
from changewatch.schema.contract import ANALYZE_TASK, MAX_PAYLOAD_BYTES, QUEUE, JobError
from tests.helpers import (
    BUCKET,
    T0,
    Uploader,
    analyze_args,
    cli,
    scores_of,
    series_sessions,
)

pytestmark = pytest.mark.usefixtures("worker")


def assert_matches_published_schema(name: str, result: dict[str, Any]) -> None:
    """A real result object against ``schema/json/<name>.json``, as another language reads it."""
    schema = json.loads((json_schemas.FOLDER / f"{name}.json").read_text(encoding="utf-8"))
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(result))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]


def session_files(photos: Path, names: list[str]) -> dict[str, Path]:
    angles = ["front", "left", "right", "up", "down", "raised"]
    return {angle: photos / name for angle, name in zip(angles, names, strict=False)}


def test_cli_analyze_wait_prints_first_and_later_scores(
    photos: Path, uploader: Uploader, producer: Producer
) -> None:
    """The core promise: first session 0.0, later sessions measured against history."""
    user = uuid.uuid4()
    sessions = [uuid.uuid4() for _ in range(3)]
    results = []
    for i, files in enumerate(series_sessions(photos)):
        images = uploader.session(user, files)
        code, out, err = cli(
            *analyze_args(user, sessions[i], T0 + timedelta(weeks=3 * i), images), "--wait"
        )
        assert code == 0, err
        results.append(out)
    first, second, third = results
    assert first["is_first_session"] is True
    assert first["change_score"] == 0.0
    assert first["baseline_session_count"] == 0
    assert all(a["change_score"] == 0.0 for a in first["per_angle"])
    assert second["is_first_session"] is False and second["baseline_session_count"] == 1
    assert third["baseline_session_count"] == 2
    assert second["change_score"] > 0 and third["change_score"] > 0
    assert {a["angle"] for a in third["per_angle"]} == {"front", "left", "right", "up"}
    assert third["embedding_dim"] == 2048
    assert third["model_id"].startswith("resnet50/random-seed0/")

    code, status, _ = cli("status", str(sessions[2]))
    assert code == 0 and status["status"] == "succeeded" and status["error"] is None
    code, stored, _ = cli("result", str(sessions[2]))
    assert code == 0 and stored == third
    for result in results:  # what a reader in any language can rely on
        assert_matches_published_schema("analysis_result", result)

    with psycopg.connect(producer.dsn) as conn:
        rows = conn.execute(
            "SELECT angle, model_id, octet_length(embedding) / 4 FROM angle_embeddings"
            " WHERE session_id = %s ORDER BY angle",
            (sessions[2],),
        ).fetchall()
    assert [r[0] for r in rows] == ["front", "left", "right", "up"]
    assert {r[1] for r in rows} == {third["model_id"]} and {r[2] for r in rows} == {2048}


def _run_sessions(
    producer: Producer,
    uploader: Uploader,
    user: uuid.UUID,
    files: list[dict[str, Path]],
    order: list[int],
) -> dict[int, uuid.UUID]:
    ids = {i: uuid.uuid4() for i in range(len(files))}
    for i in order:
        producer.analyze(
            user, ids[i], T0 + timedelta(days=14 * i), uploader.session(user, files[i])
        )
        producer.wait(ids[i], timeout=240)
    return ids


def test_results_do_not_depend_on_processing_order(
    photos: Path, uploader: Uploader, producer: Producer
) -> None:
    """Analyzing session 3 before 1 and 2 ends with the numbers of in-order processing."""
    files = series_sessions(photos)
    in_order = scores_of(
        producer, _run_sessions(producer, uploader, uuid.uuid4(), files, [0, 1, 2])
    )
    reversed_ids = _run_sessions(producer, uploader, uuid.uuid4(), files, [2, 0, 1])
    out_of_order = scores_of(producer, reversed_ids)
    for (a, na, pa), (b, nb, pb) in zip(in_order, out_of_order, strict=True):
        assert na == nb
        assert a == pytest.approx(b, abs=1e-6)
        assert pa == pytest.approx(pb, abs=1e-6)

    # Re-analysis overwrites in place and gives identical numbers.
    last = reversed_ids[2]
    before = producer.result(last)
    status = producer.status(last)
    user = uuid.UUID(before["user_id"])
    producer.analyze(user, last, T0 + timedelta(days=28), uploader.session(user, files[2]))
    after = producer.wait(last, timeout=240)
    assert after["change_score"] == pytest.approx(before["change_score"], abs=1e-6)
    assert producer.status(last)["attempts"] == status["attempts"] + 1
    with psycopg.connect(producer.dsn) as conn:
        count = conn.execute(
            "SELECT count(*) FROM angle_embeddings WHERE session_id = %s", (last,)
        ).fetchone()
    assert count == (4,)


def test_compare_two_sessions_and_refuse_other_users(
    photos: Path, uploader: Uploader, producer: Producer
) -> None:
    """compare reports delta, stability and trend by embedding; never across users."""
    user = uuid.uuid4()
    ids = _run_sessions(producer, uploader, user, series_sessions(photos)[:2], [0, 1])
    code, out, err = cli(
        "compare",
        "--user-id",
        str(user),
        "--current",
        str(ids[1]),
        "--previous",
        str(ids[0]),
        "--wait",
    )
    assert code == 0, err
    assert out["comparison_method"] == "embedding"
    assert 0 < out["overall_delta"] < 1
    assert out["stability_index"] == pytest.approx(1 - out["overall_delta"])
    assert out["overall_trend"] in ("stable", "mild_variation", "significant_shift")
    assert {row["angle"] for row in out["per_angle"]} == {"front", "left", "right", "up"}
    assert all(row["embedding_distance"] is not None for row in out["per_angle"])
    assert_matches_published_schema("comparison_result", out)

    other = uuid.uuid4()
    code, out, err = cli(
        "compare", "--user-id", str(other), "--current", str(ids[1]), "--previous", str(ids[0])
    )
    assert code == 2 and "not_same_user" in err
    code, _, err = cli(
        "compare", "--user-id", str(user), "--current", str(ids[1]), "--previous", str(ids[1])
    )
    assert code == 2 and "same_session" in err


def test_rotated_and_heic_photos_are_analyzed(
    photos: Path, uploader: Uploader, producer: Producer
) -> None:
    """An iPhone's HEIC and a Canon's EXIF-rotated JPEG go through the whole pipeline."""
    user, session = uuid.uuid4(), uuid.uuid4()
    files = {
        "front": photos / "camera" / "canon_hdr_NO.jpg",
        "left": photos / "heic" / "iphone_13_pro_max.HEIC",
        "right": photos / "camera" / "iphone_hdr_YES.jpg",
    }
    producer.analyze(user, session, T0, uploader.session(user, files))
    result = producer.wait(session, timeout=240)
    assert [a["angle"] for a in result["per_angle"]] == ["front", "left", "right"]


def test_bad_image_fails_the_job_clearly_and_the_worker_goes_on(
    photos: Path, uploader: Uploader, producer: Producer
) -> None:
    """A missing object and a text file fail their own job with a code; the next job works."""
    user = uuid.uuid4()
    good = uploader.session(user, series_sessions(photos)[0])
    missing = {**good, "front": f"s3://{BUCKET}/{user}/does-not-exist.jpg"}
    code, out, err = cli(*analyze_args(user, uuid.uuid4(), T0, missing), "--wait")
    assert code == 1
    assert out["status"] == "failed" and out["error"]["code"] == "image_missing"
    assert "image_missing" in err

    text = {**good, "left": uploader.put(user, "notes.jpg", b"<html>not a photo</html>")}
    code, out, _ = cli(*analyze_args(user, uuid.uuid4(), T0, text), "--wait")
    assert code == 1 and out["error"]["code"] == "unsupported_format"
    assert "'left'" in out["error"]["message"]

    session = uuid.uuid4()
    code, out, _ = cli(*analyze_args(user, session, T0, good), "--wait")
    assert code == 0 and out["session_id"] == str(session)


def test_raw_message_from_a_non_python_producer(
    photos: Path, uploader: Uploader, producer: Producer
) -> None:
    """The documented Celery protocol-2 JSON message, pushed straight to Redis, is analyzed
    (the person enrolled once, as a sender other than the Python producer does)."""
    user, session = uuid.uuid4(), uuid.uuid4()
    code, out, err = cli("enroll", str(user))
    assert code == 0 and out == {"user_id": str(user), "status": "enrolled"}, err
    task_id = _push(producer, _raw_job(photos, uploader, user, session))
    result = producer.wait(session, timeout=240)
    assert result["user_id"] == str(user)
    assert producer.status(session)["task_id"] == task_id


def test_worker_metrics_count_jobs_and_time_stages(
    worker: Worker, photos: Path, uploader: Uploader, producer: Producer
) -> None:
    """An operator scraping /metrics sees finished jobs, stage latencies and the model."""
    user, session = uuid.uuid4(), uuid.uuid4()
    producer.analyze(user, session, T0, uploader.session(user, series_sessions(photos)[1]))
    producer.wait(session, timeout=240)
    port = worker.env["CHANGEWATCH_METRICS_PORT"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    key = 'changewatch_jobs_total{error_code="",outcome="succeeded",task="analyze"}'
    assert samples[key] >= 1
    for stage in ("fetch", "decode", "batch", "embed", "score", "store"):
        assert samples[f'changewatch_stage_seconds_count{{stage="{stage}"}}'] >= 1
    assert samples["changewatch_batch_images_sum"] >= 4
    assert 'model_id="resnet50/random-seed0/prep1"' in text
    assert samples['changewatch_queue_depth{queue="changewatch"}'] >= 0


def _raw_message(task: str, kwargs: dict[str, Any]) -> tuple[str, str]:
    """A Celery protocol-2 message as a non-Python producer would write it."""
    task_id = kombu_uuid()
    body = [[], kwargs, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    message = {
        "body": base64.b64encode(json.dumps(body).encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": task,
            "id": task_id,
            "root_id": task_id,
            "parent_id": None,
            "group": None,
            "retries": 0,
            "eta": None,
            "expires": None,
        },
        "properties": {
            "correlation_id": task_id,
            "reply_to": "",
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": QUEUE},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": task_id,
        },
    }
    return task_id, json.dumps(message)


def _raw_job(
    photos: Path, uploader: Uploader, user: uuid.UUID, session: Any, shift: int = 0
) -> dict[str, Any]:
    """An analyze payload as another language's client writes it (one series session)."""
    return {
        "user_id": str(user),
        "session_id": str(session),
        "captured_at": "2026-02-01T08:00:00Z",
        "images": uploader.session(user, series_sessions(photos)[shift]),
    }


def _push(producer: Producer, kwargs: dict[str, Any]) -> str:
    """Put an analyze message straight into the queue, as a non-Python producer does."""
    task_id, message = _raw_message(ANALYZE_TASK, kwargs)
    redis.Redis.from_url(producer.celery.conf.broker_url).lpush(QUEUE, message)
    return task_id


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"drop": "images"}, "invalid_payload"),
        ({"extra": {"priority": "high"}}, "invalid_payload"),
        ({"captured_at": "2026-02-01T08:00:00"}, "invalid_captured_at"),
        ({"images": {"front": "s3://b/k.jpg", "left": "s3://b/k.jpg"}}, "too_few_images"),
    ],
)
def test_malformed_raw_message_is_recorded_and_the_worker_goes_on(
    change: dict[str, Any], code: str, photos: Path, uploader: Uploader, producer: Producer
) -> None:
    """A bad message from another language's client fails findably; the next job succeeds."""
    user, session = uuid.uuid4(), uuid.uuid4()
    producer.enroll(user)
    payload = _raw_job(photos, uploader, user, session)
    if "drop" in change:
        del payload[change["drop"]]
    else:
        payload.update(change)
    task_id = _push(producer, payload)
    with pytest.raises(JobFailed) as failed:
        producer.wait(session, timeout=120)
    assert failed.value.status["error"]["code"] == code
    assert failed.value.status["task_id"] == task_id
    assert failed.value.status["error"]["message"]

    good = _raw_job(photos, uploader, user, uuid.uuid4())
    _push(producer, good)
    assert producer.wait(good["session_id"], timeout=120)["user_id"] == str(user)


def test_a_message_reusing_another_users_session_id_touches_nothing_of_theirs(
    photos: Path, uploader: Uploader, producer: Producer
) -> None:
    """A job naming someone else's session id is rejected; their analysis stays intact."""
    owner, intruder, session = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    producer.analyze(owner, session, T0, uploader.session(owner, series_sessions(photos)[0]))
    before = producer.wait(session, timeout=120)
    producer.enroll(intruder)
    task_id = _push(producer, _raw_job(photos, uploader, intruder, session, shift=1))
    with psycopg.connect(producer.dsn) as conn:
        for _ in range(600):
            row = conn.execute(
                "SELECT error_code FROM rejected_messages WHERE task_id = %s", (task_id,)
            ).fetchone()
            if row:
                break
            time.sleep(0.1)
    assert row == ("session_of_other_user",)
    assert producer.status(session)["status"] == "succeeded"
    assert producer.result(session) == before


def _rejection(producer: Producer, task_id: str) -> dict[str, Any]:
    """The worker's record of a refused message (waits for it)."""
    with psycopg.connect(producer.dsn, row_factory=dict_row) as conn:
        for _ in range(600):
            row = conn.execute(
                "SELECT error_code, error_message, session_id, payload FROM rejected_messages"
                " WHERE task_id = %s",
                (task_id,),
            ).fetchone()
            if row:
                return row
            time.sleep(0.1)
    raise AssertionError(f"no rejected_messages row for task {task_id}")


def test_refused_payloads_are_recorded_with_their_code_and_write_nothing(
    photos: Path, uploader: Uploader, producer: Producer
) -> None:
    """Straight to Redis, as a non-Python sender would: a person never enrolled, a person
    forgotten, and a payload past 64 KB are each refused with their code and recorded;
    no session row appears and the worker takes the next job."""
    broker = redis.Redis.from_url(producer.celery.conf.broker_url)
    images = series_sessions(photos)[0]

    def send(user: uuid.UUID, **extra: Any) -> tuple[str, uuid.UUID]:
        session = uuid.uuid4()
        payload = {
            "user_id": str(user),
            "session_id": str(session),
            "captured_at": "2026-02-01T08:00:00Z",
            "images": uploader.session(user, images),
            **extra,
        }
        task_id, message = _raw_message(ANALYZE_TASK, payload)
        broker.lpush(QUEUE, message)
        return task_id, session

    stranger = uuid.uuid4()
    task_id, session = send(stranger)
    row = _rejection(producer, task_id)
    assert row["error_code"] == "unknown_user" and "enroll" in row["error_message"]

    forgotten = uuid.uuid4()
    producer.enroll(forgotten)
    forget_user(producer, str(forgotten), delete_objects=False)
    task_id, forgotten_session = send(forgotten)
    row = _rejection(producer, task_id)
    assert row["error_code"] == "user_forgotten"
    assert row["session_id"] is None and str(forgotten) not in json.dumps(row["payload"])
    with pytest.raises(JobError, match="forgotten"):  # the producer refuses before enqueueing
        producer.analyze(forgotten, uuid.uuid4(), T0, uploader.session(forgotten, images))

    member = uuid.uuid4()
    producer.enroll(member)
    task_id, huge_session = send(member, note="x" * (MAX_PAYLOAD_BYTES + 1))
    row = _rejection(producer, task_id)
    assert row["error_code"] == "payload_too_large"
    assert row["payload"]["bytes"] > MAX_PAYLOAD_BYTES and "note" in row["payload"]["fields"]
    with pytest.raises(JobError, match="at most 65536 bytes"):
        producer.analyze(
            member, uuid.uuid4(), T0, {**uploader.session(member, images), "x" * 70_000: "s3://b/k"}
        )

    with psycopg.connect(producer.dsn) as conn:
        rows = conn.execute(
            "SELECT count(*) FROM sessions WHERE session_id = ANY(%s)",
            ([session, forgotten_session, huge_session],),
        ).fetchone()
    assert rows == (0,)
    task_id, good = send(member)  # the worker goes on
    assert producer.wait(good, timeout=120)["user_id"] == str(member)


def test_worker_logs_one_json_line_per_stage_without_secrets(
    photos: Path, uploader: Uploader, producer: Producer
) -> None:
    """Operators grep one session's stages by id; credentials never appear in the log."""
    user, session = uuid.uuid4(), uuid.uuid4()
    producer.analyze(user, session, T0, uploader.session(user, series_sessions(photos)[2]))
    producer.wait(session, timeout=120)
    log = (ROOT / "artifacts" / "worker.log").read_text()
    events = []
    for line in log.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("session_id") == str(session):
                events.append(record)
    stages = [e["stage"] for e in events if e.get("event") == "stage"]
    assert stages == ["fetch", "decode", "batch", "embed", "score", "store"]
    assert all(e["task_id"] == producer.status(session)["task_id"] for e in events)
    outcome = [e for e in events if e.get("event") == "job"]
    assert [e["outcome"] for e in outcome] == ["succeeded"]
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in log
