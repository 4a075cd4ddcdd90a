"""``python -m bench.validity``: measure, then write the report."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench import validity
from bench.harness.services import PHOTOS, ROOT
from bench.validity import (
    ANGLE_PHOTOS,
    MODELS,
    UNUSED_PHOTOS,
    load_scenes,
    photos_present,
    run_seed,
)
from changewatch.worker.embed import Embedder, WeightsUnavailable


def main(argv: Sequence[str] | None = None) -> None:
    import torch

    from bench.report import git_commit
    from bench.validity.regions_report import regions_section, write_section
    from bench.validity.report import markdown, notes, plot, summarize

    parser = argparse.ArgumentParser(
        prog="python -m bench.validity", description=(validity.__doc__ or "").splitlines()[0]
    )
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
    kept = regions_section(args.out / "validity.md")  # python -m bench.validity.regions_report's
    (args.out / "validity.md").write_text(text)
    if kept:
        write_section(args.out / "validity.md", kept)
    plot(summaries, args.out / "validity.png")
    print(text)


if __name__ == "__main__":
    main()
