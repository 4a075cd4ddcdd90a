"""Per-photo image quality: is this photo sharp, well exposed and large enough to compare?

Why: changewatch measures how far a session moves from the person's own history. A blurred,
very dark, blown-out or tiny photo moves the embedding for reasons that have nothing to do
with the person, so the worker reports each photo's quality next to the change and the caller
can ask for a retake. Quality is reported in neutral words: a score and flags such as
``blurry``, describing the photo only.

What is measured (``measure``), all on one grey image resampled so its short side is
``NORM_SIDE`` (448) px, so the values depend neither on the JPEG decode scale (1, 1/2, 1/4 or
1/8) nor on the camera's resolution. The grey image is the luma (Y) of cv2's RGB->YCrCb, the
conversion worker.decode's equalization makes anyway (``measure_grey`` takes it from there, so
each photo is converted once); it is within 1 level of Pillow's "L".

- sharpness: variance of the 3x3 Laplacian (``cv2.Laplacian``, int16) of that grey image.
  It needs an antialiasing resampler: with cv2's INTER_AREA a draft decode measured as little
  as 0.48x a full-size decode of the same JPEG (the box filter aliases a full-size photo's
  fine detail into the 448 px image); with Pillow's Lanczos the ratio is 0.83 to 0.98 on the
  real photos (docs/quality.md). Laplacian variance grows with contrast squared, so a very
  dark photo also measures less sharp.
- brightness: mean grey level, 0..1.
- clipped_shadows / clipped_highlights: fraction of grey pixels <= 5 / >= 250 (of 255).
- width / height: the original photo's upright pixel size, passed in by the caller.

How it is judged (``judge``): each criterion gets a score in [0, 1] that is exactly 0.5 at its
threshold, rises to 1 well inside it and falls to 0 well past it, clamped to [0, 1]:

- blurry: ``0.5 + 0.5 * log(sharpness / min_sharpness) / log(sharpness_ramp)``;
- dark: the lower of ``0.5 + (brightness - min_brightness) / (2 * brightness_ramp)`` and
  ``0.5 + (max_clipped_shadows - clipped_shadows) / (2 * clipped_ramp)``;
- overexposed: the lower of ``0.5 + (max_brightness - brightness) / (2 * brightness_ramp)``
  and ``0.5 + (max_clipped_highlights - clipped_highlights) / (2 * clipped_ramp)``;
- low_resolution: ``0.5 + 0.5 * log(short_side / min_short_side) / log(resolution_ramp)``.

A flag is raised exactly when its metric is past its threshold (its score is then below 0.5).
The photo's score is the lowest criterion score: one poor criterion is enough to lower it.
The defaults are calibrated on the real photos: docs/quality.md,
``python -m bench.quality_calibration``.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np
from PIL import ExifTags, Image

# Short side of the grey image every metric is measured on. Equal to worker.decode.DRAFT_SIDE
# (twice the model's input): a draft decode is never smaller, so it is only ever reduced.
NORM_SIDE = 448
# Antialiasing resampler (see the module docstring). reducing_gap=2: Pillow first box-reduces
# by an integer factor, much as libjpeg's draft decode does, then resamples by at least 2x:
# 2.7x faster on 12 MP HEIC photos, and a full-size decode's sharpness moves closer to the
# draft decode's (lowest draft / full ratio 0.83 instead of 0.77).
RESAMPLE = Image.Resampling.LANCZOS
REDUCING_GAP = 2.0
# Panoramas are measured on their centre: at most this long side / short side ratio, which
# also bounds the work when a thin image is scaled up to NORM_SIDE.
MAX_ASPECT = 4
# Grey levels (of 255) counted as clipped: JPEG noise keeps pure black and white a few
# levels off 0 and 255.
SHADOW_LEVEL = 5
HIGHLIGHT_LEVEL = 250

FLAGS = ("blurry", "dark", "low_resolution", "overexposed")


@dataclass(frozen=True)
class QualityMetrics:
    """Raw per-photo measurements; see the module docstring for their definitions."""

    sharpness: float
    brightness: float
    clipped_shadows: float
    clipped_highlights: float
    width: int
    height: int

    def as_dict(self) -> dict[str, float | int]:
        """Plain dict, e.g. to store the raw metrics next to the score and flags."""
        return asdict(self)


@dataclass(frozen=True)
class QualityThresholds:
    """Where each flag starts and how wide each score ramp is; values from docs/quality.md."""

    # Least sharp real original 95 (a leaf close-up); sharpest copy blurred by long side / 300:
    # 22. Set nearer the blurred side: sharp close-ups of smooth surfaces measure lowest.
    # Score 1 at >= 120, 0 at <= 13.
    min_sharpness: float = 40.0
    sharpness_ramp: float = 3.0
    # Every x0.25 copy is below 0.18 (the brightest at 0.175); real originals are >= 0.35 and
    # a correctly exposed low-key photo (exif-quirks/87_OSError.jpg) is 0.21.
    min_brightness: float = 0.18
    # Real originals are <= 0.71 (a poster on white); x2.5 copies: median 0.82.
    max_brightness: float = 0.80
    brightness_ramp: float = 0.05
    # A fifth of the frame pure black or pure white. Real originals: <= 0.07 and <= 0.16.
    max_clipped_shadows: float = 0.20
    max_clipped_highlights: float = 0.20
    clipped_ramp: float = 0.05
    # worker.decode.DRAFT_SIDE: below it the model's 224 px input gets under 2 source pixels
    # per pixel and sharpness is measured on an upscaled image. A 640x480 photo passes.
    min_short_side: int = NORM_SIDE
    # 1 at >= 493 px, 0 at <= 407 px; a 640x480 photo scores 0.86.
    resolution_ramp: float = 1.1

    def __post_init__(self) -> None:
        if min(self.min_sharpness, self.min_short_side) <= 0:
            raise ValueError("min_sharpness and min_short_side must be positive")
        if min(self.sharpness_ramp, self.resolution_ramp) <= 1:
            raise ValueError("sharpness_ramp and resolution_ramp are factors: they must be > 1")
        if min(self.brightness_ramp, self.clipped_ramp) <= 0:
            raise ValueError("brightness_ramp and clipped_ramp must be positive")
        if not 0 <= self.min_brightness < self.max_brightness <= 1:
            raise ValueError("brightness limits need 0 <= min_brightness < max_brightness <= 1")


DEFAULT_THRESHOLDS = QualityThresholds()


def _centre(grey: np.ndarray) -> np.ndarray:
    """Centre crop of ``grey`` with an aspect ratio of at most MAX_ASPECT."""
    height, width = grey.shape
    short, long_side = min(width, height), max(width, height)
    keep = MAX_ASPECT * short
    if long_side <= keep:
        return grey
    offset = (long_side - keep) // 2
    if width > height:
        return grey[:, offset : offset + keep]
    return grey[offset : offset + keep, :]


def luma(image: Image.Image) -> np.ndarray:
    """The grey image every metric starts from: Y of cv2's RGB->YCrCb, as uint8."""
    rgb = np.asarray(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.uint8)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)[:, :, 0]


