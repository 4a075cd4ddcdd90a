"""Photos in S3-compatible storage, as forget-user and delete-session remove them: by
exact URI, in batches of the most ``delete_objects`` takes, then checked one by one."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from botocore.exceptions import ClientError

__all__ = ["by_bucket", "delete_keys", "exists"]

# S3's DeleteObjects takes at most 1,000 keys a call.
BATCH = 1000


def by_bucket(uris: Iterable[str]) -> dict[str, set[str]]:
    """s3://BUCKET/KEY URIs as bucket -> keys."""
    found: dict[str, set[str]] = {}
    for uri in uris:
        bucket, _, key = uri[len("s3://") :].partition("/")
        found.setdefault(bucket, set()).add(key)
    return found


def delete_keys(client: Any, bucket: str, keys: Iterable[str]) -> int:
    """Delete ``keys`` from ``bucket``; returns how many were asked for."""
    ordered = sorted(keys)
    for start in range(0, len(ordered), BATCH):
        chunk = [{"Key": k} for k in ordered[start : start + BATCH]]
        client.delete_objects(Bucket=bucket, Delete={"Objects": chunk, "Quiet": True})
    return len(ordered)


def exists(client: Any, bucket: str, key: str) -> bool:
    try:
        client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True
