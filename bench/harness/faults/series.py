"""The work a fault run sends: real photos of ``photos/series``, one history per user."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BUCKET = "changewatch-faults"
ANGLES = ("front", "left", "right", "up", "down", "raised")
T0 = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
# One user's history: five sessions of three to six real Nikon photos (640x480) from
# ``photos/series``, two weeks apart. Every user in a fault run gets the same history.
SERIES_PLAN: tuple[tuple[str, ...], ...] = (
    ("DSCN0010", "DSCN0012", "DSCN0021"),
    ("DSCN0012", "DSCN0021", "DSCN0025", "DSCN0027"),
    ("DSCN0025", "DSCN0027", "DSCN0029", "DSCN0038", "DSCN0040"),
    ("DSCN0021", "DSCN0029", "DSCN0038", "DSCN0040", "DSCN0042", "DSCN0010"),
    ("DSCN0038", "DSCN0040", "DSCN0042"),
)


@dataclass(frozen=True)
class Job:
    user_id: uuid.UUID
    session_id: uuid.UUID
    index: int  # position in SERIES_PLAN
    captured_at: datetime
    images: dict[str, str]


def upload_series(client: Any, photos: Path, user: uuid.UUID) -> dict[str, str]:
    """The user's copy of every photo SERIES_PLAN uses: name -> s3:// URI."""
    uris = {}
    for name in sorted({n for session in SERIES_PLAN for n in session}):
        key = f"{user}/{name}.jpg"
        client.put_object(
            Bucket=BUCKET, Key=key, Body=(photos / "series" / f"{name}.jpg").read_bytes()
        )
        uris[name] = f"s3://{BUCKET}/{key}"
    return uris


def series_jobs(client: Any, photos: Path, user: uuid.UUID, count: int | None = None) -> list[Job]:
    """The first ``count`` sessions of SERIES_PLAN for ``user``, uploaded, in capture order."""
    uris = upload_series(client, photos, user)
    return [
        Job(
            user,
            uuid.uuid4(),
            i,
            T0 + timedelta(days=14 * i),
            {angle: uris[n] for angle, n in zip(ANGLES, names, strict=False)},
        )
        for i, names in enumerate(SERIES_PLAN[:count])
    ]


def send_histories(client: Any, producer: Any, photos: Path, users: int) -> dict[uuid.UUID, int]:
    """``users`` whole histories, each a new person's, sent through ``producer``:
    session id -> how many images it was sent with."""
    expected = {}
    for _ in range(users):
        for job in series_jobs(client, photos, uuid.uuid4()):
            producer.analyze(job.user_id, job.session_id, job.captured_at, job.images)
            expected[job.session_id] = len(job.images)
    return expected


def send_sessions(client: Any, producer: Any, photos: Path, sessions: int) -> list[uuid.UUID]:
    """``sessions`` sessions, from as many new people's histories as it takes."""
    ids: list[uuid.UUID] = []
    while len(ids) < sessions:
        for job in series_jobs(client, photos, uuid.uuid4()):
            if len(ids) == sessions:
                break
            producer.analyze(job.user_id, job.session_id, job.captured_at, job.images)
            ids.append(job.session_id)
    return ids
