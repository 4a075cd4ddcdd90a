"""Read a session's photos from S3-compatible storage with boto3.

Access is checked before any request: a job may read only allowed buckets and keys
under its own user's prefix. boto3's own retry modes handle throttling and flaky
connections; what still fails is either a permanent JobError or a transient error
the task retries with backoff.
"""

from __future__ import annotations

from concurrent.futures import Executor
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from ..schema.contract import AnalyzeJob, S3Uri
from ..schema.errors import Code, JobError
from ..settings import Settings

# S3 error codes that no retry can fix, mapped to our error codes.
_PERMANENT = {
    "NoSuchKey": Code.IMAGE_MISSING,
    "404": Code.IMAGE_MISSING,
    "NotFound": Code.IMAGE_MISSING,
    "NoSuchBucket": Code.BUCKET_MISSING,
    "AccessDenied": Code.ACCESS_DENIED,
    "403": Code.ACCESS_DENIED,
    "InvalidObjectState": Code.IMAGE_MISSING,
}


def make_s3_client(settings: Settings) -> Any:
    """One thread-safe client per worker; endpoint and keys come from boto3's own AWS_* env."""
    return boto3.session.Session().client(
        "s3",
        config=Config(
            retries={"max_attempts": settings.s3_max_attempts, "mode": "standard"},
            connect_timeout=settings.s3_connect_timeout_s,
            read_timeout=settings.s3_read_timeout_s,
            max_pool_connections=32,
        ),
    )


def check_access(job: AnalyzeJob, uri: S3Uri, settings: Settings) -> None:
    if settings.allowed_buckets and uri.bucket not in settings.allowed_buckets:
        raise JobError(Code.BUCKET_NOT_ALLOWED, f"bucket {uri.bucket!r} is not allowed")
    prefix = settings.key_prefix.format(user_id=job.user_id)
    if prefix and not uri.key.startswith(prefix):
        raise JobError(
            Code.KEY_OUTSIDE_USER_PREFIX, f"{uri} is outside this user's prefix {prefix!r}"
        )


def fetch_object(s3: Any, uri: S3Uri, max_bytes: int) -> bytes:
    try:
        response = s3.get_object(Bucket=uri.bucket, Key=uri.key)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _PERMANENT:
            raise JobError(_PERMANENT[code], f"cannot read {uri}: {code}") from None
        raise
    body = response["Body"]
    try:
        size = int(response.get("ContentLength") or 0)
        if size > max_bytes:
            raise JobError(
                Code.IMAGE_TOO_LARGE, f"{uri} is {size} bytes, over the limit of {max_bytes}"
            )
        data: bytes = body.read(max_bytes + 1)
    finally:
        body.close()
    if len(data) > max_bytes:
        raise JobError(Code.IMAGE_TOO_LARGE, f"{uri} is over the limit of {max_bytes} bytes")
    if not data:
        raise JobError(Code.IMAGE_EMPTY, f"{uri} is empty (0 bytes)")
    return data


def fetch_images(s3: Any, job: AnalyzeJob, settings: Settings, pool: Executor) -> dict[str, bytes]:
    """All of a session's images, read concurrently; the first error wins."""
    for angle, uri in job.images.items():
        try:
            check_access(job, uri, settings)
        except JobError as err:
            raise JobError(err.code, f"image {angle!r}: {err.message}") from None
    futures = {
        angle: pool.submit(fetch_object, s3, uri, settings.max_image_bytes)
        for angle, uri in job.images.items()
    }
    images = {}
    for angle, future in futures.items():
        try:
            images[angle] = future.result()
        except JobError as err:
            raise JobError(err.code, f"image {angle!r}: {err.message}") from None
    return images
