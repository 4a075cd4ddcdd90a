"""The sessions the demo sends: a made-up person drawn in memory, or a folder of photos."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from bench.demo.config import (
    ANGLES,
    GENERATED_SESSIONS,
    HEIGHT,
    MIN_IMAGES,
    PHOTO_SUFFIXES,
    WIDTH,
    DemoError,
)

Colour = tuple[int, ...]


@dataclass(frozen=True)
class Photo:
    """One image to upload: its angle, its bytes and where it came from (for the table)."""

    angle: str
    data: bytes
    suffix: str
    source: str


@dataclass(frozen=True)
class Pose:
    """How an angle looks on the picture: head offset, size and side light."""

    dx: float
    dy: float
    rx: float
    ry: float
    light: float
    arms: bool = False


POSES: dict[str, Pose] = {
    "front": Pose(0, 0, 105, 140, 0.0),
    "left": Pose(-55, 0, 85, 138, -0.7),
    "right": Pose(55, 0, 85, 138, 0.7),
    "up": Pose(0, -35, 105, 115, 0.1),
    "down": Pose(0, 30, 105, 118, -0.1),
    "raised": Pose(0, 35, 92, 122, 0.2, arms=True),
}
# How far each session has drifted from the first: six re-takes (enough history for the
# person's noise floor from the fifth on), then one that drifts. A re-take changes nothing
# of the person: each photo is framed and lit a little differently (``Take``), drawn
# independently, as bench.validity re-takes real photos. (The re-takes used to carry a
# small drift of their own, 0.01-0.03 in head position, size and colours, one way: not
# re-takes, and the previous session then read at 1.0x the floor.)
DRIFT = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.22)
# A take's framing and light: shift in pixels, size and brightness, each within +-.
TAKE_SHIFT_PX = 4.0
TAKE_SCALE = 0.015
TAKE_LIGHT = 0.03


@dataclass(frozen=True)
class Take:
    """How one photo of a session was taken: where the camera stood, how bright it was."""

    dx: float = 0.0
    dy: float = 0.0
    scale: float = 1.0
    light: float = 1.0

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Take:
        return cls(
            dx=rng.uniform(-TAKE_SHIFT_PX, TAKE_SHIFT_PX),
            dy=rng.uniform(-TAKE_SHIFT_PX, TAKE_SHIFT_PX),
            scale=1.0 + rng.uniform(-TAKE_SCALE, TAKE_SCALE),
            light=1.0 + rng.uniform(-TAKE_LIGHT, TAKE_LIGHT),
        )


@dataclass(frozen=True)
class Face:
    """Where the head is on this picture, how big, and its colours, after the drift."""

    pose: Pose
    drift: float
    take: Take
    cx: float
    cy: float
    rx: float
    ry: float
    skin: Colour
    hair: Colour
    shirt: Colour

    @classmethod
    def at(cls, pose: Pose, drift: float, take: Take | None = None) -> Face:
        take = take or Take()
        scale = (1.0 + 0.4 * drift) * take.scale
        return cls(
            pose,
            drift,
            take,
            cx=WIDTH / 2 + pose.dx + 120 * drift + take.dx,
            cy=HEIGHT / 2 - 10 + pose.dy + 60 * drift + take.dy,
            rx=pose.rx * scale,
            ry=pose.ry * scale,
            skin=tuple(int(c * (1.0 - 0.5 * drift)) for c in (222, 178, 148)),
            hair=tuple(int(c + 160 * drift) for c in (70, 50, 35)),
            shirt=(60 + int(300 * drift), 90, 140),
        )


def _background() -> Image.Image:
    """A vertical grey-blue gradient."""
    ys = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)[0]
    background = 205 - 50 * ys / HEIGHT
    canvas = np.stack([background, background + 4, background + 14], axis=-1)
    return Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8), "RGB")


def _draw_head(draw: ImageDraw.ImageDraw, f: Face) -> None:
    """Shoulders, neck, raised arms if the pose has them, hair and the face's oval."""
    cx, cy, rx, ry = f.cx, f.cy, f.rx, f.ry
    draw.ellipse((cx - 2.2 * rx, cy + 0.8 * ry, cx + 2.2 * rx, cy + 2.6 * ry), fill=f.shirt)
    draw.rectangle((cx - 0.35 * rx, cy + 0.6 * ry, cx + 0.35 * rx, cy + 1.1 * ry), fill=f.skin)
    if f.pose.arms:
        for side in (-1, 1):
            x = cx + side * 1.7 * rx
            draw.line((x, cy + 1.3 * ry, x + side * 20, cy - 1.2 * ry), fill=f.skin, width=42)
    draw.ellipse((cx - 1.05 * rx, cy - 1.08 * ry, cx + 1.05 * rx, cy + 0.3 * ry), fill=f.hair)
    draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=f.skin)
    draw.chord((cx - 1.02 * rx, cy - 1.05 * ry, cx + 1.02 * rx, cy - 0.2 * ry), 190, 350, f.hair)


