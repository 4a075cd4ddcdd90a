"""``python -m bench.quality_calibration``: worker.quality's metrics on the real photos.

Measures every real photo the way the worker does (bytes -> ``decode_upright`` at the draft
scale -> ``measure``) and degraded copies made in memory from each one (blurred, darkened,
overexposed, downscaled; re-encoded as JPEG so they take the same decode path), then prints
markdown tables: per set, min / median / max of each metric and the flags the default
thresholds raise; then how far a draft decode's sharpness is from a full-size decode's, and
how long ``measure`` takes. docs/quality.md is written from its output. No services, one
process, under a minute; ``--verbose`` adds one line per photo and copy.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from PIL import Image, ImageEnhance, ImageFilter

from bench.harness.services import PHOTOS
from changewatch.worker.decode import decode_upright
from changewatch.worker.quality import (
    DEFAULT_THRESHOLDS,
    QualityMetrics,
    judge,
    measure,
    original_size,
)

# Ordinary, correctly taken photos: the defaults must flag none of them, or docs/quality.md
# says why.
ORIGINAL_SETS = ("camera", "series", "heic", "orientation")
# Odd files kept for parser tests (a flat grey frame, a concert, thumbnails): information only.
OTHER_SET = "exif-quirks"
SUFFIXES = {".jpg", ".jpeg", ".heic", ".heif", ".tif", ".tiff", ".png"}
JPEG_QUALITY = 90

Degrade = Callable[[Image.Image], Image.Image]


def _blur(divisor: float) -> Degrade:
    return lambda image: image.filter(ImageFilter.GaussianBlur(max(image.size) / divisor))


def _brightness(factor: float) -> Degrade:
    """Multiply every 8-bit channel value by ``factor``, clipping at 255."""
    return lambda image: ImageEnhance.Brightness(image).enhance(factor)


def _downscale(short_side: int) -> Degrade:
    def degrade(image: Image.Image) -> Image.Image:
        scale = short_side / min(image.size)
        size = (round(image.width * scale), round(image.height * scale))
        return image.resize(size, Image.Resampling.LANCZOS)

    return degrade


@dataclass(frozen=True)
class Variant:
    name: str
    degrade: Degrade
    expected: str | None  # the flag every copy must get; None: reported, not required


VARIANTS = (
    Variant("blur r=L/120", _blur(120), "blurry"),
    Variant("blur r=L/300", _blur(300), "blurry"),
    Variant("blur r=L/600", _blur(600), None),
    Variant("brightness x0.25", _brightness(0.25), "dark"),
    Variant("brightness x0.4", _brightness(0.4), None),
    Variant("brightness x2.5", _brightness(2.5), "overexposed"),
    Variant("brightness x3", _brightness(3.0), "overexposed"),
    Variant("downscaled 320 px", _downscale(320), "low_resolution"),
)


@dataclass(frozen=True)
class Row:
    name: str
    metrics: QualityMetrics
    score: float
    flags: list[str]


def _photos(folder: str) -> list[Path]:
    return sorted(
        p
        for p in (PHOTOS / folder).iterdir()
        if p.suffix.lower() in SUFFIXES and p.name != "corrupted.jpg"
    )


def _row(name: str, data: bytes) -> Row:
    """Measure and judge ``data`` as the worker would: draft decode, original size."""
    metrics = measure(decode_upright(data), original_size(data))
    verdict = judge(metrics, DEFAULT_THRESHOLDS)
    return Row(name, metrics, float(verdict["score"]), list(verdict["flags"]))  # type: ignore[arg-type]


def _encode(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def _best_ms(call: Callable[[], object], repeats: int = 5) -> float:
    """Fastest of a few calls, in ms: the machine may be shared."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best * 1000


def _spread(values: list[float], fmt: str) -> str:
    return " / ".join(format(v, fmt) for v in (min(values), statistics.median(values), max(values)))


def _flag_counts(rows: list[Row]) -> str:
    counts: dict[str, int] = {}
    for row in rows:
        for flag in row.flags:
            counts[flag] = counts.get(flag, 0) + 1
    return ", ".join(f"{flag} {n}" for flag, n in sorted(counts.items())) or "none"


def _table(sets: dict[str, list[Row]]) -> None:
    print(
        "| set | n | sharpness min / median / max | brightness | shadows <= 5 | highlights >= 250 "
        "| lowest score | flags raised |"
    )
    print("| --- | ---: | --- | --- | --- | --- | ---: | --- |")
    for name, rows in sets.items():
        m = [r.metrics for r in rows]
        print(
            f"| {name} | {len(rows)} | {_spread([x.sharpness for x in m], '.0f')} "
            f"| {_spread([x.brightness for x in m], '.2f')} "
            f"| {_spread([x.clipped_shadows for x in m], '.3f')} "
            f"| {_spread([x.clipped_highlights for x in m], '.3f')} "
            f"| {min(r.score for r in rows):.2f} | {_flag_counts(rows)} |"
        )


