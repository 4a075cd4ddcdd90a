"""``python -m bench decode-parts``: what each part of the decode stage costs, alone.

Issue 24 asks where the decode stage's CPU goes before cutting any of it. On the real photos
(camera JPEGs, HEIC, the 640x480 series) this times every part alone, on the input the stage
hands it: the header and EXIF read, the JPEG Huffman/IDCT decode at full size, at the draft
scale the worker uses (short side >= 448) and at 1/8, the HEIC decode with libheif's default
threads and with one, turning upright, each quality measure and the equalize-crop-resize, as
the stage ran them before issue 24 (``before_*``, kept here as the yardstick) and as it runs
them now. Then, side by side in one run: decode CPU per six-photo session before and after,
whether the quality flags still agree with the earlier measures on the quality set
(docs/quality.md), and whether decoding a session's six photos on two threads pays when two
sessions already run at once (worker concurrency 2). No services; one process; CPU time
(``time.process_time``, every thread of the process), the median of ``--repeats``.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
import pillow_heif
from PIL import ExifTags, Image, ImageOps

from bench import quality_calibration as calibration
from bench.harness.services import PHOTOS
from bench.report import git_commit
from changewatch.worker import decode, equipment, quality
from changewatch.worker.decode import DRAFT_SIDE, INPUT_SIZE, Photo

# The e2e bench's session: six of the camera JPEGs over 300 kB, rotating (bench.e2e).
SESSION_SIZE = 6
GROUPS = {
    "camera JPEG (3-15 MP, drafted)": ("camera", (".jpg",)),
    "HEIC (8-16 MP, not drafted)": ("heic", (".heic", ".heif")),
    "series JPEG (640x480)": ("series", (".jpg",)),
}


# -- the decode stage before issue 24 (the yardstick) ---------------------------------------


def before_measure(image: Image.Image, original_size: tuple[int, int]) -> quality.QualityMetrics:
    """worker.quality.measure before issue 24: Pillow "L", Lanczos, float64 Laplacian,
    np.bincount."""
    grey = _before_centre(image).convert("L")
    width, height = grey.size
    short = min(width, height)
    if short != quality.NORM_SIDE:
        scale = quality.NORM_SIDE / short
        size = (
            (quality.NORM_SIDE, max(1, round(height * scale)))
            if width <= height
            else (max(1, round(width * scale)), quality.NORM_SIDE)
        )
        grey = grey.resize(size, quality.RESAMPLE, reducing_gap=quality.REDUCING_GAP)
    array = np.asarray(grey, dtype=np.uint8)
    counts = np.bincount(array.ravel(), minlength=256)
    total = float(array.size)
    return quality.QualityMetrics(
        sharpness=float(cv2.Laplacian(array, cv2.CV_64F).var()),
        brightness=float(counts @ np.arange(256)) / (255.0 * total),
        clipped_shadows=float(counts[: quality.SHADOW_LEVEL + 1].sum()) / total,
        clipped_highlights=float(counts[quality.HIGHLIGHT_LEVEL :].sum()) / total,
        width=int(original_size[0]),
        height=int(original_size[1]),
    )


def _before_centre(image: Image.Image) -> Image.Image:
    width, height = image.size
    short, long_side = min(width, height), max(width, height)
    keep = quality.MAX_ASPECT * short
    if long_side <= keep:
        return image
    offset = (long_side - keep) // 2
    box = (
        (offset, 0, offset + keep, height) if width > height else (0, offset, width, offset + keep)
    )
    return image.crop(box)


def before_equalize_crop_resize(image: Image.Image, size: int = INPUT_SIZE) -> np.ndarray:
    """worker.decode.equalize_crop_resize before issue 24: the whole photo back to RGB."""
    width, height = image.size
    rgb = np.asarray(image, dtype=np.uint8)
    ycrcb = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)
    ycrcb[:, :, 0] = cv2.equalizeHist(np.ascontiguousarray(ycrcb[:, :, 0]))
    rgb = cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2RGB)
    side = min(width, height)
    top, left = (height - side) // 2, (width - side) // 2
    square = rgb[top : top + side, left : left + side]
    interpolation = cv2.INTER_AREA if side >= size else cv2.INTER_CUBIC
    return cv2.resize(square, (size, size), interpolation=interpolation)


def before_decode_photo(
    data: bytes, draft_side: int | None = DRAFT_SIDE, upright: bool = False
) -> Photo:
    """worker.decode.decode_photo before issue 24. ``upright``: the photo needs no turn, and
    exif_transpose then returned a copy (worker.decode now turns in place), so one is made."""
    image, size, camera = decode._open(data, draft_side)
    if upright:
        image = image.copy()
    metrics = before_measure(image, size)
    judged = {**quality.judge(metrics), "metrics": metrics.as_dict()}
    return Photo(before_equalize_crop_resize(image), judged, camera)


# -- timing ---------------------------------------------------------------------------------


def cpu_ms(call: Callable[[], object], repeats: int) -> float:
    """Median CPU time of ``repeats`` calls, in ms (all the process's threads)."""
    times = []
    for _ in range(repeats):
        start = time.process_time()
        call()
        times.append(time.process_time() - start)
    return statistics.median(times) * 1000


def _load(data: bytes, draft: tuple[int, int] | None) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    if draft and image.format == "JPEG":
        image.draft("RGB", draft)
    image.load()
    return image


def _heic_one_thread(data: bytes) -> Image.Image:
    previous = pillow_heif.options.DECODE_THREADS
    pillow_heif.options.DECODE_THREADS = 1
    try:
        return _load(data, None)
    finally:
        pillow_heif.options.DECODE_THREADS = previous


def is_upright(data: bytes) -> bool:
    """No EXIF orientation, or 1: the photo is stored upright."""
    with Image.open(io.BytesIO(data)) as image:
        return image.getexif().get(ExifTags.Base.Orientation, 1) == 1


def part_times(data: bytes, repeats: int) -> dict[str, float]:
    """CPU ms of each part of the decode stage on one photo, each part alone."""
    raw = _load(data, (DRAFT_SIDE, DRAFT_SIDE))
    image, size, _ = decode._open(data, DRAFT_SIDE)
    luma = quality.luma(image)
    normal = quality.normalized_grey(luma)
    ycrcb = decode._ycrcb(image)
    is_jpeg = raw.format == "JPEG"
    parts = {
        "header + EXIF": lambda: equipment.read(Image.open(io.BytesIO(data))),
        "decode, full size": lambda: _load(data, None),
        "decode, draft (>= 448)": lambda: _load(data, (DRAFT_SIDE, DRAFT_SIDE)),
        "decode, 1/8 (>= 224)": (lambda: _load(data, (INPUT_SIZE, INPUT_SIZE)))
        if is_jpeg
        else None,
        "decode, HEIC 1 thread": None if is_jpeg else lambda: _heic_one_thread(data),
        "decode + YCrCb, draft, Pillow": lambda: decode._ycrcb(decode._open(data, DRAFT_SIDE)[0]),
        "decode + YCrCb, draft, as shipped (OpenCV for JPEG)": lambda: decode._open_ycrcb(
            data, DRAFT_SIDE
        ),
        "before: upright (exif_transpose copy)": lambda: ImageOps.exif_transpose(raw),
        "after: upright (in place)": (lambda: None)
        if is_upright(data)
        else lambda: ImageOps.exif_transpose(raw.copy(), in_place=True),
        "before: grey (Pillow L)": lambda: image.convert("L"),
        "before: Lanczos to 448": lambda: (
            _before_centre(image)
            .convert("L")
            .resize(
                np.asarray(normal).shape[::-1], quality.RESAMPLE, reducing_gap=quality.REDUCING_GAP
            )
        ),
        "before: Laplacian (float64) var": lambda: cv2.Laplacian(normal, cv2.CV_64F).var(),
        "before: histogram (bincount)": lambda: np.bincount(normal.ravel(), minlength=256),
        "before: equalize, crop, resize": lambda: before_equalize_crop_resize(image),
        "before: quality, all": lambda: before_measure(image, size),
        "after: RGB -> YCrCb (shared)": lambda: decode._ycrcb(image),
        "after: Lanczos to 448 (luma)": lambda: quality.normalized_grey(luma),
        "after: Laplacian (int16) var": lambda: cv2.meanStdDev(cv2.Laplacian(normal, cv2.CV_16S)),
        "after: histogram (calcHist)": lambda: cv2.calcHist([normal], [0], None, [256], [0, 256]),
        "after: equalize, crop, resize": lambda: decode._equalize_crop_resize(ycrcb),
        "after: quality, all": lambda: quality.measure_grey(ycrcb[:, :, 0], size),
        "before: decode_photo": lambda: before_decode_photo(data, upright=is_upright(data)),
        "after: decode_photo": lambda: decode.decode_photo(data),
    }
    return {name: cpu_ms(call, repeats) if call else float("nan") for name, call in parts.items()}


def group_table(repeats: int) -> str:
    """Per part, per group of photos: median over the group's photos of each part's ms."""
    columns: dict[str, dict[str, float]] = {}
    counts = []
    for label, (folder, suffixes) in GROUPS.items():
        paths = [p for p in sorted((PHOTOS / folder).iterdir()) if p.suffix.lower() in suffixes]
        per_photo = [part_times(p.read_bytes(), repeats) for p in paths]
        counts.append(f"{label.split(' (')[0]} {len(paths)}")
        columns[label] = {
            part: statistics.median(t[part] for t in per_photo) for part in per_photo[0]
        }
    parts = next(iter(columns.values()))
    lines = [
        "| part (CPU ms per photo, median over the group) | " + " | ".join(columns) + " |",
        "| --- |" + " ---: |" * len(columns),
    ]
    for part in parts:
        cells = [_ms(columns[label][part]) for label in columns]
        lines.append(f"| {part} | " + " | ".join(cells) + " |")
    return f"photos: {', '.join(counts)}\n\n" + "\n".join(lines)


def _ms(value: float) -> str:
    return "-" if np.isnan(value) else f"{value:.2f}"


# -- per session, before and after ----------------------------------------------------------


def sessions(photos: list[bytes], count: int) -> list[list[bytes]]:
    """``count`` six-photo sessions, rotating through ``photos`` as bench.e2e uploads them."""
    return [[photos[(i + j) % len(photos)] for j in range(SESSION_SIZE)] for i in range(count)]


def session_cpu(batch: list[list[bytes]], decode_one: Callable[[bytes], Photo]) -> float:
    """Mean decode CPU s per session over ``batch``."""
    start = time.process_time()
    for session in batch:
        for data in session:
            decode_one(data)
    return (time.process_time() - start) / len(batch)


def per_session(runs: int) -> list[tuple[str, list[float], list[float]]]:
    """Decode CPU per session, before and after, alternating, ``runs`` times each."""
    camera = [p.read_bytes() for p in sorted((PHOTOS / "camera").glob("*.jpg"))]
    heic = [p.read_bytes() for p in sorted((PHOTOS / "heic").iterdir())]
    bench_photos = [data for data in camera if len(data) > 300_000]
    out = []
    for label, photos, count in (
        ("camera JPEGs (the e2e bench's sessions)", bench_photos, len(bench_photos)),
        ("HEIC (3 photos, each twice)", heic, 1),
    ):
        batch = sessions(photos, count)
        upright = {id(data): is_upright(data) for data in photos}
        before, after = [], []
        for _ in range(runs):
            before.append(
                session_cpu(batch, lambda d, up=upright: before_decode_photo(d, upright=up[id(d)]))
            )
            after.append(session_cpu(batch, decode.decode_photo))
        out.append((label, before, after))
    return out


def session_table(rows: list[tuple[str, list[float], list[float]]]) -> str:
    lines = [
        "| six-photo session | before: decode CPU s (runs) | after | before / after (medians) |",
        "| --- | --- | --- | ---: |",
    ]
    for label, before, after in rows:
        b, a = statistics.median(before), statistics.median(after)
        lines.append(
            f"| {label} | {b:.4f} ({', '.join(f'{x:.4f}' for x in before)}) "
            f"| {a:.4f} ({', '.join(f'{x:.4f}' for x in after)}) | {b / a:.2f}x |"
        )
    return "\n".join(lines)


# -- the quality flags, before and after ----------------------------------------------------


@dataclass(frozen=True)
class Agreement:
    """How the quality measures of issue 24 compare with the earlier ones on a photo set."""

    total: int
    agree: int
    disagree: list[str]
    sharpness_ratio: tuple[float, float]  # min, max of after / before
    max_level_shift: float  # largest |after - before| of brightness and clipped shares

    @property
    def share(self) -> float:
        return self.agree / self.total


def quality_set(copies: bool = True, full_size: bool = True) -> list[tuple[str, bytes]]:
    """docs/quality.md's quality set: the originals (camera, series, heic, orientation) and,
    with ``copies``, each source's degraded copies (bench.quality_calibration), made from the
    full-size decode as docs/quality.md's are, or (``full_size=False``, for the unit tests)
    from the draft decode of the JPEG sources only (a 12 MP HEIC blurs slowly)."""
    items = []
    for folder in calibration.ORIGINAL_SETS:
        for path in calibration._photos(folder):
            data = path.read_bytes()
            items.append((f"{folder}/{path.name}", data))
            if not copies or (folder == "orientation" and not path.stem.endswith("_1")):
                continue
            if not full_size and folder == "heic":
                continue
            full = decode.decode_upright(data, None if full_size else DRAFT_SIDE)
            for variant in calibration.VARIANTS:
                degraded = calibration._encode(variant.degrade(full))
                items.append((f"{folder}/{path.name} {variant.name}", degraded))
    return items


def flag_agreement(items: list[tuple[str, bytes]]) -> Agreement:
    """Flags of the worker's quality measures against the earlier ones, photo by photo, both
    on the worker's draft decode."""
    agree, disagree, ratios, shift = 0, [], [], 0.0
    for name, data in items:
        image, size, _ = decode._open(data, DRAFT_SIDE)
        before = before_measure(image, size)
        after = decode.decode_photo(data).quality
        after_metrics = quality.QualityMetrics(**after["metrics"])
        if quality.judge(before)["flags"] == after["flags"]:
            agree += 1
        else:
            disagree.append(f"{name}: {quality.judge(before)['flags']} -> {after['flags']}")
        if before.sharpness > 0:
            ratios.append(after_metrics.sharpness / before.sharpness)
        for field in ("brightness", "clipped_shadows", "clipped_highlights"):
            shift = max(shift, abs(getattr(after_metrics, field) - getattr(before, field)))
    return Agreement(len(items), agree, disagree, (min(ratios), max(ratios)), shift)


# -- cheaper resamplers for the quality measures, the road not taken ---------------------

RESAMPLERS: dict[str, Callable[[np.ndarray, tuple[int, int]], np.ndarray]] = {
    "Pillow Lanczos, reducing_gap 2 (shipped)": lambda g, size: np.asarray(
        Image.fromarray(g).resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
    ),
    "Pillow bicubic, reducing_gap 2": lambda g, size: np.asarray(
        Image.fromarray(g).resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)
    ),
    "Pillow bilinear, reducing_gap 2": lambda g, size: np.asarray(
        Image.fromarray(g).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    ),
    "cv2 INTER_AREA": lambda g, size: cv2.resize(g, size, interpolation=cv2.INTER_AREA),
    "cv2 INTER_LINEAR": lambda g, size: cv2.resize(g, size, interpolation=cv2.INTER_LINEAR),
}


