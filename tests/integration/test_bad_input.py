"""Every kind of bad input fails its own job with a specific code; the worker goes on.

Each case is one session of two good real photos plus the bad one, all sent at once to
the real worker.
"""

from __future__ import annotations

import io
import struct
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from changewatch.producer import JobFailed, Producer
from tests.helpers import BUCKET, MAX_IMAGE_BYTES, T0, Uploader, series_sessions

pytestmark = pytest.mark.usefixtures("worker")


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def _bomb() -> bytes:
    """A tiny PNG whose header declares 100000 x 100000 pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0"))


def _scrambled(data: bytes) -> bytes:
    damaged = bytearray(data)
    for i in range(len(damaged) // 3, len(damaged) // 3 + 2000):
        damaged[i] = (damaged[i] * 7 + 13) & 0xFF
    return bytes(damaged)


def _photo(photos: Path) -> Image.Image:
    return Image.open(photos / "series" / "DSCN0021.jpg").convert("RGB")


# name -> (make bytes from the photos folder, expected error code or None for success)
CASES: dict[str, tuple[Callable[[Path], bytes], str | None]] = {
    "zero_bytes": (lambda p: b"", "image_empty"),
    "html_as_jpg": (
        lambda p: b"<!doctype html><html><body>404</body></html>",
        "unsupported_format",
    ),
    "text_as_jpg": (lambda p: b"just some notes\n" * 50, "unsupported_format"),
    "truncated_jpeg": (
        lambda p: (p / "series" / "DSCN0010.jpg").read_bytes()[:40_000],
        "image_corrupt",
    ),
    "corrupt_jpeg_data": (
        lambda p: _scrambled((p / "series" / "DSCN0010.jpg").read_bytes()),
        "image_corrupt",
    ),
    "gif": (lambda p: _encoded(_photo(p), "GIF"), "unsupported_format"),
    "decompression_bomb": (lambda p: _bomb(), "image_too_large"),
    "over_size_limit": (lambda p: b"\xff\xd8\xff" + b"\0" * MAX_IMAGE_BYTES, "image_too_large"),
    "too_small": (lambda p: _png(_photo(p).resize((20, 15))), "image_too_small"),
    "png": (lambda p: _png(_photo(p)), None),
    "webp": (lambda p: _encoded(_photo(p), "WEBP"), None),
    "tiff_with_alpha": (lambda p: (p / "exif-quirks" / "BSG1.tiff").read_bytes(), None),
    "png_16_bit_gray": (
        lambda p: _png(Image.fromarray(np.asarray(_photo(p).convert("L"), np.uint16) * 257)),
        None,
    ),
    "grayscale_jpeg": (lambda p: _encoded(_photo(p).convert("L"), "JPEG"), None),
    "palette_png": (lambda p: _png(_photo(p).convert("P")), None),
    "cmyk_jpeg": (lambda p: _encoded(_photo(p).convert("CMYK"), "JPEG"), None),
    "rgba_png": (lambda p: _png(_photo(p).convert("RGBA")), None),
    "heic_iphone": (lambda p: (p / "heic" / "iphone_13_pro_max.HEIC").read_bytes(), None),
    "truncated_heic": (
        lambda p: (p / "heic" / "iphone_13_pro_max.HEIC").read_bytes()[:300_000],
        "image_corrupt",
    ),
    "truncated_tiff": (
        lambda p: (p / "exif-quirks" / "BSG1.tiff").read_bytes()[:20_000],
        "image_corrupt",
    ),
}


def test_each_bad_input_gets_its_code_and_good_ones_pass(
    photos: Path, uploader: Uploader, producer: Producer
) -> None:
    """The issue's list of bad inputs, through S3 and the real worker, in one go."""
    good = series_sessions(photos)[0]
    jobs: dict[str, uuid.UUID] = {}
    for name, (make, _) in CASES.items():
        user, session = uuid.uuid4(), uuid.uuid4()
        images = uploader.session(user, {"front": good["front"], "left": good["left"]})
        images["right"] = uploader.put(user, f"{name}.jpg", make(photos))
        producer.analyze(user, session, T0, images)
        jobs[name] = session
    outcomes = {}
    for name, session in jobs.items():
        try:
            producer.wait(session, timeout=300)
            outcomes[name] = None
        except JobFailed as failed:
            outcomes[name] = failed.status["error"]["code"]
            assert "'right'" in failed.status["error"]["message"]
    assert outcomes == {name: code for name, (_, code) in CASES.items()}


@pytest.mark.parametrize(
    ("where", "code"),
    [
        (lambda user: f"s3://{BUCKET}/{uuid.uuid4()}/front.jpg", "key_outside_user_prefix"),
        (lambda user: f"s3://someone-elses-bucket/{user}/front.jpg", "bucket_not_allowed"),
        (lambda user: f"s3://{BUCKET}/{user}/never-uploaded.jpg", "image_missing"),
    ],
)
def test_a_job_reads_only_its_own_users_objects(
    where: Callable[[uuid.UUID], str],
    code: str,
    photos: Path,
    uploader: Uploader,
    producer: Producer,
) -> None:
    """One user's job can never read another user's photos or an unlisted bucket."""
    user, session = uuid.uuid4(), uuid.uuid4()
    images = uploader.session(user, series_sessions(photos)[0])
    images["front"] = where(user)
    producer.analyze(user, session, T0, images)
    with pytest.raises(JobFailed) as failed:
        producer.wait(session, timeout=120)
    assert failed.value.status["error"]["code"] == code
