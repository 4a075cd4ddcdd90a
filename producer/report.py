"""``python -m changewatch.producer report U --out FILE.html``: one HTML file a person can
open and keep, with nothing to fetch.

It gathers what the history view shows (every session's result, the plot), the trend, the
latest confidence, and for each angle its latest photo as a small thumbnail (read from S3
with boto3, as forget-user reads the person's photos), then hands them to
``report_html.render``. Images travel inside the file as data: URIs, and the page's
Content-Security-Policy (``default-src 'none'``) forbids any other load.
"""

from __future__ import annotations

import base64
import io
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from PIL import Image, ImageOps

from ..schema.contract import parse_uuid
from . import history, report_html
from .errors import NotFound
from .store import sessions as sessions_store

if TYPE_CHECKING:
    from .api import Producer

# The thumbnail's side in pixels: the upright, centre-cropped square the model saw.
THUMB_SIDE = 240
THUMB_QUALITY = 80


def thumbnail(data: bytes, side: int = THUMB_SIDE) -> bytes:
    """Photo bytes -> a JPEG of its upright centre square, ``side`` px (as the worker crops)."""
    try:
        from pillow_heif import register_heif_opener

        register_heif_opener()
    except ImportError:  # HEIC photos then show as unreadable; everything else works
        pass
    with Image.open(io.BytesIO(data)) as image:
        upright = ImageOps.exif_transpose(image).convert("RGB")
    width, height = upright.size
    square = min(width, height)
    left, top = (width - square) // 2, (height - square) // 2
    crop = upright.crop((left, top, left + square, top + square)).resize((side, side))
    return encode_jpeg(crop)


def encode_jpeg(image: Image.Image, quality: int = THUMB_QUALITY) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _read(client: Any, uri: str) -> bytes:
    bucket, _, key = uri[len("s3://") :].partition("/")
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def latest_photos(
    producer: Producer, sessions: list[dict[str, Any]], s3: Any = None
) -> dict[str, dict[str, Any]]:
    """Each angle's latest session: angle -> {session, captured_at, row, thumbnail (a data:
    URI, or None when the photo could not be read)}."""
    latest: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for session in sessions:  # capture order: later ones replace earlier ones
        for row in session["per_angle"]:
            latest[row["angle"]] = (session, row)
    with producer.connect() as conn:
        uris = sessions_store.good_images(
            conn, list({uuid.UUID(s["session_id"]) for s, _ in latest.values()})
        )
    client = s3 or boto3.client("s3")
    out: dict[str, dict[str, Any]] = {}
    for angle, (session, row) in latest.items():
        uri = uris.get(session["session_id"], {}).get(angle)
        thumb = None
        if uri:
            try:
                thumb = data_uri(thumbnail(_read(client, uri)), "image/jpeg")
            except (BotoCoreError, ClientError, OSError, ValueError):  # gone or unreadable
                thumb = None
        out[angle] = {
            "session_id": session["session_id"],
            "captured_at": session["captured_at"],
            "row": row,
            "thumbnail": thumb,
        }
    return out


def plot_uri(sessions: list[dict[str, Any]], title: str) -> str:
    """The history plot (producer.history.plot) as a PNG data: URI."""
    with tempfile.TemporaryDirectory() as folder:
        path = history.plot(sessions, Path(folder) / "history.png", title)
        return data_uri(path.read_bytes(), "image/png")


def build(producer: Producer, user_id: str | uuid.UUID, s3: Any = None) -> str:
    """The report of one person as an HTML document."""
    uid = parse_uuid(str(user_id), "user_id")
    sessions = producer.history(uid)
    if not sessions:
        raise NotFound(f"no analyzed session of user {uid}")
    return report_html.render(
        user_id=str(uid),
        sessions=sessions,
        plot=plot_uri(sessions, f"user {uid}"),
        photos=latest_photos(producer, sessions, s3),
    )


def write(producer: Producer, user_id: str | uuid.UUID, out: Path, s3: Any = None) -> Path:
    """Write the report to ``out`` (one self-contained file) and return its path."""
    page = build(producer, user_id, s3)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
