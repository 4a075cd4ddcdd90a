"""Validity of the change scores on real features: EfficientNet-Lite0 with its ImageNet
weights, the real series/ and camera/ photos, the worker's own ``preprocess`` and the
product's own scoring (``analyze_history``) and evidence (``evidence.annotate``).

Why: the unit tests elsewhere run on seeded random weights, which show that the plumbing
works but not that a score means anything. Here a person's history is eight re-take
sessions of six real photos (bench/validity builds them: every photo re-framed, relit and
re-encoded independently), and the claims the product makes are checked on what a trained
model actually returns: a re-take stays inside the person's noise floor, another scene on
one angle stands far outside it, blur and darkness are flagged next to the score (blur
reads like change), and another camera is reported. Pure: no Redis, Postgres, S3 or worker.

Margins come from ``python -m bench.validity --seeds 20 --models efficientnet_lite0``
(20 histories, 80 new re-take sessions; docs/validity.md has the 3-seed table):
- re-take angles: relative change median 0.53, max 2.27 (the hillside photo on front,
  one draw); 3% of angle values and 5% of session values reach 1, so 84%
  of re-take sessions are inside on every value. One draw (this seed's first re-take
  session, max 0.75) is asserted inside; the rest is asserted as the distribution it is.
- another scene: relative change 2.7-27 over all 360 (angle, photo) draws, the weakest
  pair (front <- DSCN0038) 2.7-5.1; no draw fell below the largest re-take (2.27).
"""

from __future__ import annotations

import io
import statistics
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bench.harness.services import PHOTOS
from bench.validity import (
    ANGLE_PHOTOS,
    UNUSED_PHOTOS,
    Scene,
    angle_row,
    blur,
    darken,
    draw_retake,
    embed,
    embed_sessions,
    evaluate,
    history_photos,
    load_scenes,
    photos_present,
    quality_of,
    retake,
    stored,
)
from changewatch.schema import evidence
from changewatch.schema.equipment import Equipment, compare
from changewatch.schema.symmetry import distance, symmetry
from changewatch.worker.embed import Embedder, WeightsUnavailable
from changewatch.worker.equipment import read
from tests.helpers import require

SEED = 0
RETAKE_SESSIONS = 4
# Every value of one re-take session below its floor: the product's own line (1). This
# seed's first session measures 0.75 at most; tighter would not hold in general (11% of
# re-take angle values are above 0.8 over 20 seeds).
INSIDE = 1.0
# "Well inside" on the whole: the median of a seed's 28 re-take values (4 sessions x (6
# angles + the session)) was 0.45-0.67 over 20 seeds.
RETAKE_MEDIAN_BELOW = 0.8
# Values >= 1 among those 28: 0-5 per seed over 20 seeds (median 0, mean 1.0, as the 3% of
# angles and 5% of sessions predict). Seed 0 has none; more than 2 would be twice what the
# floor is measured to let through.
RETAKE_ABOVE_1_AT_MOST = 2
# Another scene on one angle: each (angle, photo) pair must clear 2.5, between the largest
# re-take (2.27) and the smallest scene change (2.7) over 20 seeds; this seed's smallest is
# 3.0 (down <- DSCN0040, another church square). The median of the 18 pairs must exceed 4
# (this seed 5.2; median over 20 seeds 6.2).
SCENE_ABOVE = 2.5
SCENE_MEDIAN_ABOVE = 4.0
# A blurred photo reads like change: relative change 2.7-14.8 over 120 draws (median 5.7),
# which is why its quality flags travel with its score.
BLUR_ABOVE = 2.0
CAMERA_PHOTOS = {
    "front": "iphone_hdr_NO.jpg",
    "left": "HMD_Nokia_8.3_5G.jpg",
    "right": "canon_hdr_NO.jpg",
}
NO_EXIF_PHOTOS = {"front": "no_exif.jpg", "left": "Reconyx_HC500_Hyperfire.jpg"}


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    model = Embedder("imagenet", model="efficientnet_lite0")
    try:
        model.setup("cpu")
    except WeightsUnavailable as exc:
        require(False, f"EfficientNet-Lite0's ImageNet weights did not load: {exc}")
    assert model.model_id.startswith("efficientnet_lite0/imagenet-")
    return model


