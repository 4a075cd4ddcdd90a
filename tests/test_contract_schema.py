"""The contract as JSON Schema: the files match the code, and both judge payloads alike.

A non-Python sender validates its messages with ``schema/json/*.json``; the worker with
``changewatch.schema.contract``. These tests keep the two from drifting apart.
"""

from __future__ import annotations

import json
import uuid
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
    user = uuid.uuid4()
    payload: dict[str, Any] = {
        "user_id": str(user),
        "session_id": str(uuid.uuid4()),
        "captured_at": "2026-01-05T09:30:00Z",
        "images": {a: f"s3://b/{user}/{a}.jpg" for a in ("front", "left", "right")},
    }
    payload.update(changes)
    return {k: v for k, v in payload.items() if v is not None}


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
