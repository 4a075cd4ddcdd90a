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
and ``docs/validity.png``. tests/test_validity.py asserts on the same construction.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import numpy as np
from PIL import ExifTags, Image, ImageEnhance, ImageFilter

from changewatch.schema.contract import ANGLES
from changewatch.schema.evidence import annotate
from changewatch.worker.decode import decode_upright, preprocess
from changewatch.worker.embed import Embedder, WeightsUnavailable
from changewatch.worker.quality import DEFAULT_THRESHOLDS, judge, measure, original_size
from changewatch.worker.score import StoredSession, analyze_history
from scripts.localstack import PHOTOS

ROOT = Path(__file__).resolve().parent.parent
SERIES = PHOTOS / "series"
# The person's six angles: six different scenes, so every angle has its own baseline.
ANGLE_PHOTOS: dict[str, str] = dict(
    zip(
        ANGLES,
        (
            "DSCN0010.jpg",
            "DSCN0012.jpg",
            "DSCN0021.jpg",
            "DSCN0025.jpg",
            "DSCN0027.jpg",
            "DSCN0029.jpg",
        ),
        strict=True,
    )
)
# Series photos no history session uses: "another scene" on one angle.
UNUSED_PHOTOS = ("DSCN0038.jpg", "DSCN0040.jpg", "DSCN0042.jpg")
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
    analyses = [asdict(a) for a in analyze_history([*history, session])]
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


def _stats(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "median": statistics.median(values),
        "max": max(values),
        "min": min(values),
    }


def _inside(result: dict[str, Any]) -> list[float]:
    """A session's relative changes: the session's, then each angle's."""
    return [result["relative_change"], *(r["relative_change"] for r in result["per_angle"])]


def summarize(label: str, model_id: str, seeds: list[dict]) -> dict[str, Any]:
    retakes = [x for s in seeds for x in s["retakes"]]
    retake_scores = [r["change_score"] for x in retakes for r in x["per_angle"]]
    retake_relative = [r["relative_change"] for x in retakes for r in x["per_angle"]]
    session_relative = [x["relative_change"] for x in retakes]
    per_seed = [[v for x in s["retakes"] for v in _inside(x)] for s in seeds]
    floors = [r["noise_floor"] for s in seeds for r in s["retakes"][0]["per_angle"]]
    session_floors = [s["retakes"][0]["noise_floor"] for s in seeds]
    kinds = {
        kind: [v for s in seeds for v in s["variants"] if v["kind"] == kind]
        for kind in ("changed", "blurred", "dark")
    }
    changed_scores = [v["score"] for v in kinds["changed"]]
    dark_brightness = [v["quality"]["brightness"] for v in kinds["dark"]]
    return {
        "label": label,
        "model_id": model_id,
        "retake_scores": retake_scores,
        "changed_scores": changed_scores,
        "blurred_scores": [v["score"] for v in kinds["blurred"]],
        "dark_scores": [v["score"] for v in kinds["dark"]],
        "retake_relatives": retake_relative,
        "changed_relatives": [v["relative"] for v in kinds["changed"]],
        "blurred_relatives": [v["relative"] for v in kinds["blurred"]],
        "dark_relatives": [v["relative"] for v in kinds["dark"]],
        "retake": _stats(retake_scores),
        "retake_relative": _stats(retake_relative),
        "retake_session_relative": _stats(session_relative),
        "retake_angles_above_1": sum(v >= 1 for v in retake_relative) / len(retake_relative),
        "retake_sessions_above_1": sum(v >= 1 for v in session_relative) / len(session_relative),
        "retake_sessions_all_inside": sum(max(_inside(x)) < 1 for x in retakes) / len(retakes),
        "per_seed_median_relative": _stats([statistics.median(v) for v in per_seed]),
        "per_seed_above_1": _stats([sum(x >= 1 for x in v) for v in per_seed]),
        "values_per_seed": len(per_seed[0]),
        "changed": _stats(changed_scores),
        "changed_relative": _stats([v["relative"] for v in kinds["changed"]]),
        "changed_session_relative": _stats([v["session_relative"] for v in kinds["changed"]]),
        "separation": statistics.median(changed_scores) / max(retake_scores),
        "median_ratio": statistics.median(changed_scores) / statistics.median(retake_scores),
        "angle_floor": _stats(floors),
        "session_floor": _stats(session_floors),
        "blurred": _stats([v["score"] for v in kinds["blurred"]]),
        "blurred_relative": _stats([v["relative"] for v in kinds["blurred"]]),
        "blurred_flagged": sum("blurry" in v["quality"]["flags"] for v in kinds["blurred"]),
        "dark": _stats([v["score"] for v in kinds["dark"]]),
        "dark_relative": _stats([v["relative"] for v in kinds["dark"]]),
        "dark_flagged": sum("dark" in v["quality"]["flags"] for v in kinds["dark"]),
        "dark_unflagged_angles": sorted(
            {v["angle"] for v in kinds["dark"] if "dark" not in v["quality"]["flags"]}
        ),
        "dark_brightness": _stats(dark_brightness),
        "n_degraded": len(kinds["blurred"]),
        "noisiest_angle": max(
            ANGLE_PHOTOS,
            key=lambda a: max(
                r["change_score"] for x in retakes for r in x["per_angle"] if r["angle"] == a
            ),
        ),
    }