@pytest.fixture(scope="module")
def scenes() -> dict[str, Scene]:
    require(photos_present(), f"the series/ photos are missing under {PHOTOS}")
    return load_scenes([*ANGLE_PHOTOS.values(), *UNUSED_PHOTOS])


@pytest.fixture(scope="module")
def person(embedder: Embedder, scenes: dict[str, Scene]) -> dict[str, Any]:
    """One person's eight re-take sessions, then four new re-take sessions scored on them."""
    rng = np.random.default_rng(SEED)
    photos = history_photos(scenes, rng)
    history = stored(embed_sessions(embedder, photos))
    takes = [{a: draw_retake(rng) for a in ANGLE_PHOTOS} for _ in range(RETAKE_SESSIONS)]
    new = [{a: retake(scenes[ANGLE_PHOTOS[a]], t[a]) for a in ANGLE_PHOTOS} for t in takes]
    embedded = embed_sessions(embedder, new)
    return {
        "photos": photos,
        "history": history,
        "takes": takes,
        "new_photos": new,
        "new": embedded,
        "results": [evaluate(history, e) for e in embedded],
    }


def _relatives(result: dict[str, Any]) -> dict[str, float]:
    values = {"session": result["relative_change"]}
    values.update({r["angle"]: r["relative_change"] for r in result["per_angle"]})
    return values


def _variant(
    embedder: Embedder, person: dict[str, Any], angle: str, photo: bytes
) -> dict[str, Any]:
    """The first new re-take session with one angle's photo replaced."""
    vector = embed(embedder, [photo])[0]
    return evaluate(person["history"], {**person["new"][0], angle: vector})


def test_a_retake_session_stays_inside_the_noise_floor(person: dict[str, Any]) -> None:
    result = person["results"][0]
    # Eight sessions: seven scored ones (the first scores 0.0 and is left out) >= 3 needed.
    assert result["noise_floor"] is not None
    assert all(r["noise_floor"] is not None for r in result["per_angle"])
    relatives = _relatives(result)
    assert all(v < INSIDE for v in relatives.values()), relatives


def test_retakes_are_well_inside_on_the_whole(person: dict[str, Any]) -> None:
    values = [v for result in person["results"] for v in _relatives(result).values()]
    assert len(values) == RETAKE_SESSIONS * (len(ANGLE_PHOTOS) + 1)
    assert statistics.median(values) < RETAKE_MEDIAN_BELOW, sorted(values)
    assert sum(v >= INSIDE for v in values) <= RETAKE_ABOVE_1_AT_MOST, sorted(values)


def test_another_scene_on_one_angle_stands_far_outside(
    embedder: Embedder, person: dict[str, Any], scenes: dict[str, Scene]
) -> None:
    take = person["takes"][0]
    relatives: dict[tuple[str, str], float] = {}
    for angle in ANGLE_PHOTOS:
        for name in UNUSED_PHOTOS:
            result = _variant(embedder, person, angle, retake(scenes[name], take[angle]))
            relatives[angle, name] = angle_row(result, angle)["relative_change"]
            others = {a: v for a, v in _relatives(result).items() if a not in (angle, "session")}
            assert all(v < INSIDE for v in others.values()), (angle, name, others)
    weak = {pair: round(v, 2) for pair, v in relatives.items() if v <= SCENE_ABOVE}
    assert not weak, weak
    assert statistics.median(relatives.values()) > SCENE_MEDIAN_ABOVE, relatives


def test_left_right_symmetry_moves_only_when_one_side_changes(
    embedder: Embedder, person: dict[str, Any], scenes: dict[str, Scene]
) -> None:
    """The symmetry evidence (schema/symmetry.py) on real features, read as results read
    it: the left/right distance against the window of earlier sessions' distances. The
    re-take sessions stay inside its floor; another scene on one side stands outside it.
    Measured on seeds 0-2: re-takes 0.03-0.52, another scene 1.31-5.59, median of a seed's
    six pairs 2.0-4.7 (this seed 0.16-0.48 and 3.33-5.59)."""
    earlier = [distance(h.angles) for h in person["history"]][-evidence.NOISE_WINDOW :]
    steady = [symmetry(distance(new), earlier) for new in person["new"]]
    assert all(s is not None and s["relative_change"] < INSIDE for s in steady), steady
    take = person["takes"][0]
    moved: dict[tuple[str, str], float] = {}
    for side in ("left", "right"):
        for name in UNUSED_PHOTOS:
            vector = embed(embedder, [retake(scenes[name], take[side])])[0]
            result = symmetry(distance({**person["new"][0], side: vector}), earlier)
            assert result is not None
            moved[side, name] = round(result["relative_change"], 2)
    assert all(v > INSIDE for v in moved.values()), moved
    assert statistics.median(moved.values()) > 2, moved


