"""Image bytes -> upright, equalized, centre-cropped 224x224 RGB uint8.

Normalization to ImageNet statistics happens later, on the model's device, so only
uint8 travels between stages (4x less to copy, and the GPU does the arithmetic).
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError
from pillow_heif import register_heif_opener

from ..schema.errors import Code, JobError
from . import equipment, quality

register_heif_opener()

# Bump when any step below changes what reaches the model: it is part of the model id.
PREPROCESS_VERSION = "prep1"
INPUT_SIZE = 224
# JPEGs are decoded at the smallest DCT scale (1/2, 1/4, 1/8) whose short side is still at
# least this: ~4.5x less decode and equalization work on camera photos. Twice the model's
# input keeps pixels within ~4 levels of a full-size decode (tests/unit/test_decode.py); at 1x
# the drift grew to 12 levels on the real photos.
DRAFT_SIDE = 2 * INPUT_SIZE
# ResNet50 downsamples by 32: anything smaller carries no usable detail.
MIN_SIDE = 32
# Formats a phone or camera upload may be in; anything else is rejected, not guessed at.
SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "TIFF", "HEIF", "BMP"})
# Pillow's own bomb guard: images declaring more pixels than this are refused before decoding.
MAX_PIXELS = 80_000_000


# OpenCV's flags for the DCT scales Pillow's JPEG draft decodes at.
_REDUCED = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}
# EXIF orientation -> the turn ImageOps.exif_transpose makes, on a (rows, columns, 3) array.
# OpenCV's turns give the same pixels as numpy's views copied out, ~10x faster (numpy's
# strided copy of a turned 3 MP photo took 11-17 ms), and release the GIL while they copy.
_ORIENTATION: dict[object, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: cv2.flip(a, 1),
    3: lambda a: cv2.rotate(a, cv2.ROTATE_180),
    4: lambda a: cv2.flip(a, 0),
    5: cv2.transpose,
    6: lambda a: cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE),
    7: lambda a: cv2.flip(cv2.transpose(a), -1),
    8: lambda a: cv2.rotate(a, cv2.ROTATE_90_COUNTERCLOCKWISE),
}
_TURNED = frozenset({5, 6, 7, 8})
# In a JPEG's coded data 0xFF is followed only by 0x00 (a stuffed byte), a restart marker
# (0xD0-0xD7) or another 0xFF (fill); anything else is a marker where none belongs.
_STRAY_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")

# Leading bytes of the supported formats: a file that starts like one of them but cannot
# be opened is a damaged upload (image_corrupt), not a format we refuse.
_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\xff\xd8\xff", "JPEG"),
    (0, b"\x89PNG\r\n\x1a\n", "PNG"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (0, b"BM", "BMP"),
    (8, b"WEBP", "WEBP"),
    (4, b"ftyp", "HEIF"),
)


def _looks_like(data: bytes) -> str | None:
    for offset, magic, fmt in _SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            return fmt
    return None


def _heif_missing_bytes(data: bytes) -> int:
    """How many bytes the file's top-level ISO BMFF boxes declare beyond its end.

    libheif decodes a truncated HEIC without an error, filling the missing tiles with
    green; the box sizes are the only sign that half the photo never arrived.
    """
    pos, end = 0, len(data)
    while pos + 8 <= end:
        size = int.from_bytes(data[pos : pos + 4], "big")
        if size == 1 and pos + 16 <= end:  # a 64-bit size follows the type
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
        if size == 0:  # the last box runs to the end of the file
            return 0
        if size < 8:
            return 0  # not a box header: leave the judgement to libheif
        pos += size
    return max(0, pos - end)


@contextmanager
def _read_errors(data: bytes) -> Iterator[None]:
    """Pillow's, libheif's and libjpeg's exceptions as the job errors the pipeline promises."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except JobError:
        raise
    except UnidentifiedImageError:
        if fmt := _looks_like(data):
            raise JobError(
                Code.IMAGE_CORRUPT, f"the file starts as a {fmt} but cannot be read: truncated?"
            ) from None
        raise JobError(
            Code.UNSUPPORTED_FORMAT, "the file is not an image in a supported format"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise JobError(
            Code.IMAGE_TOO_LARGE, f"image rejected as a decompression bomb: {exc}"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise JobError(
            Code.IMAGE_CORRUPT, f"the image data is corrupt or truncated: {exc}"
        ) from None


def _header(data: bytes) -> tuple[Image.Image, equipment.Equipment | None]:
    """The opened, not yet decoded image (format, size and bomb checked) and the camera its
    EXIF names (read before ``draft`` discards the original size)."""
    if not data:
        raise JobError(Code.IMAGE_EMPTY, "the image file is empty (0 bytes)")
    image = Image.open(io.BytesIO(data), formats=None)
    fmt = image.format or "unknown"
    if fmt not in SUPPORTED_FORMATS:
        raise JobError(Code.UNSUPPORTED_FORMAT, f"unsupported image format {fmt}")
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise JobError(
            Code.IMAGE_TOO_LARGE,
            f"image declares {width}x{height} pixels, over the limit of {MAX_PIXELS}",
        )
    if fmt == "HEIF" and (missing := _heif_missing_bytes(data)):
        raise JobError(
            Code.IMAGE_CORRUPT,
            f"the HEIF file is truncated: {missing} bytes of it are missing",
        )
    return image, equipment.read(image)


def _open(
    data: bytes, draft_side: int | None
) -> tuple[Image.Image, tuple[int, int], equipment.Equipment | None]:
    """The upright 8-bit RGB image, its upright size before any draft scaling, and the
    camera its EXIF names."""
    with _read_errors(data):
        image, camera = _header(data)
        upright, size = _pillow_upright(image, image.size, draft_side)
    return upright, size, camera


def _pillow_upright(
    image: Image.Image, stored: tuple[int, int], draft_side: int | None
) -> tuple[Image.Image, tuple[int, int]]:
    """Pillow's decode of an opened image: upright 8-bit RGB, and ``stored`` (its size
    before any draft) turned as the photo was. Call inside ``_read_errors``."""
    if draft_side and image.format == "JPEG":
        image.draft("RGB", (draft_side, draft_side))  # a no-op once drafted already
    image.load()
    loaded = image.size
    # In place: when the photo is upright already (most are) no copy is made, which
    # saves 10-20 ms on a 12 MP HEIC.
    ImageOps.exif_transpose(image, in_place=True)
    turned = image.size != loaded
    return to_rgb(image), (stored[1], stored[0]) if turned else stored


def _jpeg_reduced(data: bytes, image: Image.Image, draft_side: int) -> np.ndarray | None:
    """The photo as stored, BGR, decoded by OpenCV at the DCT scale Pillow's draft picks,
    or None where only Pillow's decode is sure to give today's pixels and errors.

    The same libjpeg-turbo decode gives the same pixels (tests/unit/test_decode.py), for
    less CPU: no RGBX unpacking into Pillow's image and packing back out. Only a baseline
    YCbCr JPEG that ends in its EOI marker and holds no stray marker takes this path:
    libjpeg fills a truncated or damaged file with grey and only warns, where Pillow
    refuses it (image_corrupt).
    """
    if image.format != "JPEG" or image.mode != "RGB" or not data.endswith(b"\xff\xd9"):
        return None
    if image.info.get("progressive") or not _one_clean_scan(data):
        return None
    image.draft("RGB", (draft_side, draft_side))
    flag = _REDUCED.get(image.decoderconfig[0] if image.decoderconfig else 1)
    if flag is None:
        return None
    try:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), flag | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error:
        return None  # Pillow's decode names the error
    if bgr is None or bgr.ndim != 3 or (bgr.shape[1], bgr.shape[0]) != image.size:
        return None  # libjpeg failed: Pillow's decode names the error
    return bgr


def _one_clean_scan(data: bytes) -> bool:
    """Whether a baseline JPEG's coded data, from its scan header to its EOI, holds no
    marker but restarts and fill bytes.

    Damaged data often reads as a stray marker. libjpeg only warns at it and OpenCV returns
    the image, but Pillow then fails on the marker (image_corrupt): such a file goes
    through Pillow, so the job gets the same error it always did.
    """
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # a fill byte before a marker
            pos += 1
            continue
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:  # start of scan: the coded data follows its header
            return _STRAY_MARKER.search(data, pos, len(data) - 2) is None
    return False


def decode_upright(data: bytes, draft_side: int | None = DRAFT_SIDE) -> Image.Image:
    """Decode, turn upright by EXIF orientation and convert to 8-bit RGB.

    ``draft_side`` lets libjpeg decode at 1/2, 1/4 or 1/8 scale when the photo is far
    larger than the model needs; None decodes at full size (the reference path).
    """
    return _open(data, draft_side)[0]


@dataclass(frozen=True)
class Photo:
    """One decoded photo: the model's input and what the photo says about itself."""

    pixels: np.ndarray  # (224, 224, 3) uint8 RGB
    quality: dict[str, Any]  # {"score", "flags", "metrics"}
    equipment: equipment.Equipment | None

    def facts(self) -> dict[str, Any]:
        """What is stored with the session for this angle (``sessions.good_photos``)."""
        return {
            "quality": self.quality,
            "equipment": self.equipment.to_json() if self.equipment else None,
        }


def decode_photo(
    data: bytes,
    draft_side: int | None = DRAFT_SIDE,
    thresholds: quality.QualityThresholds = quality.DEFAULT_THRESHOLDS,
) -> Photo:
    """Bytes -> the model's input, the photo's quality (measured on the upright decode,
    before equalization changes its brightness) and its camera.

    One RGB->YCrCb conversion serves both: its luma is what quality measures, and the
    equalization starts from it.
    """
    ycrcb, size, camera = _open_ycrcb(data, draft_side)
    metrics = quality.measure_grey(ycrcb[:, :, 0], size)
    judged = {**quality.judge(metrics, thresholds), "metrics": metrics.as_dict()}
    return Photo(_equalize_crop_resize(ycrcb), judged, camera)


def decode_session(
    images: dict[str, bytes],
    uris: Mapping[str, object],
    draft_side: int | None,
    thresholds: quality.QualityThresholds,
) -> list[Photo]:
    """Every angle of one session, in order; a bad image's error names its angle and URI."""
    photos = []
    for angle, data in images.items():
        try:
            photos.append(decode_photo(data, draft_side, thresholds))
        except JobError as err:
            raise JobError(err.code, f"image {angle!r} ({uris[angle]}): {err}") from None
    return photos


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB; transparency composited on white, 16-bit scaled rather than clipped."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float32)
        peak = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        image = Image.fromarray(np.clip(array / peak * 255.0, 0, 255).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "RGBa", "La"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        background.alpha_composite(image.convert("RGBA"))
        image = background
    return image.convert("RGB") if image.mode != "RGB" else image


def equalize_crop_resize(image: Image.Image, size: int = INPUT_SIZE) -> np.ndarray:
    """Y-channel histogram equalization, centre square crop, INTER_AREA resize."""
    return _equalize_crop_resize(_ycrcb(image), size)


def _ycrcb(image: Image.Image) -> np.ndarray:
    """The upright RGB image in cv2's YCrCb, refused when too small for the model."""
    _check_side(*image.size)
    return cv2.cvtColor(np.asarray(image, dtype=np.uint8), cv2.COLOR_RGB2YCrCb)


def _check_side(width: int, height: int) -> None:
    if min(width, height) < MIN_SIDE:
        raise JobError(
            Code.IMAGE_TOO_SMALL,
            f"image is {width}x{height}; the model needs at least {MIN_SIDE} px on each side",
        )


def _open_ycrcb(
    data: bytes, draft_side: int | None
) -> tuple[np.ndarray, tuple[int, int], equipment.Equipment | None]:
    """The upright photo in cv2's YCrCb, its upright size before any draft scaling, and
    its camera: through OpenCV's JPEG decode where it gives Pillow's pixels, else Pillow.
    The header is read once for either."""
    with _read_errors(data):
        image, camera = _header(data)
        stored = image.size
        bgr = _jpeg_reduced(data, image, draft_side) if draft_side else None
        if bgr is None:
            upright, size = _pillow_upright(image, stored, draft_side)
            return _ycrcb(upright), size, camera
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    if turn := _ORIENTATION.get(orientation):
        bgr = turn(bgr)
    _check_side(bgr.shape[1], bgr.shape[0])
    width, height = (stored[1], stored[0]) if orientation in _TURNED else stored
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2YCrCb), (width, height), camera


def _equalize_crop_resize(ycrcb: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """``equalize_crop_resize`` from the YCrCb image: the histogram is the whole photo's,
    but only the centre square is converted back to RGB (the rest is cropped away anyway).
    The pixels are the same as equalizing the whole photo first (tests/unit/test_decode.py).
    """
    height, width = ycrcb.shape[:2]
    side = min(width, height)
    top, left = (height - side) // 2, (width - side) // 2
    luma = cv2.equalizeHist(cv2.extractChannel(ycrcb, 0))
    square = ycrcb[top : top + side, left : left + side].copy()
    cv2.insertChannel(luma[top : top + side, left : left + side], square, 0)
    rgb = cv2.cvtColor(square, cv2.COLOR_YCrCb2RGB)
    interpolation = cv2.INTER_AREA if side >= size else cv2.INTER_CUBIC
    return cv2.resize(rgb, (size, size), interpolation=interpolation)


def preprocess(data: bytes, draft_side: int | None = DRAFT_SIDE) -> np.ndarray:
    """Bytes -> (224, 224, 3) uint8 RGB ready for the model's normalization."""
    return equalize_crop_resize(decode_upright(data, draft_side))