def _draw_features(draw: ImageDraw.ImageDraw, f: Face) -> None:
    """Eyes, brows, nose and mouth, moved towards the side the head turns to."""
    cx, cy, rx, ry = f.cx, f.cy, f.rx, f.ry
    turn = f.pose.light * 0.45 * rx  # features move towards the side the head turns to
    tilt = f.pose.dy * 0.5
    eye_y = cy - 0.18 * ry + tilt
    for side in (-1, 1):
        ex = cx + side * 0.38 * rx + turn
        draw.ellipse((ex - 14, eye_y - 8, ex + 14, eye_y + 8), fill=(245, 245, 240))
        draw.ellipse((ex - 6, eye_y - 6, ex + 6, eye_y + 6), fill=(50, 40, 35))
        draw.line((ex - 18, eye_y - 20, ex + 18, eye_y - 22), fill=f.hair, width=5)
    nose_x, nose_y = cx + 1.3 * turn, cy + 0.12 * ry + tilt
    draw.polygon(
        [(nose_x, nose_y - 30), (nose_x - 12, nose_y + 10), (nose_x + 12, nose_y + 10)],
        fill=tuple(int(c * 0.85) for c in f.skin),
    )
    mouth_y = cy + 0.48 * ry + tilt
    draw.arc(
        (cx + turn - 38, mouth_y - 16, cx + turn + 38, mouth_y + 16), 20, 160, (140, 60, 60), 5
    )
    if f.drift > 0.1:
        # A mark that appears only in the session that drifts more.
        mx, my = cx - 0.5 * rx + turn, cy + 0.3 * ry
        draw.ellipse((mx - 22, my - 16, mx + 22, my + 16), fill=(150, 95, 80))


def _light_and_noise(image: Image.Image, f: Face, rng: np.random.Generator) -> bytes:
    """Lens blur, the pose's shading and camera noise, encoded as a JPEG."""
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    pixels = np.asarray(image.filter(ImageFilter.GaussianBlur(1.2)), dtype=np.float32)
    # Side light for turned heads, top light for up/down: the angle changes the shading.
    shade = 1.0 + f.pose.light * 0.35 * np.clip((xs - f.cx) / (2 * f.rx), -1, 1)
    shade += 0.15 * np.clip((f.cy - ys) / (2 * f.ry), -1, 1) * np.sign(f.pose.dy)
    pixels = pixels * (shade * f.take.light)[..., None] + rng.normal(0.0, 6.0, pixels.shape)
    out = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    buffer = io.BytesIO()
    out.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def draw_photo(angle: str, session: int, rng: np.random.Generator) -> bytes:
    """One 640x480 JPEG of a made-up face at ``angle``, drifted for ``session``, framed
    and lit as one take.

    Simple shapes, angle-specific shading and camera noise: enough for the pipeline to
    see differences between sessions, without any real person's photo.
    """
    face = Face.at(POSES[angle], DRIFT[min(session, len(DRIFT) - 1)], Take.draw(rng))
    image = _background()
    draw = ImageDraw.Draw(image)
    _draw_head(draw, face)
    _draw_features(draw, face)
    return _light_and_noise(image, face, rng)


def generated_sessions(seed: int = 7) -> list[list[Photo]]:
    """Four sessions x six angles of a made-up person, as JPEG bytes in memory only."""
    rng = np.random.default_rng(seed)
    return [
        [
            Photo(angle, draw_photo(angle, session, rng), ".jpg", f"generated {angle}")
            for angle in ANGLES
        ]
        for session in range(GENERATED_SESSIONS)
    ]


def folder_sessions(folder: Path) -> list[list[Photo]]:
    """The folder's photos in name order, split into as few sessions of 3-6 as fit.

    Sessions are balanced (9 photos: 5 + 4, not 6 + 3) so none falls under the
    minimum; angles are given in order within each session.
    """
    if not folder.is_dir():
        raise DemoError(f"{folder} is not a folder")
    files = sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES),
        key=lambda p: p.name,
    )
    if len(files) < MIN_IMAGES:
        raise DemoError(
            f"{folder} has {len(files)} photo(s) ({', '.join(sorted(PHOTO_SUFFIXES))}); "
            f"a session needs at least {MIN_IMAGES}"
        )
    count = math.ceil(len(files) / len(ANGLES))
    sizes = [len(files) // count + (1 if i < len(files) % count else 0) for i in range(count)]
    sessions: list[list[Photo]] = []
    start = 0
    for size in sizes:
        chunk = files[start : start + size]
        start += size
        sessions.append(
            [
                Photo(angle, path.read_bytes(), path.suffix.lower(), path.name)
                for angle, path in zip(ANGLES, chunk, strict=False)
            ]
        )
    return sessions
