"""Delete tokens: only a token for that task, that id, under the secret, and not expired."""

from __future__ import annotations

import hashlib
import hmac
import uuid

import pytest

from changewatch.schema import authority
from changewatch.schema.contract import FORGET_TASK, parse_forget, parse_person
from changewatch.schema.errors import Code, JobError
from changewatch.settings import Settings

SECRET = "s3cret-for-unit-tests"
NOW = 1_800_000_000.0


def _code(secret: str | None, task: str, subject: uuid.UUID, token: object) -> str | None:
    try:
        authority.check(secret, task, subject, token, now=NOW)
    except JobError as err:
        return err.code
    return None


def test_a_token_allows_its_task_on_its_id_only() -> None:
    user, other = uuid.uuid4(), uuid.uuid4()
    token = authority.sign(SECRET, FORGET_TASK, user, now=NOW)
    assert _code(SECRET, FORGET_TASK, user, token) is None
    assert _code(SECRET, FORGET_TASK, other, token) == Code.NOT_AUTHORIZED
    assert _code(SECRET, "changewatch.delete_session", user, token) == Code.NOT_AUTHORIZED
    assert _code("another secret", FORGET_TASK, user, token) == Code.NOT_AUTHORIZED


@pytest.mark.parametrize("token", [None, "", "v1", "v2.1.ab", "v1.x.ab", 12, {"t": 1}])
def test_a_missing_or_malformed_token_is_refused(token: object) -> None:
    assert _code(SECRET, FORGET_TASK, uuid.uuid4(), token) == Code.NOT_AUTHORIZED


def test_expiry_and_lifetime_are_enforced() -> None:
    user = uuid.uuid4()
    old = authority.sign(SECRET, FORGET_TASK, user, lifetime=60, now=NOW - 200)
    assert _code(SECRET, FORGET_TASK, user, old) == Code.TOKEN_EXPIRED
    # A forever token made by hand with the secret is still refused.
    expires = int(NOW) + 10 * authority.MAX_LIFETIME
    text = f"v1\n{FORGET_TASK}\n{user}\n{expires}".encode()
    forever = f"v1.{expires}.{hmac.new(SECRET.encode(), text, hashlib.sha256).hexdigest()}"
    assert _code(SECRET, FORGET_TASK, user, forever) == Code.NOT_AUTHORIZED
    with pytest.raises(ValueError, match="seconds"):
        authority.sign(SECRET, FORGET_TASK, user, lifetime=authority.MAX_LIFETIME + 1)


def test_a_worker_without_a_secret_refuses_every_token() -> None:
    user = uuid.uuid4()
    token = authority.sign(SECRET, FORGET_TASK, user, now=NOW)
    assert _code("", FORGET_TASK, user, token) == Code.NOT_AUTHORIZED
    assert _code(None, FORGET_TASK, user, token) == Code.NOT_AUTHORIZED


def test_the_documented_format_is_what_any_language_builds() -> None:
    """README: v1.<expires>.<hex HMAC-SHA256(secret, "v1\\n<task>\\n<id>\\n<expires>")>, the
    id in lower case, as tests/node/service.js builds it; an upper-case id still matches."""
    user = uuid.uuid4()
    expires = int(NOW) + 100
    text = f"v1\n{FORGET_TASK}\n{str(user).lower()}\n{expires}".encode()
    token = f"v1.{expires}.{hmac.new(SECRET.encode(), text, hashlib.sha256).hexdigest()}"
    assert _code(SECRET, FORGET_TASK, user, token) is None
    job = parse_forget(
        {"user_id": str(user).upper(), "token": authority.sign(SECRET, FORGET_TASK, user)}, SECRET
    )
    assert job.user_id == user


def test_forget_payloads_are_checked_like_every_payload() -> None:
    with pytest.raises(JobError) as missing:
        parse_forget({"user_id": str(uuid.uuid4())}, SECRET)
    assert missing.value.code == Code.INVALID_PAYLOAD
    with pytest.raises(JobError) as bad_id:
        parse_forget({"user_id": "nobody", "token": "v1.1.ab"}, SECRET)
    assert bad_id.value.code == Code.INVALID_UUID
    with pytest.raises(JobError) as extra:
        parse_person({"user_id": str(uuid.uuid4()), "token": "x"})
    assert extra.value.code == Code.INVALID_PAYLOAD


def test_the_notify_queue_cannot_be_one_of_changewatchs_own() -> None:
    for queue in ("changewatch", "changewatch.backfill.m"):
        with pytest.raises(ValueError, match="NOTIFY_QUEUE"):
            Settings.from_env({"CHANGEWATCH_NOTIFY_QUEUE": queue})
    settings = Settings.from_env(
        {"CHANGEWATCH_NOTIFY_QUEUE": "mine", "CHANGEWATCH_DELETE_SECRET": "hush-9q7"}
    )
    assert settings.notify_queue == "mine" and "hush-9q7" not in repr(settings)