def normalized_grey(image: Image.Image | np.ndarray, side: int = NORM_SIDE) -> np.ndarray:
    """Grey uint8 array of ``image`` (a photo, or its luma) resampled so its short side is
    ``side``."""
    grey = _centre(luma(image) if isinstance(image, Image.Image) else image)
    height, width = grey.shape
    short = min(width, height)
    if short == side:
        return np.ascontiguousarray(grey)
    scale = side / short
    size = (
        (side, max(1, round(height * scale)))
        if width <= height
        else (max(1, round(width * scale)), side)
    )
    resized = Image.fromarray(np.ascontiguousarray(grey)).resize(
        size, RESAMPLE, reducing_gap=REDUCING_GAP
    )
    return np.asarray(resized, dtype=np.uint8)


def measure(image: Image.Image, original_size: tuple[int, int]) -> QualityMetrics:
    """Measure an upright photo (any scale of the original); about 1-6 ms on a draft decode."""
    return measure_grey(luma(image), original_size)


def measure_grey(grey: np.ndarray, original_size: tuple[int, int]) -> QualityMetrics:
    """``measure`` on the photo's luma (``luma``), for a caller that has it already.

    The Laplacian is taken in int16 (a 3x3 Laplacian of uint8 stays within +-1020) and its
    variance read by cv2.meanStdDev: the same value as a float64 Laplacian's ``var()`` to
    1e-12, 4-9x faster; cv2.calcHist counts the levels 3-4x faster than np.bincount.
    """
    normal = normalized_grey(grey)
    _, std = cv2.meanStdDev(cv2.Laplacian(normal, cv2.CV_16S))
    counts = cv2.calcHist([normal], [0], None, [256], [0, 256]).ravel().astype(np.float64)
    total = float(normal.size)
    width, height = original_size
    return QualityMetrics(
        sharpness=float(std[0, 0]) ** 2,
        brightness=float(counts @ np.arange(256)) / (255.0 * total),
        clipped_shadows=float(counts[: SHADOW_LEVEL + 1].sum()) / total,
        clipped_highlights=float(counts[HIGHLIGHT_LEVEL:].sum()) / total,
        width=int(width),
        height=int(height),
    )


