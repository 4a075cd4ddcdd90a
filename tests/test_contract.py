"""The public payload contract, as non-Python producers meet it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from changewatch.schema.contract import JobError, parse_analyze, parse_compare


def payload(**changes: object) -> dict[str, object]:
    user = uuid.uuid4()
    base: dict[str, object] = {
        "user_id": str(user),
        "session_id": str(uuid.uuid4()),
        "captured_at": "2026-01-05T09:30:00Z",
        "images": {a: f"s3://b/{user}/{a}.jpg" for a in ("front", "left", "right")},
    }
    base.update(changes)
    return base


def test_a_valid_payload_is_normalized() -> None:
    """'Z' times are accepted and angles come back in canonical order."""
    job = parse_analyze(payload(images={a: "s3://b/k/x.jpg" for a in ("up", "front", "left")}))
    assert job.captured_at.tzinfo is not None
    assert list(job.images) == ["front", "left", "up"]
    assert parse_analyze(job.to_payload()) == job


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"captured_at": "2026-01-05 09:30"}, "invalid_captured_at"),
        (
            {"captured_at": (datetime.now(UTC) + timedelta(days=2)).isoformat()},
            "invalid_captured_at",
        ),
        ({"session_id": "123"}, "invalid_uuid"),
        ({"images": {"front": "s3://b/k", "left": "s3://b/k"}}, "too_few_images"),
        (
            {"images": {"front": "s3://b/", "left": "s3://b/k", "up": "s3://b/k"}},
            "invalid_image_uri",
        ),
        ({"images": [{"angle": "front", "uri": "s3://b/k"}] * 3}, "duplicate_angle"),
        ({"extra": 1}, "invalid_payload"),
    ],
)
def test_invalid_payloads_get_specific_codes(changes: dict[str, object], code: str) -> None:
    """Each mistake is named, so the sender can fix it without reading our logs."""
    with pytest.raises(JobError) as info:
        parse_analyze(payload(**changes))
    assert info.value.code == code


def test_missing_field_is_named() -> None:
    """A raw message without a field says which one."""
    bad = payload()
    del bad["images"]
    with pytest.raises(JobError, match="images"):
        parse_analyze(bad)


def test_a_session_is_not_compared_with_itself() -> None:
    """Comparing a session with itself is refused, not reported as 'stable'."""
    sid = str(uuid.uuid4())
    with pytest.raises(JobError) as info:
        parse_compare(
            {"user_id": str(uuid.uuid4()), "current_session_id": sid, "previous_session_id": sid}
        )
    assert info.value.code == "same_session"
