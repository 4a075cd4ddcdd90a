"""Who may send a destructive task (forget_person, delete_session): a signed token.

Any sender that can write to the broker can enqueue an analysis; deleting a person's
data needs more. A destructive payload carries ``token``: an HMAC-SHA256, under a secret
shared with the senders allowed to delete (``CHANGEWATCH_DELETE_SECRET``), of the task
name, the one id it deletes, and an expiry. The worker checks it before anything is
read or deleted; a message without a valid one is refused with ``not_authorized`` or
``token_expired`` and recorded in ``rejected_messages``.

Why a token and not a queue: Redis ACLs limit keys, not the task names pushed into a
queue a sender may write to, and celery-node can pick no queue per call; a token is
plain JSON that any Celery client can carry. A token names its task and its id, so a
token for one person cannot delete another, nor a session. Within its lifetime (at most
``MAX_LIFETIME``) it can be replayed, which repeats a deletion that already happened.

Token format, as text any language can build (``hex`` is lower-case)::

    v1.<expires: unix seconds>.<hex HMAC-SHA256(secret, "v1\\n<task>\\n<id>\\n<expires>")>

The id is the UUID in its canonical lower-case form.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid

from .errors import Code, JobError

VERSION = "v1"
# A token is minted per request, just before it is sent: a short life bounds replays.
MAX_LIFETIME = 3600
DEFAULT_LIFETIME = 300
# Clock drift between the sender and the workers that is still accepted.
SKEW = 60


def _digest(secret: str, task: str, subject: uuid.UUID, expires: int) -> str:
    text = f"{VERSION}\n{task}\n{subject}\n{expires}".encode()
    return hmac.new(secret.encode(), text, hashlib.sha256).hexdigest()


def sign(
    secret: str, task: str, subject: uuid.UUID, lifetime: int = DEFAULT_LIFETIME, now: float = 0
) -> str:
    """A token allowing ``task`` on ``subject`` (a user or session id) for ``lifetime`` s."""
    if not secret:
        raise ValueError("no secret to sign with (CHANGEWATCH_DELETE_SECRET)")
    if not 0 < lifetime <= MAX_LIFETIME:
        raise ValueError(f"a token lives 1 to {MAX_LIFETIME} seconds, not {lifetime}")
    expires = int(now or time.time()) + lifetime
    return f"{VERSION}.{expires}.{_digest(secret, task, subject, expires)}"


def check(secret: str | None, task: str, subject: uuid.UUID, token: object, now: float = 0) -> None:
    """Refuse (``JobError``) unless ``token`` allows ``task`` on ``subject`` now.

    A worker without a secret refuses every destructive task: deleting is off until an
    operator gives the workers and the allowed senders one.
    """
    if not secret:
        raise JobError(
            Code.NOT_AUTHORIZED,
            f"{task} is refused: this worker has no CHANGEWATCH_DELETE_SECRET to check tokens",
        )
    parts = token.split(".") if isinstance(token, str) else []
    if len(parts) != 3 or parts[0] != VERSION or not parts[1].isdigit():
        raise JobError(Code.NOT_AUTHORIZED, f"{task} needs a token: v1.<expires>.<hmac hex>")
    expires = int(parts[1])
    if not hmac.compare_digest(parts[2], _digest(secret, task, subject, expires)):
        raise JobError(
            Code.NOT_AUTHORIZED, f"the token is not valid for {task} on this id; nothing deleted"
        )
    moment = now or time.time()
    if expires < moment - SKEW:
        raise JobError(Code.TOKEN_EXPIRED, f"the token expired at {expires} (unix seconds)")
    if expires > moment + MAX_LIFETIME + SKEW:
        raise JobError(
            Code.NOT_AUTHORIZED, f"the token lives past the longest allowed ({MAX_LIFETIME} s)"
        )
