"""Unit tests for worker.decode: upload bytes in, a (224, 224, 3) uint8 RGB array or a JobError out.

Pure functions, no services. Real photos come from the ``photos`` fixture (skips on a developer
machine without ../shared/photos, fails in CI); generated inputs need nothing.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageFile, ImageOps

from bench.decode_parts import before_equalize_crop_resize
from changewatch.schema.contract import JobError
from changewatch.worker import decode
from changewatch.worker.decode import (
    DRAFT_SIDE,
    INPUT_SIZE,
    MAX_PIXELS,
    MIN_SIDE,
    PREPROCESS_VERSION,
    decode_photo,
    decode_upright,
    equalize_crop_resize,
    preprocess,
)
from changewatch.worker.embed import Embedder
from changewatch.worker.score import cosine_distance

# Both decode paths: the production one (reduced-scale JPEG decode) and the full-size reference.
DRAFT_PATHS = pytest.mark.parametrize("draft_side", [DRAFT_SIDE, None], ids=["draft", "full"])

# Orientation files differ only in the digit N painted on the picture, so a correctly
# uprighted N sits ~1.4 levels (mean absolute difference, out of 255) from N=1, on both paths.
ORIENTATION_MAD_MAX = 4.0
# A wrong rotation or flip of the same picture sits 59 levels or more from N=1.
WRONG_ORIENTATION_MAD_MIN = 40.0

# Fast path vs reference, mean absolute pixel difference. Measured with DRAFT_SIDE=448: at most
# 4.25 levels (HMD Nokia 4608x1976: equalizing the full-size histogram amplifies sensor noise in
# its sky and water), under 0.9 for every other photo. With DRAFT_SIDE=224: up to 12.2 (the
# 640x480 series photos are then decoded at 320x240, barely above the model's 224).
FAST_PATH_PIXEL_MAD_MAX = 8.0
# Fast path vs reference embedding, cosine distance: measured at most 1.8e-5 (448) / 6.3e-5 (224).
FAST_PATH_COSINE_MAX = 0.01
# With seeded random weights every photo is within ~0.003 of every other (and of a flat grey
# square), so FAST_PATH_COSINE_MAX alone could never fail. The fast path must also move the
# embedding less than this fraction of what an 8-pixel shift of the same input does. Measured
# at most 0.19 with DRAFT_SIDE=448 and 0.60 with 224 (both for the Nokia photo).
FAST_PATH_SHIFT_RATIO_MAX = 0.5
SHIFT_PX = 8

# Each real photo in camera/ and exif-quirks/: None = preprocesses, else its JobError code.
REAL_PHOTO_OUTCOMES: dict[str, str | None] = {
    "camera/HMD_Nokia_8.3_5G.jpg": None,
    "camera/Reconyx_HC500_Hyperfire.jpg": None,
    "camera/canon_hdr_NO.jpg": None,
    "camera/canon_hdr_YES.jpg": None,
    "camera/iphone_hdr_NO.jpg": None,
    "camera/iphone_hdr_YES.jpg": None,
    "camera/jolla.jpg": None,
    "camera/no_exif.jpg": None,
    "exif-quirks/33-type_error.jpg": None,
    "exif-quirks/35-empty.jpg": None,
    "exif-quirks/36-memory_error.jpg": None,
    "exif-quirks/42_IndexError.jpg": None,
    "exif-quirks/67-0_length_string.jpg": None,
    "exif-quirks/87_OSError.jpg": None,
    "exif-quirks/BSG1.tiff": None,  # RGBA, every pixel fully opaque
    "exif-quirks/corrupted.jpg": None,  # the name notwithstanding, its pixel data decodes
    "exif-quirks/image00971.jpg": None,
    "exif-quirks/image01088.jpg": None,  # 425x120: short side above MIN_SIDE
    "exif-quirks/image01137.jpg": None,  # 88x64
    "exif-quirks/image01551.jpg": None,  # 61x58, no EXIF orientation
}

# Upright size of each HEIC/HEIF; None where the upright size is not asserted.
HEIC_UPRIGHT_SIZES: dict[str, tuple[int, int] | None] = {
    # Coded 4032x3024 with irot 270 (EXIF orientation 6): a portrait of a kitchen, upright.
    "heic/iphone_13_pro_max.HEIC": (3024, 4032),
    # iPhone 11 Pro Max, coded portrait with irot 0.
    "heic/IMG_5195.HEIC": (2566, 3313),
    # Coded 4608x3456 with irot 270 but EXIF orientation 1; libheif honours irot (as the HEIF
    # spec says) and the scene comes out sideways, so its orientation is not asserted here.
    "heic/HMD_Nokia_8.3_5G.heif": None,
}


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def mad(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference in levels of 255."""
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def assert_model_input(array: np.ndarray) -> None:
    assert array.shape == (INPUT_SIZE, INPUT_SIZE, 3)
    assert array.dtype == np.uint8


