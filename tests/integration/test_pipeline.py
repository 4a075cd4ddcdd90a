"""The producer's command line against real Postgres and Redis, without a worker: an invalid
job is refused before anything is enqueued or recorded."""

from __future__ import annotations

import uuid

import psycopg

from changewatch.producer import Producer
from tests.helpers import BUCKET, T0, analyze_args, cli


def test_cli_rejects_invalid_jobs_before_enqueueing(producer: Producer) -> None:
    """Bad arguments exit 2 with a one-line reason and leave nothing queued."""
    user, session = uuid.uuid4(), uuid.uuid4()
    uri = f"s3://{BUCKET}/{user}/a.jpg"
    three = {"front": uri, "left": uri, "right": uri}
    cases = {
        "invalid_captured_at": analyze_args(user, session, "2026-01-05T09:30:00", three),
        "too_few_images": analyze_args(user, session, T0, {"front": uri, "left": uri}),
        "unknown_angle": analyze_args(user, session, T0, {**three, "back": uri}),
        "invalid_uuid": analyze_args("nope", session, T0, three),
        "invalid_image_uri": analyze_args(user, session, T0, {**three, "up": "http://x/y.jpg"}),
    }
    for expected, args in cases.items():
        code, out, err = cli(*args)
        assert code == 2, (expected, err)
        assert expected in err and len(err.strip().splitlines()) == 1
        assert out is None
    dup = [*analyze_args(user, session, T0, three), "--image", f"front={uri}"]
    code, _, err = cli(*dup)
    assert code == 2 and "duplicate_angle" in err
    with psycopg.connect(producer.dsn) as conn:
        assert (
            conn.execute("SELECT 1 FROM sessions WHERE session_id = %s", (session,)).fetchone()
            is None
        )
