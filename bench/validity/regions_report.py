"""``python -m bench.validity.regions_report``: measure the region maps on real photos and
write their section of docs/validity.md (between the region markers; the rest of the
file is bench.validity's and is kept)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness.services import PHOTOS, ROOT
from bench.validity import ANGLE_PHOTOS, UNUSED_PHOTOS, load_scenes, photos_present
from bench.validity.regions import (
    CHANGE_AT_LEAST,
    RETAKE_AT_MOST,
    run_regions_seed,
    summarize_regions,
)
from changewatch.worker.embed import Embedder

START, END = "<!-- regions: python -m bench.validity.regions_report -->", "<!-- /regions -->"
LABELS = {
    "product": "stride-16 map (14x14), as stored",
    "last_full": "last map (7x7), full width",
    "last_projected": "last map (7x7), projected to 128",
}


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    rows = [
        f"| {LABELS[k]} | {_pct(s['first'])} | {_pct(s['at_least'])} | {_pct(s['both'])} "
        f"| {s['change_median']:.1f} | {_pct(s['retake_inside'])} "
        f"| {_pct(s['retake_sessions_inside'])} | {s['retake_max_median']:.2f} "
        f"| {s['retake_max']:.1f} |"
        for k, s in summary.items()
        if k in LABELS
    ]
    p, product = summary["projection"], summary["product"]
    return "\n".join(
        [
            START,
            "## Region maps",
            "",
            f"Model: {meta['model_id']} (EfficientNet-Lite0, ImageNet weights), CPU. "
            f"{meta['date']}, commit {meta['commit']}, seeds {meta['seeds']}, "
            f"{meta['retakes']} re-take sessions per seed, {meta['seconds']:.0f} s. "
            "Built by bench/validity/regions.py: each seed is one person's 8 re-take "
            "sessions of the six series/ photos; a *region change* replaces one grid cell "
            "of one angle's re-take (the cell of the centre square the model sees) with the "
            "same cell of a photo the history never used, once for every angle and cell "
            f"({product['change_cases']} cases); a *re-take* is a new session of re-takes "
            f"({product['retake_angles']} angles in {product['retake_sessions']} sessions). "
            "Scores, floors and relative change are the product's own "
            "(`analyze_history`, `evidence.annotate`).",
            "",
            f"| regions from | changed region highest of nine | changed region >= "
            f"{CHANGE_AT_LEAST:.0f}x floor | both (done when >= 90%) | changed region, "
            f"median x floor | re-take angles with no region > {RETAKE_AT_MOST:.0f}x floor "
            "(done when >= 95%) | re-take sessions, all 54 regions inside | re-take, "
            "median of an angle's highest region | re-take, highest |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            *rows,
            "",
            "What the projection keeps (the last map's 1280-d regions against the same "
            "regions projected to 128 by the product's fixed matrix, over the changed "
            f"regions): projected / full score median {p['score_ratio_median']:.2f} "
            f"(5-95%: {p['score_ratio_p05']:.2f}-{p['score_ratio_p95']:.2f}), correlation "
            f"{p['score_correlation']:.3f}, and the table's two last-map rows separate "
            "alike. The product projects only ResNet50's 1024-channel map; Lite0's "
            "112 channels are stored as they are.",
            "",
            "Why the stride-16 map: each unit of the last, 7x7 map sees the whole photo, so "
            "a change in one ninth moves every region (the last-map rows). The 14x14 map's "
            "units see about a third of the photo. Both come from the same forward pass.",
            END,
        ]
    )


def regions_section(path: Path) -> str | None:
    """The region section of ``path`` as it stands, if it has one."""
    text = path.read_text() if path.exists() else ""
    if START not in text or END not in text:
        return None
    return START + text.split(START, 1)[1].split(END, 1)[0] + END


def write_section(path: Path, section: str) -> None:
    """Replace the region section of ``path``, or append it."""
    text = path.read_text() if path.exists() else ""
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def main(argv: Sequence[str] | None = None) -> None:
    from bench.report import git_commit

    parser = argparse.ArgumentParser(prog="python -m bench.validity.regions_report")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--retakes", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "validity.md")
    args = parser.parse_args(argv)
    if not photos_present():
        raise SystemExit(f"the series/ photos are missing under {PHOTOS}")
    started = time.perf_counter()
    scenes = load_scenes([*ANGLE_PHOTOS.values(), *UNUSED_PHOTOS])
    embedder = Embedder("imagenet", model="efficientnet_lite0")
    embedder.setup("cpu")
    seeds = [run_regions_seed(embedder, scenes, s, args.retakes) for s in range(args.seeds)]
    summary = summarize_regions(seeds)
    meta = {
        "model_id": embedder.model_id,
        "date": datetime.now(UTC).date().isoformat(),
        "commit": git_commit(),
        "seeds": f"0-{args.seeds - 1}",
        "retakes": args.retakes,
        "seconds": time.perf_counter() - started,
    }
    section = markdown(summary, meta)
    write_section(args.out, section)
    print(section)


if __name__ == "__main__":
    main()