def _sharpness(luma: np.ndarray, resample: Callable[..., np.ndarray]) -> tuple[float, float]:
    """Laplacian variance of ``luma`` resampled to NORM_SIDE by ``resample``, and CPU ms."""
    grey = np.ascontiguousarray(quality._centre(luma))
    height, width = grey.shape
    side, short = quality.NORM_SIDE, min(height, width)
    start = time.process_time()
    if short != side:
        scale = side / short
        size = (
            (side, max(1, round(height * scale)))
            if width <= height
            else (max(1, round(width * scale)), side)
        )
        grey = resample(grey, size)
    _, std = cv2.meanStdDev(cv2.Laplacian(grey, cv2.CV_16S))
    return float(std[0, 0]) ** 2, (time.process_time() - start) * 1000


def resampler_table(items: list[tuple[str, bytes]]) -> str:
    """Per resampler: blurry flags against the shipped Lanczos on the quality set, sharpness
    against it, draft / full-size decode sharpness on the JPEGs (why Lanczos was chosen:
    docs/quality.md), and CPU ms per photo on the draft decode."""
    thresholds = quality.DEFAULT_THRESHOLDS
    shipped = next(iter(RESAMPLERS))
    rows = {name: {"agree": 0, "ratio": [], "ms": [], "scale": []} for name in RESAMPLERS}
    for name, data in items:
        image, _, _ = decode._open(data, DRAFT_SIDE)
        luma = quality.luma(image)
        values = {how: _sharpness(luma, f) for how, f in RESAMPLERS.items()}
        full = None
        if " " not in name and name.endswith(".jpg"):
            full_image = decode.decode_upright(data, None)
            if full_image.size != image.size:
                full = quality.luma(full_image)
        for how, (sharp, ms) in values.items():
            row = rows[how]
            reference = values[shipped][0]
            row["agree"] += (sharp < thresholds.min_sharpness) == (
                reference < thresholds.min_sharpness
            )
            if reference > 0:
                row["ratio"].append(sharp / reference)
            row["ms"].append(ms)
            if full is not None:
                row["scale"].append(sharp / _sharpness(full, RESAMPLERS[how])[0])
    lines = [
        "| quality resampler (luma to 448 px) | blurry agrees with shipped | sharpness / shipped, "
        "min-median-max | draft / full-size sharpness, JPEGs | CPU ms (median) |",
        "| --- | ---: | --- | --- | ---: |",
    ]
    for how, row in rows.items():
        ratio, scale = row["ratio"], row["scale"]
        lines.append(
            f"| {how} | {row['agree']}/{len(items)} "
            f"| {min(ratio):.2f} / {statistics.median(ratio):.2f} / {max(ratio):.2f} "
            f"| {min(scale):.2f} to {max(scale):.2f} ({len(scale)}) "
            f"| {statistics.median(row['ms']):.2f} |"
        )
    return "\n".join(lines)


