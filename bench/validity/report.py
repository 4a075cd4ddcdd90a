"""``python -m bench.validity``'s summary and what it writes: docs/validity.md and the plot."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.validity import (
    ANGLE_PHOTOS,
    BLUR_DIVISOR,
    BRIGHTNESS,
    DARK_FACTOR,
    FRAME,
    HISTORY_SESSIONS,
    JPEG_QUALITY,
    ROTATION_DEG,
    SHIFT,
)
from changewatch.worker.quality import DEFAULT_THRESHOLDS


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


def _intro(meta: dict[str, Any]) -> list[str]:
    """The heading and how the sessions were made."""
    return [
        "# Validity of the change scores on real photos",
        "",
        f"`python -m bench.validity`, {meta['date']}, commit {meta['commit']}, "
        f"seeds {meta['seeds']}, {meta['seconds']:.0f} s on {meta['threads']} CPU threads. "
        "Asserted by tests/unit/test_validity.py.",
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
    ]


def _score_table(summaries: list[dict[str, Any]]) -> list[str]:
    """Scores: re-takes against another scene, and the noise floors."""
    lines = [
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
    return lines


def _relative_table(summaries: list[dict[str, Any]], meta: dict[str, Any]) -> list[str]:
    """Relative changes (score / noise floor) of re-takes, scene changes and degradations."""
    lines = [
        "",
        "Relative change (score / the person's noise floor). Shares over "
        f"{meta['retakes'] * len(meta['seeds'].split(','))} re-take sessions are rough; "
        "`--seeds 20 --models efficientnet_lite0` gives tighter ones (tests/unit/test_validity.py "
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
    return lines


def _degraded(summaries: list[dict[str, Any]], missing: list[tuple[str, str]]) -> list[str]:
    """Per model: blurred and darkened angles, and whether worker.quality flags them."""
    lines = []
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
    return lines


def markdown(
    summaries: list[dict[str, Any]], missing: list[tuple[str, str]], meta: dict[str, Any]
) -> str:
    lines = _intro(meta) + _score_table(summaries) + _relative_table(summaries, meta)
    lines += ["", *_degraded(summaries, missing)]
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