def _clamp(x: float) -> float:
    return min(1.0, max(0.0, x))


def _log_ramp(value: float, threshold: float, ramp: float) -> float:
    """0.5 at ``threshold``, 1 at ``threshold * ramp`` and above, 0 at ``threshold / ramp``."""
    if value <= 0:
        return 0.0
    return _clamp(0.5 + 0.5 * math.log(value / threshold) / math.log(ramp))


def _linear_ramp(margin: float, ramp: float) -> float:
    """0.5 on the threshold (margin 0), 1 at ``ramp`` inside it, 0 at ``ramp`` past it."""
    return _clamp(0.5 + margin / (2.0 * ramp))


def criterion_scores(
    metrics: QualityMetrics, thresholds: QualityThresholds = DEFAULT_THRESHOLDS
) -> dict[str, float]:
    """Score in [0, 1] per flag name; below 0.5 exactly when that flag is raised."""
    t = thresholds
    return {
        "blurry": _log_ramp(metrics.sharpness, t.min_sharpness, t.sharpness_ramp),
        "dark": min(
            _linear_ramp(metrics.brightness - t.min_brightness, t.brightness_ramp),
            _linear_ramp(t.max_clipped_shadows - metrics.clipped_shadows, t.clipped_ramp),
        ),
        "low_resolution": _log_ramp(
            min(metrics.width, metrics.height), t.min_short_side, t.resolution_ramp
        ),
        "overexposed": min(
            _linear_ramp(t.max_brightness - metrics.brightness, t.brightness_ramp),
            _linear_ramp(t.max_clipped_highlights - metrics.clipped_highlights, t.clipped_ramp),
        ),
    }


def raised_flags(
    metrics: QualityMetrics, thresholds: QualityThresholds = DEFAULT_THRESHOLDS
) -> list[str]:
    """Sorted names of the thresholds this photo is past."""
    t = thresholds
    raised = {
        "blurry": metrics.sharpness < t.min_sharpness,
        "dark": metrics.brightness < t.min_brightness
        or metrics.clipped_shadows > t.max_clipped_shadows,
        "low_resolution": min(metrics.width, metrics.height) < t.min_short_side,
        "overexposed": metrics.brightness > t.max_brightness
        or metrics.clipped_highlights > t.max_clipped_highlights,
    }
    return sorted(name for name, on in raised.items() if on)


def judge(
    metrics: QualityMetrics, thresholds: QualityThresholds = DEFAULT_THRESHOLDS
) -> dict[str, float | list[str]]:
    """The contract: ``{"score": float in [0, 1], "flags": sorted list of flag names}``."""
    return {
        "score": min(criterion_scores(metrics, thresholds).values()),
        "flags": raised_flags(metrics, thresholds),
    }


def original_size(data: bytes) -> tuple[int, int]:
    """Upright (width, height) of an encoded photo, from its header: no pixel is decoded."""
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)
