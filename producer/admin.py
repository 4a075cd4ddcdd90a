"""Operator actions: replay failed jobs, and forget a user completely."""

from __future__ import annotations

import uuid
from typing import Any

import boto3

from producer.api import Producer
from producer.contract import JobError, parse_uuid

# Tables holding a user's data, and how to count what is left of it.
_LEFT = {
    "sessions": "SELECT count(*) FROM sessions WHERE user_id = %(u)s OR session_id = ANY(%(s)s)",
    "angle_embeddings": "SELECT count(*) FROM angle_embeddings WHERE session_id = ANY(%(s)s)",
    "analysis_requests": "SELECT count(*) FROM analysis_requests WHERE session_id = ANY(%(s)s)",
    "baseline_sums": "SELECT count(*) FROM baseline_sums WHERE user_id = %(u)s",
    "backfill_jobs": "SELECT count(*) FROM backfill_jobs WHERE session_id = ANY(%(s)s)",
    "analyses": "SELECT count(*) FROM analyses WHERE session_id = ANY(%(s)s)",
    "comparisons": "SELECT count(*) FROM comparisons WHERE user_id = %(u)s"
    " OR current_session_id = ANY(%(s)s) OR previous_session_id = ANY(%(s)s)",
    "rejected_messages": "SELECT count(*) FROM rejected_messages"
    " WHERE session_id = ANY(%(s)s) OR payload->>'user_id' = %(u)s::text",
}


def retry_failed(producer: Producer, session_id: str | None = None) -> list[dict[str, Any]]:
    """Enqueue failed jobs again from what was recorded of them (one, or all failed)."""
    where, params = "status = 'failed'", {}
    if session_id is not None:
        where += " AND session_id = %(sid)s"
        params["sid"] = parse_uuid(session_id, "session_id")
    with producer.connect() as conn:
        rows = conn.execute(
            f"SELECT session_id, user_id, captured_at, images FROM sessions WHERE {where}"
            " ORDER BY captured_at",
            params,
        ).fetchall()
    if session_id is not None and not rows:
        raise JobError("not_failed", f"session {session_id} is not a failed job")
    return [
        producer.analyze(r["user_id"], r["session_id"], r["captured_at"], r["images"]) for r in rows
    ]


def _object_prefixes(images: list[dict[str, str]], user_id: uuid.UUID) -> set[tuple[str, str]]:
    buckets = {uri[len("s3://") :].split("/", 1)[0] for img in images for uri in img.values()}
    return {(bucket, f"{user_id}/") for bucket in buckets}


def forget_user(
    producer: Producer, user_id: str, delete_objects: bool = False, s3: Any = None
) -> dict[str, Any]:
    """Delete every row of the user (and their photos if asked); count what is left."""
    user = parse_uuid(user_id, "user_id")
    with producer.connect() as conn, conn.transaction():
        rows = conn.execute(
            "SELECT session_id, images FROM sessions WHERE user_id = %s", (user,)
        ).fetchall()
        sessions = [r["session_id"] for r in rows]
        deleted = {
            "comparisons": conn.execute(
                "DELETE FROM comparisons WHERE user_id = %s", (user,)
            ).rowcount,
            # Requests, embeddings, analyses, backfills and comparisons that reference them
            # go by ON DELETE CASCADE.
            "sessions": conn.execute("DELETE FROM sessions WHERE user_id = %s", (user,)).rowcount,
            "baseline_sums": conn.execute(
                "DELETE FROM baseline_sums WHERE user_id = %s", (user,)
            ).rowcount,
            "rejected_messages": conn.execute(
                "DELETE FROM rejected_messages"
                " WHERE session_id = ANY(%s) OR payload->>'user_id' = %s::text",
                (sessions, user),
            ).rowcount,
        }
    report: dict[str, Any] = {"user_id": str(user), "deleted": deleted}
    with producer.connect() as conn:
        report["remaining"] = {
            table: conn.execute(query, {"u": user, "s": sessions}).fetchone()["count"]
            for table, query in _LEFT.items()
        }
    if delete_objects:
        client = s3 or boto3.client("s3")
        removed, left = 0, 0
        for bucket, prefix in _object_prefixes([r["images"] for r in rows], user):
            paginator = client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
                    removed += len(keys)
            left += client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("KeyCount", 0)
        report["deleted"]["objects"] = removed
        report["remaining"]["objects"] = left
    return report
