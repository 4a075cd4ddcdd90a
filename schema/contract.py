"""The public task contract: task names, payload fields and their validation.

Upstream services in any language send these JSON payloads, so the worker validates
every message with the same rules the Python producer applies before enqueueing.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from . import authority
from .errors import Code, JobError
from .status import Status

ANALYZE_TASK = "changewatch.analyze_session"
COMPARE_TASK = "changewatch.compare_sessions"
QUEUE = "changewatch"
# Re-embeds a stored session with one model (python -m changewatch.producer backfill); each model's
# workers consume their own backfill queue, so a job always reaches the model it names.
EMBED_TASK = "changewatch.embed_session"
BACKFILL_QUEUE_PREFIX = "changewatch.backfill."
# Removes one session and rescores the person's later sessions (python -m changewatch.producer
# delete-session). Destructive: its payload carries a token (schema/authority.py), and its
# one handler is worker/tasks.py's delete_session.
DELETE_TASK = "changewatch.delete_session"
# People, for senders in any language: enroll before the first job; forget on a
# deletion request (a destructive task: its payload carries a token, schema/authority.py).
ENROLL_TASK = "changewatch.enroll_person"
FORGET_TASK = "changewatch.forget_person"
# The notification changewatch sends when a job finishes, to the queue the upstream
# service names (CHANGEWATCH_NOTIFY_QUEUE), as a task its own worker consumes.
NOTIFY_TASK = "changewatch.notification"


# How every job of a forgotten person ends (forget-user): it names nobody.
FORGOTTEN_RESULT: dict[str, str] = {"status": Status.FORGOTTEN}
# How every job for a deleted session ends (delete-session): it names no session.
DELETED_RESULT: dict[str, str] = {"status": Status.DELETED}


def backfill_queue(model_id: str) -> str:
    return BACKFILL_QUEUE_PREFIX + model_id


def broker_index(user_id: uuid.UUID | str, brokers: int) -> int:
    """Which of a deployment's ``brokers`` (0-based, in ``CHANGEWATCH_BROKERS`` order) takes
    every message about this person: the first 8 bytes of the SHA-256 of the user id's
    canonical text (lowercase, hyphenated, as ``str(uuid.UUID(...))`` writes it), read as
    an unsigned big-endian integer, modulo the number of brokers.

    Part of the contract: a sender in another language computes the same (a hash, so ids
    that share their high or low bits, as time-ordered UUIDs do, still spread evenly).
    """
    if brokers < 1:
        raise ValueError("a deployment has at least one broker")
    text = str(user_id if isinstance(user_id, uuid.UUID) else uuid.UUID(str(user_id)))
    digest = hashlib.sha256(text.encode("ascii")).digest()
    return int.from_bytes(digest[:8], "big") % brokers


ANGLES: tuple[str, ...] = ("front", "left", "right", "up", "down", "raised")
MIN_IMAGES = 3
# Clocks of phones and servers drift; a capture time this far ahead is still accepted.
FUTURE_SKEW = timedelta(minutes=5)
# The largest valid payload (six URIs of S3's longest keys) is under 8 KB; anything past
# this bound is a sender's bug, refused before it is parsed further or stored.
MAX_PAYLOAD_BYTES = 64 * 1024
# The payloads' version. A payload may name it in ``contract_version``; one without it is
# version 1. A later version is refused with ``unsupported_contract_version``, never
# half-understood: a sender upgrades only once workers that know the version run.
CONTRACT_VERSION = 1
VERSION_FIELD = "contract_version"
MAX_MODEL_ID = 200

# Each task's payload fields (all required; ``contract_version`` may be added to any).
FIELDS: dict[str, tuple[str, ...]] = {
    ANALYZE_TASK: ("user_id", "session_id", "captured_at", "images"),
    COMPARE_TASK: ("user_id", "current_session_id", "previous_session_id"),
    EMBED_TASK: ("session_id", "model_id"),
    DELETE_TASK: ("user_id", "session_id", "token"),
    ENROLL_TASK: ("user_id",),
    FORGET_TASK: ("user_id", "token"),
}


@dataclass(frozen=True)
class S3Uri:
    bucket: str
    key: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class AnalyzeJob:
    user_id: uuid.UUID
    session_id: uuid.UUID
    captured_at: datetime
    images: dict[str, S3Uri]

    def to_payload(self) -> dict[str, Any]:
        return {
            "user_id": str(self.user_id),
            "session_id": str(self.session_id),
            "captured_at": self.captured_at.isoformat(),
            "images": {angle: str(uri) for angle, uri in self.images.items()},
        }


@dataclass(frozen=True)
class CompareJob:
    user_id: uuid.UUID
    current_session_id: uuid.UUID
    previous_session_id: uuid.UUID

    def to_payload(self) -> dict[str, Any]:
        return {
            "user_id": str(self.user_id),
            "current_session_id": str(self.current_session_id),
            "previous_session_id": str(self.previous_session_id),
        }


def parse_uuid(value: object, field: str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    if not isinstance(value, str):
        raise JobError(Code.INVALID_UUID, f"{field} must be a UUID string, got {value!r}")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise JobError(Code.INVALID_UUID, f"{field} is not a valid UUID: {value!r}") from None


def parse_captured_at(value: object, now: datetime | None = None) -> datetime:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise JobError(
                Code.INVALID_CAPTURED_AT, f"captured_at is not an ISO 8601 time: {value!r}"
            ) from None
    else:
        raise JobError(Code.INVALID_CAPTURED_AT, f"captured_at must be a string, got {value!r}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise JobError(
            Code.INVALID_CAPTURED_AT,
            f"captured_at needs a timezone (e.g. +00:00 or Z): {value!r}",
        )
    now = now or datetime.now(UTC)
    if moment > now + FUTURE_SKEW:
        raise JobError(Code.INVALID_CAPTURED_AT, f"captured_at is in the future: {value!r}")
    return moment


def parse_s3_uri(value: object, angle: str) -> S3Uri:
    if not isinstance(value, str) or not value.startswith("s3://"):
        raise JobError(
            Code.INVALID_IMAGE_URI, f"image {angle!r} must be an s3:// URI, got {value!r}"
        )
    bucket, _, key = value[len("s3://") :].partition("/")
    if not bucket or not key or key.endswith("/"):
        raise JobError(
            Code.INVALID_IMAGE_URI, f"image {angle!r} needs s3://BUCKET/KEY, got {value!r}"
        )
    return S3Uri(bucket, key)


def parse_images(value: object) -> dict[str, S3Uri]:
    pairs: list[tuple[object, object]]
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, list):
        # Also accept [{"angle": ..., "uri": ...}], which keeps duplicates visible.
        pairs = []
        for item in value:
            if not isinstance(item, Mapping) or set(item) != {"angle", "uri"}:
                raise JobError(
                    Code.INVALID_IMAGES, f"each image must be {{'angle', 'uri'}}, got {item!r}"
                )
            pairs.append((item["angle"], item["uri"]))
    else:
        raise JobError(
            Code.INVALID_IMAGES, f"images must be an object of angle -> s3 URI: {value!r}"
        )
    images: dict[str, S3Uri] = {}
    for angle, uri in pairs:
        if angle not in ANGLES:
            raise JobError(
                Code.UNKNOWN_ANGLE, f"unknown angle {angle!r}; expected one of {', '.join(ANGLES)}"
            )
        if angle in images:
            raise JobError(Code.DUPLICATE_ANGLE, f"angle {angle!r} is given more than once")
        images[str(angle)] = parse_s3_uri(uri, str(angle))
    if len(images) < MIN_IMAGES:
        raise JobError(
            Code.TOO_FEW_IMAGES, f"a session needs at least {MIN_IMAGES} images, got {len(images)}"
        )
    # Canonical angle order makes batches, rows and results stable.
    return {angle: images[angle] for angle in ANGLES if angle in images}


def payload_size(payload: Mapping[str, Any]) -> int:
    """Bytes of the payload as compact JSON, as a non-Python sender would send it."""
    return len(json.dumps(payload, separators=(",", ":"), default=str).encode())


def _check_fields(payload: Mapping[str, Any], task: str) -> None:
    """Size, then version, then the task's fields: in that order, so a payload of a
    future version is named as such, not as one with unknown fields."""
    if not isinstance(payload, Mapping):
        raise JobError(Code.INVALID_PAYLOAD, "a payload is a JSON object of keyword arguments")
    size = payload_size(payload)
    if size > MAX_PAYLOAD_BYTES:
        raise JobError(
            Code.PAYLOAD_TOO_LARGE,
            f"payload is {size} bytes; a job's payload is at most {MAX_PAYLOAD_BYTES} bytes",
        )
    version = payload.get(VERSION_FIELD, CONTRACT_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise JobError(Code.INVALID_PAYLOAD, f"{VERSION_FIELD} must be a positive integer")
    if version != CONTRACT_VERSION:
        raise JobError(
            Code.UNSUPPORTED_CONTRACT_VERSION,
            f"{VERSION_FIELD} {version} is not known here (this worker speaks"
            f" {CONTRACT_VERSION}); upgrade the workers before the senders",
        )
    required = set(FIELDS[task])
    missing = sorted(required - payload.keys())
    if missing:
        raise JobError(Code.INVALID_PAYLOAD, f"payload is missing field(s): {', '.join(missing)}")
    extra = sorted(payload.keys() - required - {VERSION_FIELD})
    if extra:
        raise JobError(Code.INVALID_PAYLOAD, f"payload has unknown field(s): {', '.join(extra)}")


def parse_analyze(payload: Mapping[str, Any]) -> AnalyzeJob:
    _check_fields(payload, ANALYZE_TASK)
    return AnalyzeJob(
        user_id=parse_uuid(payload["user_id"], "user_id"),
        session_id=parse_uuid(payload["session_id"], "session_id"),
        captured_at=parse_captured_at(payload["captured_at"]),
        images=parse_images(payload["images"]),
    )


def parse_compare(payload: Mapping[str, Any]) -> CompareJob:
    _check_fields(payload, COMPARE_TASK)
    job = CompareJob(
        user_id=parse_uuid(payload["user_id"], "user_id"),
        current_session_id=parse_uuid(payload["current_session_id"], "current_session_id"),
        previous_session_id=parse_uuid(payload["previous_session_id"], "previous_session_id"),
    )
    if job.current_session_id == job.previous_session_id:
        raise JobError(Code.SAME_SESSION, "a session cannot be compared with itself")
    return job


@dataclass(frozen=True)
class EmbedJob:
    session_id: uuid.UUID
    model_id: str

    def to_payload(self) -> dict[str, Any]:
        return {"session_id": str(self.session_id), "model_id": self.model_id}


def parse_embed(payload: Mapping[str, Any]) -> EmbedJob:
    _check_fields(payload, EMBED_TASK)
    model_id = payload["model_id"]
    if not isinstance(model_id, str) or not model_id or len(model_id) > MAX_MODEL_ID:
        raise JobError(
            Code.INVALID_PAYLOAD, f"model_id must be a model id string, got {model_id!r}"
        )
    return EmbedJob(parse_uuid(payload["session_id"], "session_id"), model_id)


@dataclass(frozen=True)
class DeleteJob:
    """Remove ``session_id`` of ``user_id`` as if it had never been analyzed; ``token``
    allows it (schema.authority, bound to the session id)."""

    user_id: uuid.UUID
    session_id: uuid.UUID
    token: str | None = None

    def to_payload(self) -> dict[str, Any]:
        out = {"user_id": str(self.user_id), "session_id": str(self.session_id)}
        return out if self.token is None else {**out, "token": self.token}


def parse_delete(payload: Mapping[str, Any], secret: str | None) -> DeleteJob:
    """The fields, then the token against the worker's ``secret``."""
    _check_fields(payload, DELETE_TASK)
    job = DeleteJob(
        parse_uuid(payload["user_id"], "user_id"),
        parse_uuid(payload["session_id"], "session_id"),
        payload["token"],
    )
    authority.check(secret, DELETE_TASK, job.session_id, job.token)
    return job


