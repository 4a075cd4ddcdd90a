"""``python -m bench``: changewatch's throughput, side by side in one run.

1. the model-only ceiling (forward passes on ready tensors);
2. a seed-faithful reference pipeline (full-size decode and equalization, one image per
   forward pass) through real Redis, Postgres, the S3 server and a real worker;
3. the fast pipeline on the same photos and services, at several concurrencies;
with per-stage times and peak worker memory. Writes JSON, a markdown table and a PNG.

``python -m bench decode-parts`` times each part of the decode stage alone instead
(bench/decode_parts.py).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness.services import own_services

# The benchmark's own broker and database (it flushes and recreates them), never the
# shell's; the worker processes it starts inherit them, and Producer() reads them.
os.environ.update(
    own_services(
        "CHANGEWATCH_BENCH",
        broker="redis://127.0.0.1:6379/4",
        backend="redis://127.0.0.1:6379/5",
        database="postgresql://postgres@127.0.0.1:5432/changewatch_bench",
    )
)

from bench import e2e, model_only
from bench.harness.services import PHOTOS, ROOT, flush_redis, fresh_database, s3_bucket
from bench.report import git_commit, markdown, plot, save
from changewatch.producer import Producer

BUCKET = "changewatch-bench"
# 6 and 12: the batches a CPU worker runs (one or two whole sessions); 32 for GPUs.
BATCHES = [1, 6, 12, 32]


def camera_photos() -> list[Path]:
    """The real phone and camera photos (3-15 MP), the realistic decode cost."""
    folder = PHOTOS / "camera"
    photos = sorted(p for p in folder.glob("*.jpg") if p.stat().st_size > 300_000)
    if not photos:
        sys.exit(f"no camera photos under {folder}; set CHANGEWATCH_PHOTOS")
    return photos


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--sessions", type=int, default=24, help="sessions per run")
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[1, 2, 4, 8],
        help="fast-pipeline worker concurrencies to sweep",
    )
    parser.add_argument(
        "--reference-concurrency",
        type=int,
        default=1,
        help="the seed analyzed one session at a time",
    )
    parser.add_argument("--model-seconds", type=float, default=3.0)
    parser.add_argument("--device", default=os.environ.get("CHANGEWATCH_DEVICE", "cpu"))
    parser.add_argument("--weights", default=os.environ.get("CHANGEWATCH_MODEL_WEIGHTS", "random"))
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench")
    return parser.parse_args(argv)


def model_only_runs(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Images/s of the model alone: the ceiling, the seed's model step, and Lite0."""
    print(f"model-only ceiling on {args.device} ...", flush=True)
    ceiling = model_only.measure(args.weights, args.device, BATCHES, args.model_seconds)
    # The seed's model step (fp32, one session per pass), the yardstick the targets were set on.
    seed = model_only.measure(args.weights, args.device, [6], args.model_seconds, "fp32")
    # The embedded ImageNet model beside it, in the same run.
    print(f"model-only, efficientnet_lite0 on {args.device} ...", flush=True)
    lite0 = model_only.measure(
        "imagenet", args.device, BATCHES, args.model_seconds, model="efficientnet_lite0"
    )
    return {"ceiling": ceiling, "seed": seed, "lite0": lite0}


def pipeline_runs(args: argparse.Namespace, photos: list[Path]) -> list[e2e.RunResult]:
    """The reference pipeline, then the fast one at each concurrency, on fresh services."""
    fresh_database(os.environ["DATABASE_URL"])
    flush_redis(os.environ["CELERY_BROKER_URL"], os.environ["CELERY_RESULT_BACKEND"])
    with s3_bucket(BUCKET) as s3:
        uploads = e2e.upload_sessions(s3, BUCKET, photos, args.sessions)
        producer = Producer()
        env = {"CHANGEWATCH_MODEL_WEIGHTS": args.weights, "CHANGEWATCH_DEVICE": args.device}
        print(f"reference pipeline, {args.sessions} sessions ...", flush=True)
        runs = [
            e2e.run(
                "reference",
                producer,
                uploads,
                env,
                "reference",
                args.reference_concurrency,
                args.out,
            )
        ]
        for c in args.concurrency:
            print(f"fast pipeline, concurrency {c} ...", flush=True)
            runs.append(e2e.run(f"fast-c{c}", producer, uploads, env, "fast", c, args.out))
    return runs


def build_report(
    args: argparse.Namespace,
    photos: list[Path],
    models: dict[str, dict[str, float]],
    runs: list[e2e.RunResult],
) -> dict[str, Any]:
    reference = runs[0]
    fast = max(runs[1:], key=lambda r: r.sessions_per_s)
    model_s_per_session = 6 / max(models["ceiling"].values())
    seed_s_per_session = 6 / models["seed"]["6"]
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "device": args.device,
            "weights": args.weights,
        },
        "photos": [p.name for p in photos],
        "model_only_images_per_s": models["ceiling"],
        "lite0_model_only_images_per_s": models["lite0"],
        "model_only_s_per_session": model_s_per_session,
        "runs": [r.as_dict() for r in runs],
        "best_fast_run": fast.label,
        "speedup_vs_reference": fast.sessions_per_s / reference.sessions_per_s,
        "e2e_over_model_only": fast.s_per_session / model_s_per_session,
        "model_only_fp32_s_per_session": seed_s_per_session,
        "e2e_over_model_only_fp32": fast.s_per_session / seed_s_per_session,
        "peak_worker_rss_gib": max(r.peak_rss_bytes for r in runs[1:]) / 2**30,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["decode-parts"]:
        from bench import decode_parts

        return decode_parts.main(argv[1:])
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    photos = camera_photos()
    models = model_only_runs(args)
    runs = pipeline_runs(args, photos)
    save(
        build_report(args, photos, models, runs),
        args.out,
        "bench",
        markdown,
        plot,
        "throughput.png",
    )
    return 0 if all(r.succeeded == r.sessions for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
