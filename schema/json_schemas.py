"""The contract as JSON Schema files, for senders and readers in any language.

Built from the constants ``schema.contract`` validates with (task fields, angles, the
least number of images, the contract version), and written to ``schema/json/`` by
``python -m changewatch.schema json-schemas``; a test fails when the files and this code
drift apart. What JSON Schema cannot say is left to the worker, and named in each
schema's description: the 64 KiB bound, a capture time in the future, a repeated angle
in the list form.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .contract import (
    ANALYZE_TASK,
    ANGLES,
    COMPARE_TASK,
    CONTRACT_VERSION,
    DELETE_TASK,
    EMBED_TASK,
    ENROLL_TASK,
    FIELDS,
    FORGET_TASK,
    MAX_MODEL_ID,
    MAX_PAYLOAD_BYTES,
    MIN_IMAGES,
    NOTIFY_TASK,
    VERSION_FIELD,
)
from .levels import Basis
from .regions import MOVED_MAX, REGIONS

FOLDER = Path(__file__).parent / "json"
_DRAFT = "https://json-schema.org/draft/2020-12/schema"
_ID = "https://changewatch.invalid/schema/"

_UUID = {
    "type": "string",
    "pattern": "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
}
_S3_URI = {"type": "string", "pattern": "^s3://[^/]+/.*[^/]$"}
_TIME = {
    "type": "string",
    "description": "ISO 8601 with a timezone, not more than 5 minutes in the future",
    "pattern": r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$",
}
_IMAGES = {
    "description": f"at least {MIN_IMAGES} photos, each angle once",
    "oneOf": [
        {
            "type": "object",
            "propertyNames": {"enum": list(ANGLES)},
            "additionalProperties": _S3_URI,
            "minProperties": MIN_IMAGES,
        },
        {
            "type": "array",
            "minItems": MIN_IMAGES,
            "maxItems": len(ANGLES),
            "items": {
                "type": "object",
                "properties": {"angle": {"enum": list(ANGLES)}, "uri": _S3_URI},
                "required": ["angle", "uri"],
                "additionalProperties": False,
            },
        },
    ],
}
_FIELD_SCHEMAS: dict[str, dict[str, Any]] = {
    "user_id": _UUID,
    "session_id": _UUID,
    "current_session_id": _UUID,
    "previous_session_id": _UUID,
    "captured_at": _TIME,
    "images": _IMAGES,
    "model_id": {"type": "string", "minLength": 1, "maxLength": MAX_MODEL_ID},
    "token": {
        "type": "string",
        "description": "v1.<expires, unix seconds>.<hex HMAC-SHA256 of"
        " 'v1\\n<task>\\n<id>\\n<expires>'> under CHANGEWATCH_DELETE_SECRET (README)",
        "pattern": "^v1\\.[0-9]+\\.[0-9a-f]{64}$",
    },
}


def payload_schema(task: str) -> dict[str, Any]:
    fields = FIELDS[task]
    return {
        "$schema": _DRAFT,
        "$id": f"{_ID}{task}.json",
        "title": f"{task} payload (Celery keyword arguments)",
        "description": (
            f"Sent as the kwargs of task {task!r}, JSON only, at most {MAX_PAYLOAD_BYTES}"
            f" bytes. Without {VERSION_FIELD} a payload is version 1."
        ),
        "type": "object",
        "properties": {
            **{name: _FIELD_SCHEMAS[name] for name in fields},
            VERSION_FIELD: {"const": CONTRACT_VERSION},
        },
        "required": list(fields),
        "additionalProperties": False,
    }


_NUMBER_OR_NULL = {"type": ["number", "null"]}
_CAMERA = {
    "type": ["object", "null"],
    "properties": {
        k: {"type": ["string", "integer", "null"]}
        for k in ("make", "model", "lens", "width", "height")
    },
}


_REGION_RESULT = {
    "type": "object",
    "properties": {
        "region": {"enum": list(REGIONS)},
        "change_score": {"type": "number", "minimum": 0},
        "noise_floor": _NUMBER_OR_NULL,
        "relative_change": _NUMBER_OR_NULL,
    },
    "required": ["region", "change_score", "noise_floor", "relative_change"],
}
_REGION_MOVED = {
    "type": "object",
    "properties": {
        "angle": {"enum": list(ANGLES)},
        "region": {"enum": list(REGIONS)},
        "change_score": {"type": "number", "minimum": 0},
        "relative_change": _NUMBER_OR_NULL,
        "text": {"type": "string"},
    },
    "required": ["angle", "region", "change_score", "relative_change", "text"],
}
_ANGLE_RESULT = {
    "type": "object",
    "properties": {
        "angle": {"enum": list(ANGLES)},
        "change_score": {"type": "number", "minimum": 0},
        "baseline_session_count": {"type": "integer", "minimum": 0},
        "noise_floor": _NUMBER_OR_NULL,
        "relative_change": _NUMBER_OR_NULL,
        "quality": {
            "type": ["object", "null"],
            "properties": {
                "score": {"type": "number", "minimum": 0, "maximum": 1},
                "flags": {"type": "array", "items": {"type": "string"}},
                "metrics": {"type": "object"},
            },
        },
        # Nine, row-major over the 3x3 grid; empty while the angle has no region baseline.
        "regions": {"type": "array", "items": _REGION_RESULT, "maxItems": len(REGIONS)},
    },
    "required": ["angle", "change_score", "baseline_session_count"],
}
_EQUIPMENT = {
    "type": "object",
    "properties": {
        "changed": {"type": "boolean"},
        "angles": {"type": "array", "items": {"enum": list(ANGLES)}},
        "status": {"type": "string"},
        "from": _CAMERA,
        "to": _CAMERA,
    },
    "required": ["changed", "angles"],
}
_CONFIDENCE = {
    "type": "object",
    "properties": {
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "level": {"type": "string"},
        "reasons": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["score", "level", "reasons"],
}


_LEVELS = ["stable", "mild", "moderate", "higher", "strong"]
_BASES = [str(b) for b in Basis]
_TRENDS = ["stable", "mild_variation", "significant_shift"]
# What a level was read against (schema/levels.py): the floor, its unit and the cut-offs.
_SCALE = {
    "type": "object",
    "properties": {
        "basis": {"enum": _BASES},
        "noise_floor": _NUMBER_OR_NULL,
        "floor_baseline_sessions": _NUMBER_OR_NULL,
        "unit": {"enum": ["x noise floor", "cosine distance"]},
        "levels": {"type": "object", "additionalProperties": {"type": "number"}},
        "trend": {"type": "object", "additionalProperties": {"type": "number"}},
    },
    "required": ["basis", "noise_floor", "unit", "levels", "trend"],
}


# Left/right symmetry (schema/symmetry.py); null when the session lacks either side.
_SYMMETRY = {
    "type": ["object", "null"],
    "properties": {
        "distance": {"type": "number", "minimum": 0},
        "baseline": _NUMBER_OR_NULL,
        "change": _NUMBER_OR_NULL,
        "noise_floor": _NUMBER_OR_NULL,
        "relative_change": _NUMBER_OR_NULL,
        "earlier_sessions": {"type": "integer", "minimum": 0},
    },
    "required": ["distance", "baseline", "change", "noise_floor", "relative_change"],
}
_INTERVAL = {
    "type": ["array", "null"],
    "items": {"type": "number"},
    "minItems": 2,
    "maxItems": 2,
    "description": "[low, high]: the slope's 95% interval, per 30 days",
}
_LINE_TREND = {
    "sessions": {"type": "integer", "minimum": 0},
    "direction": {
        "enum": ["rising", "steady", "falling", None],
        "description": "where the slope's interval lies against 0; null with too few sessions",
    },
    "slope_per_30_days": _NUMBER_OR_NULL,
    "slope_interval": _INTERVAL,
}
_RANGE = {
    "type": ["object", "null"],
    "properties": {"low": {"type": "number", "minimum": 0}, "high": {"type": "number"}},
    "required": ["low", "high"],
}
_TREND = {
    "type": "object",
    "description": "Theil-Sen slope of the last `window` scored sessions up to this one",
    "properties": {
        **_LINE_TREND,
        "window": {"type": "integer", "minimum": 1},
        "interval_level": {"type": "number"},
        "per_angle": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"angle": {"enum": list(ANGLES)}, **_LINE_TREND},
                "required": ["angle", "direction", "slope_per_30_days", "slope_interval"],
            },
        },
        "expected": {**_RANGE, "description": "the range the earlier sessions expected"},
        "expected_next": {
            **_RANGE,
            "properties": {
                **_RANGE["properties"],
                "after_days": {"type": "number", "minimum": 0},
            },
            "description": "the range for a session one median gap after this one",
        },
    },
    "required": [
        "sessions",
        "direction",
        "slope_per_30_days",
        "slope_interval",
        "window",
        "per_angle",
        "expected",
        "expected_next",
    ],
}


def analysis_result_schema() -> dict[str, Any]:
    """What ``producer result`` prints and the analyze task returns. New keys may come."""
    return {
        "$schema": _DRAFT,
        "$id": f"{_ID}analysis_result.json",
        "title": "A session's analysis",
        "type": "object",
        "properties": {
            "session_id": _UUID,
            "user_id": _UUID,
            "captured_at": {"type": "string"},
            "status": {"const": "succeeded"},
            "is_first_session": {"type": "boolean"},
            "change_score": {"type": "number", "minimum": 0},
            "baseline_session_count": {"type": "integer", "minimum": 0},
            "per_angle": {"type": "array", "items": _ANGLE_RESULT, "minItems": 1},
            "model_id": {"type": "string"},
            "embedding_dim": {"type": "integer", "minimum": 1},
            "request_task_id": {"type": ["string", "null"]},
            "noise_floor": _NUMBER_OR_NULL,
            "relative_change": _NUMBER_OR_NULL,
            "noise_floor_sessions": {"type": "object"},
            "low_quality_angles": {"type": "array", "items": {"enum": list(ANGLES)}},
            "equipment": _EQUIPMENT,
            "confidence": _CONFIDENCE,
            "variation_level": {"enum": [*_LEVELS, None]},
            "level_basis": {"enum": [*_BASES, None]},
            "symmetry": _SYMMETRY,
            "trend": _TREND,
            "within_expected": {
                "type": ["boolean", "null"],
                "description": "whether the score fell inside trend.expected; null without one",
            },
            "regions_moved": {"type": "array", "items": _REGION_MOVED, "maxItems": MOVED_MAX},
        },
        "required": [
            "session_id",
            "user_id",
            "captured_at",
            "status",
            "is_first_session",
            "change_score",
            "baseline_session_count",
            "per_angle",
            "model_id",
            "embedding_dim",
            "noise_floor",
            "relative_change",
            "low_quality_angles",
            "equipment",
            "confidence",
            "variation_level",
            "level_basis",
            "trend",
            "within_expected",
            "regions_moved",
        ],
    }


def comparison_result_schema() -> dict[str, Any]:
    """What ``producer compare --wait`` prints and the compare task returns."""
    layer = {
        "type": "object",
        "properties": {
            "delta": _NUMBER_OR_NULL,
            "sessions": {"type": "integer", "minimum": 0},
            "available": {"type": "boolean"},
            "variation_level": {"enum": [*_LEVELS, None]},
            "relative": _NUMBER_OR_NULL,
            "level_basis": {"enum": [*_BASES, None]},
        },
        "required": ["available"],
    }
    return {
        "$schema": _DRAFT,
        "$id": f"{_ID}comparison_result.json",
        "title": "A comparison of two sessions of one person",
        "type": "object",
        "properties": {
            "user_id": _UUID,
            "current_session_id": _UUID,
            "previous_session_id": _UUID,
            "overall_delta": {"type": "number", "minimum": 0},
            "stability_index": {"type": "number", "minimum": 0, "maximum": 1},
            "overall_trend": {"enum": _TRENDS},
            "relative_delta": _NUMBER_OR_NULL,
            "level_basis": {"enum": _BASES},
            "comparison_method": {"type": "string"},
            "per_angle": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "angle": {"enum": list(ANGLES)},
                        "score_delta": {"type": "number"},
                        "embedding_distance": {"type": "number"},
                    },
                    "required": ["angle"],
                },
            },
            "layers": {"type": "object", "additionalProperties": layer},
            "thresholds": {"type": "object", "additionalProperties": {"type": "number"}},
            "variation_levels": _SCALE,
        },
        "required": [
            "user_id",
            "current_session_id",
            "previous_session_id",
            "overall_delta",
            "stability_index",
            "overall_trend",
            "level_basis",
            "comparison_method",
            "per_angle",
        ],
    }


def notification_schema() -> dict[str, Any]:
    """The kwargs of ``changewatch.notification``, what changewatch sends the upstream."""
    error = {
        "type": "object",
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        "required": ["code", "message"],
    }
    return {
        "$schema": _DRAFT,
        "$id": f"{_ID}{NOTIFY_TASK}.json",
        "title": f"{NOTIFY_TASK} payload: a request of yours ended",
        "description": (
            "Sent as the kwargs of a Celery task to CHANGEWATCH_NOTIFY_QUEUE, at least once:"
            " deduplicate on notification_id (also the task id). One per analysis request,"
            " in request order per session, and one per comparison. New keys may come."
        ),
        "type": "object",
        "properties": {
            "notification_id": _UUID,
            "kind": {"enum": ["analysis", "comparison"]},
            "session_id": _UUID,
            "user_id": _UUID,
            "request_task_id": {"type": "string"},
            "status": {"enum": ["succeeded", "failed", "superseded"]},
            "result": {
                "description": "kind analysis: the analysis; kind comparison: the comparison",
                "anyOf": [
                    {"type": "null"},
                    {"$ref": "analysis_result.json"},
                    {"$ref": "comparison_result.json"},
                ],
            },
            "error": {"oneOf": [{"type": "null"}, error]},
            "superseded_by": {"type": ["string", "null"]},
            VERSION_FIELD: {"const": CONTRACT_VERSION},
        },
        "required": [
            "notification_id",
            "kind",
            "session_id",
            "user_id",
            "request_task_id",
            "status",
            "result",
            "error",
            VERSION_FIELD,
        ],
    }


def all_schemas() -> dict[str, dict[str, Any]]:
    """File name -> schema, for every payload and result object of the contract."""
    return {
        **{
            f"{task}.json": payload_schema(task)
            for task in (
                ANALYZE_TASK,
                COMPARE_TASK,
                EMBED_TASK,
                DELETE_TASK,
                ENROLL_TASK,
                FORGET_TASK,
            )
        },
        "analysis_result.json": analysis_result_schema(),
        "comparison_result.json": comparison_result_schema(),
        f"{NOTIFY_TASK}.json": notification_schema(),
    }


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def write(folder: Path = FOLDER) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in all_schemas().items():
        path = folder / name
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    return written
