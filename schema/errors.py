"""Every error code a job can end with, each declared once with its one-line meaning.

Codes are plain strings on the wire and in Postgres (``Code`` is a ``StrEnum``, so a
member *is* its string). The README's table of codes is checked against this registry
by a test, so no code goes undocumented and no documented code is made up.
"""

from __future__ import annotations

from enum import StrEnum


class Code(StrEnum):
    """``Code.X`` is the string ``"x"``; ``Code.X.meaning`` says what it means."""

    meaning: str

    def __new__(cls, value: str, meaning: str) -> Code:
        member = str.__new__(cls, value)
        member._value_ = value
        member.meaning = meaning
        return member

    # -- the message ---------------------------------------------------------------------
    INVALID_PAYLOAD = "invalid_payload", "not a JSON object of the contract's fields"
    INVALID_JSON = "invalid_json", "a line of a `bulk` file that is not JSON (reported, not sent)"
    PAYLOAD_TOO_LARGE = "payload_too_large", "over 64 KiB of JSON"
    UNSUPPORTED_CONTRACT_VERSION = (
        "unsupported_contract_version",
        "a contract_version this worker does not speak",
    )
    INVALID_UUID = "invalid_uuid", "an id that is not a UUID string"
    INVALID_CAPTURED_AT = (
        "invalid_captured_at",
        "captured_at is not an ISO 8601 time with a zone, or is in the future",
    )
    INVALID_IMAGES = "invalid_images", "images is not an object or list of angle and URI"
    UNKNOWN_ANGLE = "unknown_angle", "an angle outside front, left, right, up, down, raised"
    DUPLICATE_ANGLE = "duplicate_angle", "the same angle given twice"
    TOO_FEW_IMAGES = "too_few_images", "fewer than three angles"
    INVALID_IMAGE_URI = "invalid_image_uri", "an image that is not s3://BUCKET/KEY"
    SAME_SESSION = "same_session", "a comparison of a session with itself"
    # -- the person or session ---------------------------------------------------------
    UNKNOWN_USER = "unknown_user", "the person was never enrolled"
    USER_FORGOTTEN = "user_forgotten", "forget-user ran for the person; nothing was written"
    SESSION_OF_OTHER_USER = "session_of_other_user", "the session id belongs to another person"
    NOT_SAME_USER = "not_same_user", "a comparison of sessions of two different people"
    SESSION_NOT_FOUND = "session_not_found", "no such session"
    SESSION_NOT_READY = "session_not_ready", "compared while still queued or running"
    SESSION_NOT_ANALYZED = "session_not_analyzed", "the session has no good analysis"
    NOT_FAILED = "not_failed", "retry of a session that did not fail"
    SESSION_DELETED = (
        "session_deleted",
        "delete-session ran for the session; nothing was written",
    )
    # -- storage -------------------------------------------------------------------------
    IMAGE_MISSING = "image_missing", "no object at the image's URI"
    BUCKET_MISSING = "bucket_missing", "no such bucket"
    ACCESS_DENIED = "access_denied", "storage refused the worker's credentials"
    BUCKET_NOT_ALLOWED = "bucket_not_allowed", "a bucket outside CHANGEWATCH_ALLOWED_BUCKETS"
    KEY_OUTSIDE_USER_PREFIX = (
        "key_outside_user_prefix",
        "a key outside the person's prefix (CHANGEWATCH_KEY_PREFIX)",
    )
    # -- the image -----------------------------------------------------------------------
    IMAGE_EMPTY = "image_empty", "an object of zero bytes"
    IMAGE_TOO_LARGE = "image_too_large", "over CHANGEWATCH_MAX_IMAGE_BYTES or too many pixels"
    IMAGE_TOO_SMALL = "image_too_small", "too few pixels to embed"
    UNSUPPORTED_FORMAT = "unsupported_format", "not a JPEG, PNG, HEIC or other known image"
    IMAGE_CORRUPT = "image_corrupt", "a known format that does not decode"
    # -- anything else -------------------------------------------------------------------
    DEPENDENCY_UNAVAILABLE = (
        "dependency_unavailable",
        "storage or the database stayed unreachable through 8 retries (3 to 6 minutes)",
    )
    INTERNAL_ERROR = "internal_error", "a bug or a missing grant; the message says which"
    DELIVERY_LIMIT_EXCEEDED = (
        "delivery_limit_exceeded",
        "RabbitMQ gave the job to a worker that many times and none finished it (each one"
        " stopped while running it); it is not tried again",
    )
    ENQUEUE_FAILED = "enqueue_failed", "the producer recorded the job but the broker refused it"
    # -- a backfill or a model change ----------------------------------------------------
    WRONG_MODEL = "wrong_model", "an embed job sent to another model's queue"
    SUPERSEDED = "superseded", "a newer analysis arrived during the backfill; the next takes it"
    BACKFILL_INCOMPLETE = (
        "backfill_incomplete",
        "model activate refused: sessions the new model has not embedded",
    )
    UNKNOWN_MODEL = "unknown_model", "no worker ever registered that model"
    NO_WORKERS = "no_workers", "no worker of the model is consuming"
    AMBIGUOUS_MODEL = "ambiguous_model", "several models could be meant; name one"
    # -- a destructive task over the wire (schema/authority.py) -----------------------------
    NOT_AUTHORIZED = (
        "not_authorized",
        "a destructive task without a valid token for its task and id; nothing was deleted",
    )
    TOKEN_EXPIRED = (
        "token_expired",
        "a destructive task's token past its expiry; nothing was deleted",
    )


class JobError(ValueError):
    """A job that can never succeed as sent: ``code`` for machines, the message for people."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = str(code)  # a plain string on the wire, whatever the caller passed
        self.message = message