def outcome(data: bytes, draft_side: int | None = DRAFT_SIDE) -> str | None:
    """None when ``data`` preprocesses to a model input, else the JobError's code."""
    try:
        assert_model_input(preprocess(data, draft_side=draft_side))
    except JobError as exc:
        return exc.code
    return None


def gradient_rgb(width: int, height: int) -> Image.Image:
    """A smooth, colourful test picture (every pixel different, nothing flat)."""
    yy, xx = np.mgrid[0:height, 0:width]
    red = xx * 255 // max(width - 1, 1)
    green = yy * 255 // max(height - 1, 1)
    blue = (xx + yy) * 255 // max(width + height - 2, 1)
    return Image.fromarray(np.stack([red, green, 255 - blue], axis=-1).astype(np.uint8), "RGB")


def noisy_jpeg(width: int = 1200, height: int = 900) -> bytes:
    """A JPEG large enough for the draft path, with texture in every 8x8 block."""
    rng = np.random.default_rng(0)
    base = np.asarray(gradient_rgb(width, height), dtype=np.int16)
    noisy = np.clip(base + rng.integers(-40, 40, base.shape), 0, 255).astype(np.uint8)
    return encode(Image.fromarray(noisy, "RGB"), "JPEG", quality=90)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height RGB pixels but carries (almost) no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


# --- 1. EXIF orientation --------------------------------------------------------------------


@pytest.fixture(scope="module")
def orientation_reference(photos: Path) -> dict[tuple[str, int | None], np.ndarray]:
    """Preprocessed N=1 (no rotation needed) for each kind and decode path."""
    return {
        (kind, draft_side): preprocess(
            (photos / "orientation" / f"{kind}_1.jpg").read_bytes(), draft_side=draft_side
        )
        for kind in ("Landscape", "Portrait")
        for draft_side in (DRAFT_SIDE, None)
    }


@pytest.mark.parametrize("kind", ["Landscape", "Portrait"])
@pytest.mark.parametrize("n", range(9))
def test_every_exif_orientation_is_turned_upright(
    photos: Path,
    orientation_reference: dict[tuple[str, int | None], np.ndarray],
    kind: str,
    n: int,
) -> None:
    """A phone held any way round must give the same model input as the upright photo."""
    data = (photos / "orientation" / f"{kind}_{n}.jpg").read_bytes()
    for draft_side in (DRAFT_SIDE, None):
        width, height = decode_upright(data, draft_side=draft_side).size
        if kind == "Landscape":
            assert width > height, f"{kind}_{n} draft_side={draft_side}: {width}x{height}"
        else:
            assert height > width, f"{kind}_{n} draft_side={draft_side}: {width}x{height}"
        array = preprocess(data, draft_side=draft_side)
        assert_model_input(array)
        diff = mad(array, orientation_reference[kind, draft_side])
        assert diff < ORIENTATION_MAD_MAX, (
            f"{kind}_{n} draft_side={draft_side} is {diff:.2f} levels from {kind}_1"
        )