def markdown(
    summaries: list[dict[str, Any]], missing: list[tuple[str, str]], meta: dict[str, Any]
) -> str:
    lines = [
        "# Validity of the change scores on real photos",
        "",
        f"`python -m bench.validity`, {meta['date']}, commit {meta['commit']}, "
        f"seeds {meta['seeds']}, {meta['seconds']:.0f} s on {meta['threads']} CPU threads. "
        "Asserted by tests/test_validity.py.",
        "",
        f"A person's history: {HISTORY_SESSIONS} sessions, six angles, each angle one "
        "series/ photo (Nikon COOLPIX P6000, 640x480), the same photo in every session. "
        "Every session is a re-take: each photo independently re-encoded at JPEG quality "
        f"{JPEG_QUALITY[0]}-{JPEG_QUALITY[1]}, {BRIGHTNESS[0]:.0%}-{BRIGHTNESS[1]:.0%} "
        f"brighter or darker, shifted by {SHIFT[0]:.0%}-{SHIFT[1]:.0%} of each side and "
        f"rotated by {ROTATION_DEG[0]:g}-{ROTATION_DEG[1]:g} degrees inside a "
        f"{FRAME:.0%} frame. Then, per seed, {meta['retakes']} new re-take sessions, and "
        "variants of the first one where one angle shows another scene (each of the three "
        "series/ photos the history never used, on each angle), is blurred (Gaussian, "
        f"radius = long side / {BLUR_DIVISOR}) or darkened (x{DARK_FACTOR}). The product's "
        "own path: `preprocess`, the embedder, `analyze_history`, `evidence.annotate` "
        "(noise floor = median + 2 x 1.4826 x MAD of the earlier scores, first session "
        "left out; relative change = score / noise floor, below 1 inside it).",
        "",
        "| model | re-take angle score: median / max | another scene: median (min-max) | "
        "median another scene / largest re-take | ... / median re-take | "
        "angle noise floor: median (min-max) | session noise floor: median |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in summaries:
        r, c, f, sf = s["retake"], s["changed"], s["angle_floor"], s["session_floor"]
        lines.append(
            f"| {s['label']} | {r['median']:.3g} / {r['max']:.3g} | "
            f"{c['median']:.3g} ({c['min']:.3g}-{c['max']:.3g}) | "
            f"**{s['separation']:.1f}x** | {s['median_ratio']:.1f}x | "
            f"{f['median']:.3g} ({f['min']:.3g}-{f['max']:.3g}) | {sf['median']:.3g} |"
        )
    lines += [
        "",
        "Relative change (score / the person's noise floor). Shares over "
        f"{meta['retakes'] * len(meta['seeds'].split(','))} re-take sessions are rough; "
        "`--seeds 20 --models efficientnet_lite0` gives tighter ones (tests/test_validity.py "
        "cites such a run).",
        "",
        "| model | re-take angles: median / max, share >= 1 | re-take sessions: max, "
        "share >= 1 | re-take sessions with every value < 1 | another scene: min / median "
        "| blurred: median (min-max) | darkened: median (min-max) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in summaries:
        rr, sr, cr = s["retake_relative"], s["retake_session_relative"], s["changed_relative"]
        br, dr = s["blurred_relative"], s["dark_relative"]
        lines.append(
            f"| {s['label']} | {rr['median']:.2f} / {rr['max']:.2f}, "
            f"{s['retake_angles_above_1']:.0%} | {sr['max']:.2f}, "
            f"{s['retake_sessions_above_1']:.0%} | {s['retake_sessions_all_inside']:.0%} | "
            f"{cr['min']:.1f} / {cr['median']:.1f} | "
            f"{br['median']:.1f} ({br['min']:.1f}-{br['max']:.1f}) | "
            f"{dr['median']:.1f} ({dr['min']:.1f}-{dr['max']:.1f}) |"
        )
    lines.append("")
    for s in summaries:
        b, d, db = s["blurred"], s["dark"], s["dark_brightness"]
        unflagged = ", ".join(s["dark_unflagged_angles"]) or "none"
        lines.append(
            f"- {s['label']} (`{s['model_id']}`): blurred angles score {b['median']:.3g} "
            f"median ({b['min']:.3g}-{b['max']:.3g}), flagged blurry {s['blurred_flagged']} "
            f"of {s['n_degraded']}; darkened angles score {d['median']:.3g} median "
            f"({d['min']:.3g}-{d['max']:.3g}), flagged dark {s['dark_flagged']} of "
            f"{s['n_degraded']} (mean grey {db['min']:.3f}-{db['max']:.3f}, threshold "
            f"{DEFAULT_THRESHOLDS.min_brightness:g}; not flagged: {unflagged})."
        )
    for label, why in missing:
        lines.append(f"- {label}: not measured here, its weights did not load ({why}).")
    lines += meta["notes"]
    lines += ["", "![re-take and changed-angle scores per model](validity.png)", ""]
    return "\n".join(lines)


def notes(summaries: list[dict[str, Any]]) -> list[str]:
    """What the table says, in words computed from it."""
    lines = ["", "Read:", ""]
    for s in summaries:
        smallest, largest = s["changed_relative"]["min"], s["retake_relative"]["max"]
        angle = s["noisiest_angle"]
        lines.append(
            f"- {s['label']}: the smallest another-scene relative change ({smallest:.1f}) is "
            f"{'above' if smallest > largest else 'below'} the largest re-take one "
            f"({largest:.2f}). One changed angle of six puts the session's own relative "
            f"change at {s['changed_session_relative']['median']:.1f} (median). The "
            f"noisiest re-takes are {angle} ({ANGLE_PHOTOS[angle]}). Blur reads like change "
            f"(relative {s['blurred_relative']['median']:.1f}, median), darkening much less "
            f"({s['dark_relative']['median']:.1f}): preprocess equalizes brightness. The "
            "quality flags say which is which."
        )
    trained = next((s for s in summaries if "ImageNet" in s["label"]), None)
    random = next((s for s in summaries if "random" in s["label"]), None)
    if trained and random:
        scale = trained["retake"]["median"] / random["retake"]["median"]
        lines.append(
            f"- Random weights: scores about {scale:.0f}x smaller than the trained model's, "
            "so any fixed cut-off means nothing on them (the variation levels call every "
            "delta below 0.10 stable); another scene over the median re-take is "
            f"{random['median_ratio']:.1f}x against {trained['median_ratio']:.1f}x, and in "
            "relative change their re-takes and scene changes overlap. For unit tests only."
        )
    return lines


def plot(summaries: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    groups = (
        ("re-take", "retake", "tab:blue"),
        ("another scene", "changed", "tab:red"),
        ("blurred", "blurred", "tab:orange"),
        ("darkened x0.3", "dark", "tab:gray"),
    )
    fig, axes = plt.subplots(
        len(summaries), 2, figsize=(9, 1.9 * len(summaries) + 0.7), squeeze=False
    )
    for row_axes, s in zip(axes, summaries, strict=True):
        for ax, suffix, xlabel in (
            (row_axes[0], "_scores", "angle change score (cosine distance), log"),
            (row_axes[1], "_relatives", "relative change (score / noise floor), log"),
        ):
            for row, (_, key, colour) in enumerate(groups):
                values = np.asarray(s[key + suffix])
                jitter = np.random.default_rng(row).uniform(-0.18, 0.18, len(values))
                ax.scatter(values, row + jitter, s=8, alpha=0.6, color=colour, linewidths=0)
                ax.vlines(np.median(values), row - 0.3, row + 0.3, color="black", lw=1.2)
            if suffix == "_relatives":
                ax.axvline(1.0, color="black", ls="--", lw=0.8, label="noise floor")
            else:
                floor = s["angle_floor"]["median"]
                ax.axvline(floor, color="black", ls="--", lw=0.8, label="median noise floor")
            ax.legend(loc="lower right", fontsize=7, frameon=False)
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_yticks(range(len(groups)), [g[0] for g in groups], fontsize=8)
            ax.set_ylim(len(groups) - 0.5, -0.5)
            ax.set_title(s["label"], fontsize=9)
            ax.tick_params(axis="x", labelsize=8)
            ax.grid(axis="x", alpha=0.3, which="both")
            ax.set_xlabel(xlabel, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    import torch

    from bench.report import git_commit

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--retakes", type=int, default=4, help="new re-take sessions per seed")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument(
        "--models", default="all", help="'all' or comma-separated CHANGEWATCH_MODEL names"
    )
    args = parser.parse_args(argv)
    wanted = {m.strip() for m in args.models.split(",")}
    if not photos_present():
        raise SystemExit(f"the series/ photos are missing under {PHOTOS}; set CHANGEWATCH_PHOTOS")
    started = time.perf_counter()
    scenes = load_scenes([*ANGLE_PHOTOS.values(), *UNUSED_PHOTOS])
    summaries, missing = [], []
    for label, weights, model in MODELS:
        if args.models != "all" and model not in wanted:
            continue
        embedder = Embedder(weights, model=model)
        try:
            embedder.setup("cpu")
        except WeightsUnavailable as exc:
            missing.append((label, str(exc).split(" (")[0]))
            print(f"{label}: weights unavailable: {exc}")
            continue
        seeds = [run_seed(embedder, scenes, seed, args.retakes) for seed in range(args.seeds)]
        summary = summarize(label, embedder.model_id, seeds)
        summaries.append(summary)
        printable = {k: v for k, v in summary.items() if not k.endswith(("_scores", "_relatives"))}
        print(label, printable)
    meta = {
        "date": datetime.now(UTC).date().isoformat(),
        "commit": git_commit(),
        "seeds": ", ".join(str(s) for s in range(args.seeds)),
        "retakes": args.retakes,
        "seconds": time.perf_counter() - started,
        "threads": torch.get_num_threads(),
        "notes": notes(summaries),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    text = markdown(summaries, missing, meta)
    (args.out / "validity.md").write_text(text)
    plot(summaries, args.out / "validity.png")
    print(text)


if __name__ == "__main__":
    main()
