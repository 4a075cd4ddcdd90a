"""The public payload contract, as non-Python producers meet it: the worker's own checks,
and the JSON Schema files published for other languages (``schema/json/``), which must
accept and refuse the same payloads."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import pytest

from changewatch.schema import json_schemas
from changewatch.schema.contract import (
    ANALYZE_TASK,
    COMPARE_TASK,
    CONTRACT_VERSION,
    EMBED_TASK,
    JobError,
    parse_analyze,
    parse_compare,
    parse_embed,
)


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


def test_the_published_files_are_what_the_code_generates() -> None:
    """Run ``python -m changewatch.schema json-schemas`` after changing the contract."""
    for name, schema in json_schemas.all_schemas().items():
        path = json_schemas.FOLDER / name
        assert path.is_file(), f"{path} is missing"
        assert path.read_text(encoding="utf-8") == json_schemas.render(schema), name
        jsonschema.Draft202012Validator.check_schema(json.loads(path.read_text()))


def _published(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((json_schemas.FOLDER / name).read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


def _analyze(**changes: Any) -> dict[str, Any]:
    """An analyze payload; a change to None drops that field."""
    return {k: v for k, v in payload(**changes).items() if v is not None}


PAYLOADS: list[tuple[str, dict[str, Any]]] = [
    (ANALYZE_TASK, _analyze()),
    (ANALYZE_TASK, _analyze(contract_version=CONTRACT_VERSION)),
    (ANALYZE_TASK, _analyze(captured_at="2026-01-05T09:30:00+02:00")),
    (
        ANALYZE_TASK,
        _analyze(images=[{"angle": a, "uri": "s3://b/k.jpg"} for a in ("up", "down", "front")]),
    ),
    (ANALYZE_TASK, _analyze(contract_version=CONTRACT_VERSION + 1)),
    (ANALYZE_TASK, _analyze(contract_version="1")),
    (ANALYZE_TASK, _analyze(captured_at="2026-01-05 09:30")),
    (ANALYZE_TASK, _analyze(session_id="123")),
    (ANALYZE_TASK, _analyze(user_id=None)),
    (ANALYZE_TASK, _analyze(extra=1)),
    (ANALYZE_TASK, _analyze(images={"front": "s3://b/k", "left": "s3://b/k"})),
    (ANALYZE_TASK, _analyze(images={"front": "s3://b/", "left": "s3://b/k", "up": "s3://b/k"})),
    (ANALYZE_TASK, _analyze(images={"side": "s3://b/k", "left": "s3://b/k", "up": "s3://b/k"})),
    (ANALYZE_TASK, _analyze(images={"front": "http://b/k", "left": "s3://b/k", "up": "s3://b/k"})),
    (
        COMPARE_TASK,
        {
            "user_id": str(uuid.uuid4()),
            "current_session_id": str(uuid.uuid4()),
            "previous_session_id": str(uuid.uuid4()),
        },
    ),
    (COMPARE_TASK, {"user_id": str(uuid.uuid4()), "current_session_id": str(uuid.uuid4())}),
    (EMBED_TASK, {"session_id": str(uuid.uuid4()), "model_id": "resnet50/imagenet-0123/prep1"}),
    (EMBED_TASK, {"session_id": str(uuid.uuid4()), "model_id": ""}),
]
PARSE = {ANALYZE_TASK: parse_analyze, COMPARE_TASK: parse_compare, EMBED_TASK: parse_embed}


@pytest.mark.parametrize(("task", "payload"), PAYLOADS)
def test_the_schema_and_the_worker_accept_and_refuse_the_same_payloads(
    task: str, payload: dict[str, Any]
) -> None:
    try:
        PARSE[task](payload)
        worker_accepts = True
    except JobError:
        worker_accepts = False
    schema_accepts = _published(f"{task}.json").is_valid(payload)
    assert schema_accepts == worker_accepts, (task, payload)


def test_a_future_contract_version_is_refused_with_its_own_code() -> None:
    with pytest.raises(JobError) as info:
        parse_analyze(_analyze(contract_version=CONTRACT_VERSION + 1))
    assert info.value.code == "unsupported_contract_version"
    assert "upgrade the workers" in info.value.message