# -- parallel decode at worker concurrency 2 ------------------------------------------------


def parallel_table(runs: int, count: int) -> str:
    """Sessions/s of decode alone: ``c`` worker threads each decoding whole sessions, their
    six photos one after another or on a pool of two threads; median wall time of ``runs``."""
    camera = [p.read_bytes() for p in sorted((PHOTOS / "camera").glob("*.jpg"))]
    batch = sessions([data for data in camera if len(data) > 300_000], count)

    def serial(session: list[bytes]) -> None:
        for data in session:
            decode.decode_photo(data)

    pool = ThreadPoolExecutor(2)

    def threaded(session: list[bytes]) -> None:
        list(pool.map(decode.decode_photo, session))

    def rate(concurrency: int, one: Callable[[list[bytes]], None]) -> float:
        with ThreadPoolExecutor(concurrency) as workers:
            start = time.perf_counter()
            list(workers.map(one, batch))
            return len(batch) / (time.perf_counter() - start)

    lines = [
        "| worker concurrency | photos of a session | sessions/s of decode (runs) | median |",
        "| ---: | --- | --- | ---: |",
    ]
    for concurrency in (1, 2):
        for label, one in (("one after another", serial), ("two threads", threaded)):
            rates = [rate(concurrency, one) for _ in range(runs)]
            lines.append(
                f"| {concurrency} | {label} | {', '.join(f'{r:.1f}' for r in rates)} "
                f"| {statistics.median(rates):.1f} |"
            )
    pool.shutdown()
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench decode-parts", description=__doc__)
    parser.add_argument("--repeats", type=int, default=7, help="calls per part and photo")
    parser.add_argument("--runs", type=int, default=3, help="runs of the side-by-side measures")
    parser.add_argument("--sessions", type=int, default=14, help="sessions per parallel run")
    args = parser.parse_args(argv)
    if not PHOTOS.is_dir():
        raise SystemExit(f"real photos not found at {PHOTOS} (set CHANGEWATCH_PHOTOS)")
    print(
        f"commit {git_commit()}; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs; cv2 threads {cv2.getNumThreads()}, "
        f"libheif decode threads {pillow_heif.options.DECODE_THREADS}\n"
    )
    print(group_table(args.repeats) + "\n", flush=True)
    print(session_table(per_session(args.runs)) + "\n", flush=True)
    items = quality_set()
    result = flag_agreement(items)
    print(
        f"quality flags, after against before, on the quality set: {result.agree}/{result.total} "
        f"agree ({result.share:.1%}); sharpness after / before {result.sharpness_ratio[0]:.4f} "
        f"to {result.sharpness_ratio[1]:.4f}; brightness and clipped shares move at most "
        f"{result.max_level_shift:.1e}"
        + ("; differ: " + "; ".join(result.disagree) if result.disagree else "")
        + "\n",
        flush=True,
    )
    print(resampler_table(items) + "\n", flush=True)
    print(parallel_table(args.runs, args.sessions))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