@dataclass(frozen=True)
class PersonJob:
    """enroll_person and forget_person: one person; ``token`` only when forgetting."""

    user_id: uuid.UUID
    token: str | None = None

    def to_payload(self) -> dict[str, Any]:
        out = {"user_id": str(self.user_id)}
        return out if self.token is None else {**out, "token": self.token}


def parse_person(payload: Mapping[str, Any]) -> PersonJob:
    """enroll_person's payload; also what the producer checks to enroll or forget."""
    _check_fields(payload, ENROLL_TASK)
    return PersonJob(parse_uuid(payload["user_id"], "user_id"))


def parse_forget(payload: Mapping[str, Any], secret: str | None) -> PersonJob:
    """The fields, then the token (schema.authority) against the worker's ``secret``."""
    _check_fields(payload, FORGET_TASK)
    job = PersonJob(parse_uuid(payload["user_id"], "user_id"), payload["token"])
    authority.check(secret, FORGET_TASK, job.user_id, job.token)
    return job


def analysis_result(
    *,
    session_id: uuid.UUID,
    user_id: uuid.UUID,
    captured_at: datetime,
    model_id: str,
    embedding_dim: int,
    change_score: float,
    is_first_session: bool,
    baseline_session_count: int,
    per_angle: list[dict[str, Any]],
    request_task_id: str | None = None,
) -> dict[str, Any]:
    """The analysis JSON every consumer sees, from the CLI, the API or the task result.

    ``request_task_id`` names the request whose photos and capture time these numbers
    come from: after a failed or pending re-analysis it is an older one than ``status``'s.
    """
    return {
        "session_id": str(session_id),
        "user_id": str(user_id),
        "captured_at": captured_at.isoformat(),
        "status": Status.SUCCEEDED,
        "is_first_session": is_first_session,
        "change_score": change_score,
        "baseline_session_count": baseline_session_count,
        "per_angle": per_angle,
        "model_id": model_id,
        "embedding_dim": embedding_dim,
        "request_task_id": request_task_id,
    }


# -- who a session belongs to: the rule producer and worker both apply ------------------


def other_users_session() -> JobError:
    """A session belongs to the person who first sent it; a job naming it for anyone
    else is refused and touches nothing."""
    return JobError(Code.SESSION_OF_OTHER_USER, "this session id belongs to another user")


def check_compared(session_id: uuid.UUID, owner: uuid.UUID | None, user_id: uuid.UUID) -> None:
    """Only an existing session of the comparison's own person can be compared."""
    if owner is None:
        raise JobError(Code.SESSION_NOT_FOUND, f"session {session_id} does not exist")
    if owner != user_id:
        raise JobError(
            Code.NOT_SAME_USER,
            f"session {session_id} does not belong to user {user_id}; "
            "only sessions of the same user can be compared",
        )
