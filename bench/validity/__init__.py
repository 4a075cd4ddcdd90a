"""``python -m bench.validity``: do change scores separate a re-take from a real change?

Why: a change score is only worth reporting if photographing the same thing again scores
well below photographing something else. This benchmark measures that on real photos with
the product's own path (``worker.decode.preprocess`` -> ``worker.embed.Embedder`` ->
``worker.score.analyze_history`` -> ``schema.evidence.annotate``), no services:

- a person's history: six series/ photos (one Nikon COOLPIX P6000), one per angle, the
  same photo per angle in every session; every session is a *re-take* (see :func:`retake`:
  each photo independently re-framed, relit and re-encoded);
- new re-take sessions scored against that history: the re-take noise;
- a changed angle: one angle's photo replaced by a series/ photo that the history never
  used (the other five angles stay re-takes);
- degraded photos: one angle blurred or darkened, with worker.quality's flags next to
  the score.

Models: EfficientNet-Lite0 with its ImageNet weights (the real, trained model available
offline), the seeded random-weight ResNet50 as the contrast (why random weights are for
unit tests only), and ImageNet ResNet50 when its weights load. Writes ``docs/validity.md``
and ``docs/validity.png`` (``bench/validity/report.py``). tests/unit/test_validity.py asserts on
the same construction.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import numpy as np
from PIL import ExifTags, Image, ImageEnhance, ImageFilter

from bench.harness.services import PHOTOS, SERIES_PHOTOS
from changewatch.schema.contract import ANGLES
from changewatch.schema.evidence import annotate
from changewatch.worker.decode import decode_upright, preprocess
from changewatch.worker.embed import Embedder
from changewatch.worker.quality import judge, measure, original_size
from changewatch.worker.score import StoredSession, analyze_history

SERIES = PHOTOS / "series"
# The person's six angles: six different scenes, so every angle has its own baseline.
ANGLE_PHOTOS: dict[str, str] = dict(zip(ANGLES, SERIES_PHOTOS[:6], strict=True))
# Series photos no history session uses: "another scene" on one angle.
UNUSED_PHOTOS = SERIES_PHOTOS[6:]
HISTORY_SESSIONS = 8
# Re-take ranges: JPEG quality, brightness change, shift (fraction of each side), rotation.
JPEG_QUALITY = (70, 92)
BRIGHTNESS = (0.02, 0.04)
SHIFT = (0.01, 0.02)
ROTATION_DEG = (1.0, 2.0)
# Every take frames the central 90% of the scene, so a shift of <= 2% and a rotation of
# <= 2 degrees never pull empty corners into the picture (a real re-take has none). 0.918
# is the largest frame that covers the worst case on a 4:3 photo.
FRAME = 0.9
# Degradations, as in bench/quality_calibration.py: Gaussian blur of radius long side / 120,
# and brightness x 0.3.
BLUR_DIVISOR = 120
DARK_FACTOR = 0.3
MODELS: tuple[tuple[str, str, str], ...] = (
    ("EfficientNet-Lite0, ImageNet weights", "imagenet", "efficientnet_lite0"),
    ("ResNet50, seeded random weights", "random", "resnet50"),
    ("ResNet50, ImageNet weights", "imagenet", "resnet50"),
)
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

Degrade = Callable[[Image.Image], Image.Image]


@dataclass(frozen=True)
class Retake:
    """How one take of one photo differs from the scene: drawn per photo, per session."""

    quality: int
    brightness: float
    shift: tuple[float, float]
    rotation: float


def _signed(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(*bounds)) * (1.0 if rng.random() < 0.5 else -1.0)


def draw_retake(rng: np.random.Generator) -> Retake:
    return Retake(
        quality=int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1)),
        brightness=1.0 + _signed(rng, BRIGHTNESS),
        shift=(_signed(rng, SHIFT), _signed(rng, SHIFT)),
        rotation=_signed(rng, ROTATION_DEG),
    )


@dataclass(frozen=True)
class Scene:
    """One real photo, upright at full size, with the EXIF it came with."""

    name: str
    image: Image.Image
    exif: bytes


def load_scene(path: Path) -> Scene:
    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as opened:
        exif = opened.getexif()
        # The pixels are turned upright below, so the copy must not be turned again.
        exif[ExifTags.Base.Orientation] = 1
        raw = exif.tobytes()
    return Scene(path.name, decode_upright(data, draft_side=None), raw)


def blur(image: Image.Image) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(max(image.size) / BLUR_DIVISOR))


def darken(image: Image.Image) -> Image.Image:
    return ImageEnhance.Brightness(image).enhance(DARK_FACTOR)


def retake(
    scene: Scene, take: Retake, degrade: Degrade | None = None, keep_exif: bool = True
) -> bytes:
    """JPEG bytes of one take: relit, re-framed (shift + rotation about the centre inside
    the FRAME), optionally degraded, re-encoded; same pixel size as the original."""
    image = ImageEnhance.Brightness(scene.image).enhance(take.brightness)
    width, height = image.size
    cx, cy = width / 2, height / 2
    theta = np.deg2rad(take.rotation)
    a, b = FRAME * np.cos(theta), -FRAME * np.sin(theta)
    d, e = FRAME * np.sin(theta), FRAME * np.cos(theta)
    tx, ty = take.shift[0] * width, take.shift[1] * height
    # Output pixel (x, y) samples the scene at C + t + FRAME * R(theta) (p - C).
    coefficients = (a, b, cx + tx - a * cx - b * cy, d, e, cy + ty - d * cx - e * cy)
    image = image.transform(
        image.size, Image.Transform.AFFINE, coefficients, Image.Resampling.BICUBIC
    )
    if degrade is not None:
        image = degrade(image)
    out = io.BytesIO()
    options: dict[str, Any] = {"quality": take.quality}
    if keep_exif and scene.exif:
        options["exif"] = scene.exif
    image.save(out, "JPEG", **options)
    return out.getvalue()


def load_scenes(names: Sequence[str]) -> dict[str, Scene]:
    return {name: load_scene(SERIES / name) for name in names}


def photos_present() -> bool:
    return all((SERIES / n).is_file() for n in (*ANGLE_PHOTOS.values(), *UNUSED_PHOTOS))


def history_photos(scenes: dict[str, Scene], rng: np.random.Generator) -> list[dict[str, bytes]]:
    """HISTORY_SESSIONS sessions of re-takes, oldest first: angle -> JPEG bytes."""
    return [
        {angle: retake(scenes[name], draw_retake(rng)) for angle, name in ANGLE_PHOTOS.items()}
        for _ in range(HISTORY_SESSIONS)
    ]


def embed(embedder: Embedder, photos: Sequence[bytes]) -> np.ndarray:
    """(N, dim) embeddings of encoded photos, through the worker's own preprocess."""
    batch = np.stack([preprocess(p) for p in photos])
    return np.concatenate([embedder.predict(batch[i : i + 16]) for i in range(0, len(batch), 16)])