@pytest.mark.parametrize("kind", ["Landscape", "Portrait"])
def test_a_wrong_orientation_would_be_caught(
    photos: Path, orientation_reference: dict[tuple[str, int | None], np.ndarray], kind: str
) -> None:
    """The upright test has teeth: a sideways, upside-down or mirrored input is far off."""
    reference = orientation_reference[kind, DRAFT_SIDE]
    upright = decode_upright((photos / "orientation" / f"{kind}_1.jpg").read_bytes())
    diffs = {
        method.name: mad(equalize_crop_resize(upright.transpose(method)), reference)
        for method in Image.Transpose
    }
    # Decoding N=2..8 and ignoring the EXIF orientation, as a pipeline without exif_transpose would.
    for n in range(2, 9):
        with Image.open(photos / "orientation" / f"{kind}_{n}.jpg") as raw:
            diffs[f"ignored_exif_{n}"] = mad(equalize_crop_resize(raw.convert("RGB")), reference)
    assert WRONG_ORIENTATION_MAD_MIN >= 10 * ORIENTATION_MAD_MAX
    assert min(diffs.values()) > WRONG_ORIENTATION_MAD_MIN, diffs


# --- 2. A rotated camera photo --------------------------------------------------------------


def test_canon_photo_with_exif_orientation_6_comes_out_portrait(photos: Path) -> None:
    """A camera that stores pixels sideways and says so in EXIF must not be analysed sideways."""
    path = photos / "camera" / "canon_hdr_NO.jpg"
    with Image.open(path) as stored:
        assert stored.size == (2048, 1536)
        assert stored.getexif().get(0x0112) == 6
    data = path.read_bytes()
    assert decode_upright(data, draft_side=None).size == (1536, 2048)
    width, height = decode_upright(data).size
    assert height > width
    assert width >= DRAFT_SIDE
    assert width * 2048 == height * 1536, f"draft decode {width}x{height} lost the 3:4 ratio"


# --- 3. HEIC ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(HEIC_UPRIGHT_SIZES))
def test_heic_photos_decode(photos: Path, name: str) -> None:
    """iPhones upload HEIC by default; those photos must be analysable."""
    image = decode_upright((photos / name).read_bytes())
    assert image.mode == "RGB"
    expected = HEIC_UPRIGHT_SIZES[name]
    if expected is not None:
        assert image.size == expected
    # equalize_crop_resize(decode_upright(...)) is preprocess(); HEIC decoding is slow, so once.
    array = equalize_crop_resize(image)
    assert_model_input(array)
    assert array.std() > 10


@pytest.mark.parametrize("kept", [0.5, 0.9, 0.999])
def test_truncated_heic_is_image_corrupt(photos: Path, kept: float) -> None:
    """A half-uploaded iPhone photo must fail, not be analysed with its lower half green
    (libheif fills missing tiles and reports no error)."""
    data = (photos / "heic" / "IMG_5195.HEIC").read_bytes()
    assert outcome(data[: int(len(data) * kept)]) == "image_corrupt"