def test_blur_and_darkness_are_flagged_next_to_the_score(
    embedder: Embedder, person: dict[str, Any], scenes: dict[str, Scene]
) -> None:
    take = person["takes"][0]
    noted: dict[str, dict[str, Any]] = {}
    for angle, name in ANGLE_PHOTOS.items():
        for kind, degrade, flag in (("blurred", blur, "blurry"), ("dark", darken, "dark")):
            photo = retake(scenes[name], take[angle], degrade)
            quality = quality_of(photo)
            row = angle_row(_variant(embedder, person, angle, photo), angle)
            noted[f"{angle} {kind}"] = {
                "score": round(row["change_score"], 3),
                "relative": round(row["relative_change"], 2),
                "flags": quality["flags"],
            }
            assert flag in quality["flags"], (angle, kind, quality)
            # The original re-take of the same angle carries no flag: the flag is the change.
            assert flag not in quality_of(person["new_photos"][0][angle])["flags"], angle
            if kind == "blurred":
                assert row["relative_change"] > BLUR_ABOVE, (angle, noted[f"{angle} {kind}"])
    print(noted)  # the scores beside the flags, for `pytest -s`


def _equipment(data: bytes) -> Equipment | None:
    with Image.open(io.BytesIO(data)) as image:
        return read(image)


def _photo(folder: str, name: str) -> bytes:
    path = PHOTOS / folder / name
    require(path.is_file(), f"real photo {path} is missing; set CHANGEWATCH_PHOTOS")
    return path.read_bytes()


def test_another_camera_is_reported(person: dict[str, Any]) -> None:
    history = [{a: _equipment(p) for a, p in s.items()} for s in person["photos"]]
    # The re-takes keep the Nikon's EXIF, as a re-encoding phone app would.
    assert all(e is not None and e.model == "COOLPIX P6000" for s in history for e in s.values())
    current = {a: _equipment(p) for a, p in person["new_photos"][0].items()}
    same = compare(history, current)
    assert (same["changed"], same["status"], same["angles"]) == (False, "same", [])
    for angle, name in CAMERA_PHOTOS.items():
        current[angle] = _equipment(_photo("camera", name))
    report = compare(history, current)
    assert report["changed"] and report["status"] == "changed"
    assert report["angles"] == list(CAMERA_PHOTOS)
    assert (report["from"]["make"], report["from"]["model"]) == ("NIKON", "COOLPIX P6000")
    assert (report["to"]["make"], report["to"]["model"]) == ("Apple", "iPhone 6")


def test_photos_without_exif_are_not_a_change(
    person: dict[str, Any], scenes: dict[str, Scene]
) -> None:
    history = [{a: _equipment(p) for a, p in s.items()} for s in person["photos"]]
    take = person["takes"][0]
    unknown = {a: _equipment(_photo("camera", n)) for a, n in NO_EXIF_PHOTOS.items()}
    assert unknown == {a: None for a in NO_EXIF_PHOTOS}
    # Some angles without EXIF, the others still from the Nikon: compared where known.
    mixed = {a: _equipment(p) for a, p in person["new_photos"][0].items()} | unknown
    report = compare(history, mixed)
    assert (report["changed"], report["status"], report["angles"]) == (False, "same", [])
    # No angle with EXIF at all (metadata stripped on the way): unknown, never changed.
    stripped = {
        a: _equipment(retake(scenes[n], take[a], keep_exif=False)) for a, n in ANGLE_PHOTOS.items()
    } | unknown
    assert all(e is None for e in stripped.values())
    report = compare(history, stripped)
    assert (report["changed"], report["status"], report["angles"]) == (False, "unknown", [])
