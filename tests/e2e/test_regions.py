"""Region maps end to end through a real worker: nine region scores per angle, each read
against its own noise floor, and a change confined to one region named first."""

from __future__ import annotations

import io
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from PIL import Image

from bench.validity.regions import replace_region
from changewatch.producer import Producer
from changewatch.schema.regions import REGIONS
from changewatch.worker import store
from tests.helpers import SERIES, T0, Uploader

pytestmark = pytest.mark.usefixtures("worker")
ANGLES = ["front", "left", "right"]
CHANGED = 2  # upper_right of the front photo


def encoded(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


@pytest.fixture(scope="module")
def person(photos: Path, uploader: Uploader, producer: Producer) -> dict[str, Any]:
    """Six weekly sessions of re-encoded re-takes of three photos, then a seventh whose
    front photo has its upper right region replaced by that region of another photo."""
    user = uuid.uuid4()
    scenes = [Image.open(photos / "series" / n).convert("RGB") for n in SERIES[:3]]
    donor = Image.open(photos / "series" / SERIES[7]).convert("RGB")
    ids = [uuid.uuid4() for _ in range(7)]
    for i, sid in enumerate(ids):
        shots = list(scenes)
        if i == 6:
            shots[0] = replace_region(scenes[0], donor, CHANGED)
        images = {
            a: uploader.put(user, f"{a}.jpg", encoded(s, 95 - 3 * i))
            for a, s in zip(ANGLES, shots, strict=True)
        }
        producer.analyze(user, sid, T0 + timedelta(weeks=i), images)
    return {"user": user, "ids": ids, "results": [producer.wait(s, timeout=240) for s in ids]}


def test_every_angle_has_nine_region_scores_with_their_own_floor(
    person: dict[str, Any],
) -> None:
    results = person["results"]
    assert all(row["regions"] == [] for row in results[0]["per_angle"])  # nothing before
    for result in results[1:]:
        for row in result["per_angle"]:
            assert [r["region"] for r in row["regions"]] == list(REGIONS)
            assert all(r["change_score"] >= 0 for r in row["regions"])
    # Region floors, like the angles', come once three earlier sessions were scored.
    assert all(r["noise_floor"] is None for r in results[3]["per_angle"][0]["regions"])
    fifth = results[4]["per_angle"][0]["regions"]
    assert all(r["noise_floor"] is not None for r in fifth)
    assert fifth[0]["relative_change"] == pytest.approx(
        fifth[0]["change_score"] / fifth[0]["noise_floor"]
    )


def test_the_changed_region_ranks_first_and_is_named_in_neutral_words(
    person: dict[str, Any],
) -> None:
    last = person["results"][6]
    front = next(r for r in last["per_angle"] if r["angle"] == "front")["regions"]
    top = max(front, key=lambda r: r["relative_change"])
    assert top["region"] == REGIONS[CHANGED]
    moved = last["regions_moved"]
    assert moved[0]["angle"] == "front" and moved[0]["region"] == REGIONS[CHANGED]
    assert moved[0]["text"] == (
        f"front, upper right region: {moved[0]['relative_change']:.1f}x its usual variation"
    )
    assert len(moved) <= 3


def test_region_storage_per_angle_is_at_most_the_embedding(
    person: dict[str, Any], database_url: str
) -> None:
    """9 x 128 float32 per angle row, beside the angle's own embedding; region sums
    count every session of the person."""
    with psycopg.connect(database_url) as conn:
        sizes = conn.execute(
            "SELECT octet_length(regions), octet_length(embedding) FROM angle_embeddings"
            " WHERE session_id = %s",
            (person["ids"][-1],),
        ).fetchall()
        (model,) = conn.execute("SELECT model_id FROM models WHERE active").fetchone() or ("",)
        # The sums the store keeps: the stored checkpoint and the sessions after it.
        totals = store.load_totals(conn, person["user"], model)
    assert len(sizes) == 3
    assert all(regions == 9 * 128 * 4 and regions <= embedding for regions, embedding in sizes)
    assert totals is not None
    assert sorted(count for count, _ in totals.regions.values()) == [7, 7, 7]