@pytest.mark.parametrize("name", ["exif-quirks/BSG1.tiff", "camera/canon_hdr_NO.jpg"])
def test_a_supported_format_cut_short_is_corrupt_not_unsupported(photos: Path, name: str) -> None:
    """The user re-uploads a damaged file; "unsupported format" would send them to convert
    a photo whose format is fine."""
    data = (photos / name).read_bytes()
    for kept in (64, len(data) // 3):
        assert outcome(data[:kept]) == "image_corrupt", kept


# --- 4. Real-world files: a model input or a JobError, never a crash ----------------------------


def test_outcome_table_lists_every_real_photo(photos: Path) -> None:
    """A photo added to camera/ or exif-quirks/ must get an expected outcome, not be skipped."""
    on_disk = {
        f"{folder}/{path.name}"
        for folder in ("camera", "exif-quirks")
        for path in (photos / folder).iterdir()
    }
    assert on_disk == set(REAL_PHOTO_OUTCOMES)


@DRAFT_PATHS
@pytest.mark.parametrize("name", sorted(REAL_PHOTO_OUTCOMES))
def test_real_photo_outcome(photos: Path, name: str, draft_side: int | None) -> None:
    """Odd EXIF or odd sizes must end in a result or a clear error code, never a worker crash."""
    assert outcome((photos / name).read_bytes(), draft_side) == REAL_PHOTO_OUTCOMES[name]


def test_tiff_with_alpha_is_composited_on_white(photos: Path) -> None:
    """Transparent areas must read as white paper, not as a black blob the model would see."""
    path = photos / "exif-quirks" / "BSG1.tiff"
    with Image.open(path) as stored:
        assert stored.mode == "RGBA"
        rgba = np.asarray(stored)
    decoded = np.asarray(decode_upright(path.read_bytes()))
    assert decoded.shape == (*rgba.shape[:2], 3)
    transparent = rgba[..., 3] == 0
    opaque = rgba[..., 3] == 255
    if transparent.any():
        assert decoded[transparent].min() >= 250
    assert np.array_equal(decoded[opaque], rgba[..., :3][opaque])


# --- 5. Generated bad and unusual inputs --------------------------------------------------------


def test_empty_upload_is_image_empty() -> None:
    """A 0-byte upload (a failed client upload) gets its own error, not a parser message."""
    assert outcome(b"") == "image_empty"


def test_html_is_unsupported_format() -> None:
    """An error page saved under a .jpg name must be rejected as not an image."""
    assert outcome(b"<html><body><h1>502 Bad Gateway</h1></body></html>") == "unsupported_format"


@DRAFT_PATHS
def test_truncated_jpeg_is_image_corrupt(draft_side: int | None) -> None:
    """A half-uploaded photo must fail, not be analysed with its lower half missing."""
    data = noisy_jpeg()
    assert outcome(data, draft_side) is None
    assert outcome(data[: len(data) // 2], draft_side) == "image_corrupt"


@DRAFT_PATHS
def test_truncated_real_jpeg_is_image_corrupt(photos: Path, draft_side: int | None) -> None:
    """The same for a real camera photo, rotated by EXIF and decoded at reduced scale."""
    data = (photos / "camera" / "canon_hdr_NO.jpg").read_bytes()
    assert outcome(data[: len(data) // 2], draft_side) == "image_corrupt"


def test_gif_is_unsupported_format() -> None:
    """GIFs (often animations) are not photos; they are refused rather than guessed at."""
    assert outcome(encode(gradient_rgb(64, 48).convert("P"), "GIF")) == "unsupported_format"


def test_tiny_png_is_image_too_small() -> None:
    """A thumbnail has no detail for the model; the user is told it is too small."""
    assert outcome(encode(Image.new("RGB", (10, 10), "red"), "PNG")) == "image_too_small"


def test_min_side_boundary() -> None:
    """MIN_SIDE pixels on the short side is accepted; one less is refused."""
    ok = gradient_rgb(MIN_SIDE * 3, MIN_SIDE)
    small = gradient_rgb(MIN_SIDE * 3, MIN_SIDE - 1)
    assert outcome(encode(ok, "PNG")) is None
    assert outcome(encode(small, "PNG")) == "image_too_small"


@pytest.mark.parametrize(
    ("width", "height"),
    [
        (100_000, 100_000),  # over twice Pillow's limit: DecompressionBombError from Image.open
        (10_000, 9_500),  # over Pillow's limit: its DecompressionBombWarning, made an error
        (10_000, 8_500),  # under Pillow's limit, over MAX_PIXELS
    ],
)
def test_decompression_bomb_is_refused_before_decoding(
    monkeypatch: pytest.MonkeyPatch, width: int, height: int
) -> None:
    """A tiny file declaring billions of pixels must not take the worker's memory down."""
    assert width * height > MAX_PIXELS

    def no_decoding(self: ImageFile.ImageFile) -> None:
        raise AssertionError(f"pixel data of a {self.size} image was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    data = png_header_only(width, height)
    assert len(data) < 200
    with pytest.raises(JobError) as info:
        decode_upright(data)
    assert info.value.code == "image_too_large"


def test_16_bit_grayscale_png_is_scaled_not_clipped() -> None:
    """Scientific or medical 16-bit exports must keep their tones, not turn all white."""
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (64, 1))
    data = encode(Image.fromarray(ramp), "PNG")
    with Image.open(io.BytesIO(data)) as stored:
        assert stored.mode.startswith("I")
    row = np.asarray(decode_upright(data))[32, :, 0].astype(np.int16)
    assert row[0] <= 1 and row[-1] >= 254
    assert (np.diff(row) >= 0).all()
    array = preprocess(data)
    assert_model_input(array)
    assert 20 < array.mean() < 235 and array.std() > 5, "all white or all black"


def test_palette_png_keeps_its_colours() -> None:
    """Screenshots and exports are often palette PNGs; their colours must survive."""
    image = gradient_rgb(160, 120).convert("P")
    data = encode(image, "PNG")
    assert np.array_equal(np.asarray(decode_upright(data)), np.asarray(image.convert("RGB")))
    assert_model_input(preprocess(data))


def test_cmyk_jpeg_keeps_its_colours() -> None:
    """Print-workflow CMYK JPEGs must not come out with inverted or shifted colours."""
    image = gradient_rgb(160, 120)
    data = encode(image.convert("CMYK"), "JPEG", quality=95)
    with Image.open(io.BytesIO(data)) as stored:
        assert stored.mode == "CMYK"
    assert mad(np.asarray(decode_upright(data)), np.asarray(image)) < 2
    assert_model_input(preprocess(data))


def test_large_grayscale_and_cmyk_jpegs_use_the_draft_path() -> None:
    """Non-YCbCr JPEGs big enough for a reduced-scale decode still come out as 8-bit RGB."""
    image = gradient_rgb(1800, 1350)
    reduced = decode_upright(encode(image, "JPEG", quality=95)).size
    assert reduced[0] < 1800 and min(reduced) >= DRAFT_SIDE
    for mode in ("L", "CMYK"):
        data = encode(image.convert(mode), "JPEG", quality=95)
        decoded = decode_upright(data)
        assert decoded.mode == "RGB"
        assert decoded.size == reduced, mode
        assert_model_input(preprocess(data))


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparency_is_composited_on_white(mode: str) -> None:
    """A cut-out photo's transparent background must read as white, not black."""
    base = gradient_rgb(64, 48)
    alpha = Image.new("L", base.size, 255)
    alpha.paste(0, (0, 0, 32, 48))  # left half fully transparent
    if mode == "P":
        quantized = base.quantize(colors=255)
        indices = np.asarray(quantized, dtype=np.uint8) + 1
        indices[:, :32] = 0  # palette entry 0: black, marked transparent
        image = Image.fromarray(indices, "P")
        image.putpalette([0, 0, 0, *quantized.getpalette()[: 255 * 3]])
        image.info["transparency"] = 0
    else:
        image = base if mode == "RGBA" else base.convert("L")
        image.putalpha(alpha)
    assert image.mode == mode
    data = encode(image, "PNG")
    decoded = np.asarray(decode_upright(data))
    assert decoded.shape == (48, 64, 3)
    assert decoded[:, :32].min() == 255, "transparent half is not white"
    assert decoded[:, 32:].min() < 255, "opaque half was whitened too"


# --- 6. Fidelity of the fast (draft) path --------------------------------------------------------


@dataclass(frozen=True)
class FastPathRun:
    names: list[str]
    fast: np.ndarray  # (N, 224, 224, 3) uint8, preprocess(data)
    reference: np.ndarray  # same, preprocess(data, draft_side=None)
    fast_embeddings: np.ndarray
    reference_embeddings: np.ndarray
    shifted_embeddings: np.ndarray  # reference inputs shifted SHIFT_PX to the right


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    model = Embedder("random")
    model.setup("cpu")
    return model


@pytest.fixture(scope="module")
def fast_path_run(photos: Path, embedder: Embedder) -> FastPathRun:
    paths = []
    for folder in ("camera", "series"):
        for path in sorted((photos / folder).iterdir()):
            with Image.open(path) as image:
                if image.format in ("JPEG", "MPO"):
                    paths.append(path)
    assert len(paths) >= 17, [p.name for p in paths]
    blobs = [path.read_bytes() for path in paths]
    fast = np.stack([preprocess(blob) for blob in blobs])
    reference = np.stack([preprocess(blob, draft_side=None) for blob in blobs])
    shifted = np.roll(reference, SHIFT_PX, axis=2)
    return FastPathRun(
        names=[f"{path.parent.name}/{path.name}" for path in paths],
        fast=fast,
        reference=reference,
        fast_embeddings=embedder.predict(fast),
        reference_embeddings=embedder.predict(reference),
        shifted_embeddings=embedder.predict(shifted),
    )


def test_fast_path_pixels_match_reference(fast_path_run: FastPathRun) -> None:
    """The reduced-scale decode must feed the model (nearly) the pixels a full decode would."""
    run = fast_path_run
    diffs = {name: mad(a, b) for name, a, b in zip(run.names, run.fast, run.reference, strict=True)}
    worst = max(diffs, key=diffs.__getitem__)
    assert diffs[worst] < FAST_PATH_PIXEL_MAD_MAX, (
        f"max {diffs[worst]:.2f} levels ({worst}); all: "
        + ", ".join(f"{k}={v:.2f}" for k, v in diffs.items())
    )


def test_fast_path_embeddings_match_reference(fast_path_run: FastPathRun) -> None:
    """Scores must not depend on whether a photo took the fast or the full-size decode."""
    run = fast_path_run
    distances = {
        name: cosine_distance(a, b)
        for name, a, b in zip(run.names, run.fast_embeddings, run.reference_embeddings, strict=True)
    }
    worst = max(distances, key=distances.__getitem__)
    assert distances[worst] < FAST_PATH_COSINE_MAX, (
        f"max cosine distance {distances[worst]:.3g} ({worst}); all: "
        + ", ".join(f"{k}={v:.2g}" for k, v in distances.items())
    )


def test_fast_path_moves_embeddings_less_than_a_small_shift(fast_path_run: FastPathRun) -> None:
    """The fidelity bound has teeth: the fast path must matter less than an 8-pixel nudge."""
    run = fast_path_run
    ratios = {}
    for name, fast, reference, shifted in zip(
        run.names,
        run.fast_embeddings,
        run.reference_embeddings,
        run.shifted_embeddings,
        strict=True,
    ):
        nudge = cosine_distance(shifted, reference)
        assert nudge > 0, f"{name}: shifting the input did not move its embedding"
        ratios[name] = cosine_distance(fast, reference) / nudge
    worst = max(ratios, key=ratios.__getitem__)
    assert ratios[worst] < FAST_PATH_SHIFT_RATIO_MAX, (
        f"max ratio {ratios[worst]:.3f} ({worst}); all: "
        + ", ".join(f"{k}={v:.3f}" for k, v in ratios.items())
    )


# --- issue 24: a cheaper decode, the same model input -------------------------------------


@DRAFT_PATHS
def test_cheaper_decode_leaves_the_model_input_unchanged(
    photos: Path, draft_side: int | None
) -> None:
    """decode_photo converts each photo to YCrCb once and turns only the centre square back
    to RGB, uprighting in place: every real photo must still reach the model as the very
    array the whole-photo equalization gave, so the model ids (PREPROCESS_VERSION) and every
    stored embedding stay valid without a backfill."""
    compared = []
    for path in sorted(photos.glob("*/*")):
        if path.suffix.lower() not in {".jpg", ".jpeg", ".heic", ".heif", ".tiff", ".png"}:
            continue
        if path.parent.name == "heic" and (draft_side is None or path.name != "IMG_5195.HEIC"):
            continue  # HEIC is never drafted, and slow: its smallest photo, once
        data = path.read_bytes()
        try:
            image = decode_upright(data, draft_side)
        except JobError:
            continue
        if min(image.size) < MIN_SIDE:
            continue
        expected = before_equalize_crop_resize(image)
        assert np.array_equal(decode_photo(data, draft_side).pixels, expected), path.name
        compared.append(path.name)
    assert len(compared) >= 40
    assert PREPROCESS_VERSION == "prep1"


def test_opencv_jpeg_decode_gives_pillows_pixels_and_size(photos: Path) -> None:
    """Drafted JPEGs are decoded by OpenCV (less CPU), and must give exactly what
    Pillow's draft decode and exif_transpose give, or the model ids (PREPROCESS_VERSION)
    and the quality flags would no longer hold for the photos already analysed. Every real
    JPEG, every EXIF orientation among them."""
    taken = []
    for path in sorted(photos.glob("*/*.jp*g")):
        data = path.read_bytes()
        try:
            image, size, _ = decode._open(data, DRAFT_SIDE)
        except JobError:
            continue
        header, _ = decode._header(data)
        if decode._jpeg_reduced(data, header, DRAFT_SIDE) is None:
            continue
        ycrcb, opencv_size, _ = decode._open_ycrcb(data, DRAFT_SIDE)
        assert opencv_size == size, path.name
        assert np.array_equal(ycrcb, decode._ycrcb(image)), path.name
        taken.append(path.parent.name)
    assert taken.count("orientation") == 18 and taken.count("camera") >= 7, taken


def test_opencv_turns_give_exif_transposes_pixels() -> None:
    """The fast path turns a photo upright with OpenCV, not Pillow: every EXIF orientation
    must give exactly the pixels ``exif_transpose`` gives (an odd, non-square size, so a
    swapped axis or a flip the wrong way cannot pass)."""
    pixels = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    for orientation in range(2, 9):
        image = Image.fromarray(pixels)
        image.getexif()[ExifTags.Base.Orientation] = orientation
        expected = np.asarray(ImageOps.exif_transpose(image))
        assert np.array_equal(decode._ORIENTATION[orientation](pixels), expected), orientation


def test_damaged_jpegs_get_pillows_outcome(photos: Path) -> None:
    """libjpeg only warns at damaged data, and OpenCV then returns an image where Pillow
    refuses the file: a damaged JPEG must still be image_corrupt wherever it was before,
    and decode to the same pixels wherever it did. Scrambled runs, bit flips, zeroed runs
    and a cut with an EOI marker put back, on real photos (400 of 400 agreed ad hoc)."""

    def outcome(data: bytes, opencv: bool) -> str | np.ndarray:
        try:
            if opencv:
                return decode._open_ycrcb(data, DRAFT_SIDE)[0]
            return decode._ycrcb(decode._open(data, DRAFT_SIDE)[0])
        except JobError as err:
            return str(err.code)

    rng = random.Random(0)
    originals = [p.read_bytes() for p in sorted((photos / "series").glob("*.jpg"))[:6]]
    refused = 0
    for n in range(48):
        damaged = bytearray(originals[n % len(originals)])
        start = rng.randrange(len(damaged) // 10, len(damaged) - 10)
        run = range(start, min(len(damaged) - 2, start + rng.randrange(1, 3000)))
        match n % 4:
            case 0:
                for i in run:
                    damaged[i] = (damaged[i] * 7 + 13) & 0xFF
            case 1:
                for _ in range(rng.randrange(1, 20)):
                    damaged[rng.randrange(len(damaged) // 10, len(damaged) - 2)] ^= (
                        1 << rng.randrange(8)
                    )
            case 2:
                for i in run:
                    damaged[i] = 0
            case _:
                damaged = damaged[:start] + b"\xff\xd9"
        data = bytes(damaged)
        pillow, opencv = outcome(data, False), outcome(data, True)
        if isinstance(pillow, str):
            refused += 1
            assert opencv == pillow, n
        else:
            assert isinstance(opencv, np.ndarray) and np.array_equal(opencv, pillow), n
    assert refused >= 5  # the damage reached Pillow's refusals