@dataclass
class Survey:
    """Every photo measured, and every degraded copy of the originals."""

    verbose: bool = False
    originals: list[Row] = field(default_factory=list)
    others: list[Row] = field(default_factory=list)
    copies: dict[str, list[Row]] = field(default_factory=lambda: {v.name: [] for v in VARIANTS})
    # draft / full-size sharpness per JPEG, and the photos whose flags the two disagree on
    ratios: list[tuple[float, str]] = field(default_factory=list)
    disagree: list[str] = field(default_factory=list)
    jpeg_ms: list[tuple[float, str]] = field(default_factory=list)
    heic_ms: list[float] = field(default_factory=list)

    def add(self, folder: str, path: Path) -> None:
        data = path.read_bytes()
        name = f"{folder}/{path.name}"
        row = _row(name, data)
        (self.others if folder == OTHER_SET else self.originals).append(row)
        if self.verbose:
            print(f"{name:36s} {row.metrics} score={row.score:.2f} {row.flags}")
        if folder == OTHER_SET:
            return
        full = self._draft_against_full(folder, name, data, row)
        # The nine orientation files hold two pictures: degrade each picture once.
        if folder == "orientation" and not path.stem.endswith("_1"):
            return
        self._degrade(name, full)

    def _draft_against_full(self, folder: str, name: str, data: bytes, row: Row) -> Image.Image:
        """Time ``measure`` on the draft decode, compare it with a full-size decode's."""
        draft = decode_upright(data)
        size = (row.metrics.width, row.metrics.height)
        elapsed = _best_ms(partial(measure, draft, size))
        if folder == "heic":
            self.heic_ms.append(elapsed)
        else:
            self.jpeg_ms.append((elapsed, f"{name} {draft.width}x{draft.height}"))
        full = decode_upright(data, None)
        if full.size != draft.size:
            full_metrics = measure(full, size)
            self.ratios.append((row.metrics.sharpness / full_metrics.sharpness, name))
            if judge(full_metrics, DEFAULT_THRESHOLDS)["flags"] != row.flags:
                self.disagree.append(name)
        return full

    def _degrade(self, name: str, full: Image.Image) -> None:
        for variant in VARIANTS:
            copy = _row(name, _encode(variant.degrade(full)))
            self.copies[variant.name].append(copy)
            if self.verbose:
                print(f"  {variant.name:18s} {copy.metrics} score={copy.score:.2f} {copy.flags}")


def _print_originals(originals: list[Row]) -> None:
    print("originals with flags:", "; ".join(f"{r.name} {r.flags}" for r in originals if r.flags))
    for r in sorted(originals, key=lambda r: r.metrics.sharpness)[:3]:
        print(f"least sharp original: {r.name} {r.metrics.sharpness:.0f} (score {r.score:.2f})")
    for r in sorted(originals, key=lambda r: r.metrics.brightness)[:2]:
        print(f"darkest original: {r.name} {r.metrics.brightness:.3f}")
    for r in sorted(originals, key=lambda r: -r.metrics.clipped_highlights)[:1]:
        print(f"most clipped highlights: {r.name} {r.metrics.clipped_highlights:.3f}")


def _print_variants(copies: dict[str, list[Row]]) -> None:
    """Per degradation: how many copies got the flag it must raise, and which did not."""
    for variant in VARIANTS:
        rows = copies[variant.name]
        if variant.expected is None:
            print(f"{variant.name}: flags {_flag_counts(rows)} (of {len(rows)})")
            continue
        missed = [
            f"{r.name} (brightness {r.metrics.brightness:.2f}, highlights "
            f"{r.metrics.clipped_highlights:.2f}, sharpness {r.metrics.sharpness:.0f})"
            for r in rows
            if variant.expected not in r.flags
        ]
        print(
            f"{variant.name}: {variant.expected} on {len(rows) - len(missed)}/{len(rows)}"
            + (f"; missed: {', '.join(missed)}" if missed else "")
        )


def _print_decodes(survey: Survey) -> None:
    """Draft against full-size decodes, and how long ``measure`` takes."""
    low, high = min(survey.ratios), max(survey.ratios)
    disagree = survey.disagree
    print(
        f"draft / full-size decode sharpness, {len(survey.ratios)} JPEGs: "
        f"{low[0]:.2f} ({low[1]}) to {high[0]:.2f} ({high[1]}); flags differ on "
        f"{len(disagree)}" + (f": {', '.join(disagree)}" if disagree else "")
    )
    slowest = max(survey.jpeg_ms)
    exact = Image.new("RGB", (597, 448))
    print(
        f"measure(), best of 5: 597x448 {_best_ms(partial(measure, exact, exact.size)):.1f} ms; "
        f"JPEG draft decodes median {statistics.median(t for t, _ in survey.jpeg_ms):.1f} ms, "
        f"max {slowest[0]:.1f} ms ({slowest[1]}); "
        f"HEIC (not drafted, 8-16 MP) median {statistics.median(survey.heic_ms):.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true", help="one line per photo and copy")
    args = parser.parse_args()
    if not PHOTOS.is_dir():
        raise SystemExit(f"real photos not found at {PHOTOS} (set CHANGEWATCH_PHOTOS)")

    survey = Survey(args.verbose)
    for folder in (*ORIGINAL_SETS, OTHER_SET):
        for path in _photos(folder):
            survey.add(folder, path)

    print(f"photos: {PHOTOS}\n{DEFAULT_THRESHOLDS}\n")
    _table(
        {"originals (" + ", ".join(ORIGINAL_SETS) + ")": survey.originals, OTHER_SET: survey.others}
    )
    print()
    _table({v.name: survey.copies[v.name] for v in VARIANTS})
    print()
    _print_originals(survey.originals)
    _print_variants(survey.copies)
    _print_decodes(survey)


if __name__ == "__main__":
    main()