def embed_sessions(
    embedder: Embedder, sessions: Sequence[dict[str, bytes]]
) -> list[dict[str, np.ndarray]]:
    keys = [(i, angle) for i, s in enumerate(sessions) for angle in s]
    vectors = embed(embedder, [sessions[i][angle] for i, angle in keys])
    out: list[dict[str, np.ndarray]] = [{} for _ in sessions]
    for (i, angle), vector in zip(keys, vectors, strict=True):
        out[i][angle] = vector
    return out


def stored(embedded: Sequence[dict[str, np.ndarray]], start: int = 0) -> list[StoredSession]:
    """StoredSessions one week apart, with stable ids."""
    return [
        StoredSession(UUID(int=start + i + 1), T0 + timedelta(days=7 * (start + i)), angles)
        for i, angles in enumerate(embedded)
    ]


def evaluate(history: Sequence[StoredSession], current: dict[str, np.ndarray]) -> dict[str, Any]:
    """The product's result for ``current`` after ``history``: analyze_history then annotate
    (session and per-angle change_score, noise_floor, relative_change)."""
    session = stored([current], start=len(history))[0]
    everyone = [*history, session]
    at = {s.session_id: s.captured_at for s in everyone}
    analyses = [{**asdict(a), "captured_at": at[a.session_id]} for a in analyze_history(everyone)]
    return annotate(analyses[-1], earlier=analyses[:-1], photos=None, equipment={})


def angle_row(result: dict[str, Any], angle: str) -> dict[str, Any]:
    return next(r for r in result["per_angle"] if r["angle"] == angle)


def quality_of(data: bytes) -> dict[str, Any]:
    """worker.quality's judgement (score, flags) of an encoded photo, measured the way the
    worker does, with the two metrics that decide blurry and dark."""
    metrics = measure(decode_upright(data), original_size(data))
    return {**judge(metrics), "sharpness": metrics.sharpness, "brightness": metrics.brightness}


def run_seed(embedder: Embedder, scenes: dict[str, Scene], seed: int, retakes: int) -> dict:
    """One person's history and every variant of the new session, for one seed."""
    rng = np.random.default_rng(seed)
    history = stored(embed_sessions(embedder, history_photos(scenes, rng)))
    takes = [{a: draw_retake(rng) for a in ANGLE_PHOTOS} for _ in range(retakes)]
    new = [{a: retake(scenes[ANGLE_PHOTOS[a]], t[a]) for a in ANGLE_PHOTOS} for t in takes]
    new_embedded = embed_sessions(embedder, new)
    retake_results = [evaluate(history, e) for e in new_embedded]
    # Variants of the first new session: one angle changed, blurred or darkened at a time.
    variants: list[tuple[str, str, str, bytes]] = []
    for angle in ANGLE_PHOTOS:
        for name in UNUSED_PHOTOS:
            variants.append(("changed", angle, name, retake(scenes[name], takes[0][angle])))
        for kind, degrade in (("blurred", blur), ("dark", darken)):
            photo = retake(scenes[ANGLE_PHOTOS[angle]], takes[0][angle], degrade)
            variants.append((kind, angle, ANGLE_PHOTOS[angle], photo))
    vectors = embed(embedder, [v[3] for v in variants])
    rows = []
    for (kind, angle, name, photo), vector in zip(variants, vectors, strict=True):
        result = evaluate(history, {**new_embedded[0], angle: vector})
        row = angle_row(result, angle)
        others = [r for r in result["per_angle"] if r["angle"] != angle]
        rows.append(
            {
                "kind": kind,
                "angle": angle,
                "photo": name,
                "score": row["change_score"],
                "floor": row["noise_floor"],
                "relative": row["relative_change"],
                "others_max_relative": max(r["relative_change"] for r in others),
                "session_relative": result["relative_change"],
                "quality": quality_of(photo) if kind != "changed" else None,
            }
        )
    return {"seed": seed, "retakes": retake_results, "variants": rows}
