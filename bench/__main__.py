"""``python -m bench``: changewatch's throughput, side by side in one run.

1. the model-only ceiling (forward passes on ready tensors);
2. a seed-faithful reference pipeline (full-size decode and equalization, one image per
   forward pass) through real Redis, Postgres, the S3 server and a real worker;
3. the fast pipeline on the same photos and services, at several concurrencies, with
   the automatic precision (bf16 where the CPU has it) and with INT8 where it is allowed,
   as one worker process and as one per core (``launch --cpu N``: the compiled INT8
   program holds the GIL while it runs, so one process's model step stalls its own
   decode threads);
for ResNet50 and EfficientNet-Lite0, with each worker's cold start (process start to its
first finished job), per-stage times and CPU, and peak worker memory. Writes JSON, a
markdown table and a PNG.

``python -m bench decode-parts`` times each part of the decode stage alone instead
(bench/decode_parts.py).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from itertools import product
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
from changewatch.worker.launch import usable_cpus

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
        "--processes",
        type=int,
        nargs="+",
        default=sorted({1, usable_cpus()}),
        help="fast-pipeline worker processes sharing the cores, as `launch --cpu N` runs "
        "them (CPU only; default: one, and one per core as `--cpu auto` gives)",
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
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=["auto", "int8"],
        choices=["auto", "int8"],
        help="fast-pipeline precisions (int8: CPU only, where allowed; compiles once)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench")
    return parser.parse_args(argv)


# The two models, each with the weights it runs here (ResNet50's ImageNet weights cannot
# be downloaded on the dev machine: random ones, speed only).
MODELS = ("resnet50", "efficientnet_lite0")


def weights_of(model: str, args: argparse.Namespace) -> str:
    return args.weights if model == "resnet50" else "imagenet"


def int8_allowed(model: str) -> bool:
    from changewatch.worker.int8 import REFUSED

    return model not in REFUSED


def runs_int8(model: str, args: argparse.Namespace) -> bool:
    """Whether this run puts an INT8 worker on ``model``: asked for, CPU, not refused."""
    return "int8" in args.precisions and args.device == "cpu" and int8_allowed(model)


def model_only_runs(args: argparse.Namespace) -> dict[str, dict[str, dict[str, float]]]:
    """Images/s of the model alone, each precision in a process of its own: the seed's
    model step (fp32, batch 6), the fast one (auto: bf16 where the CPU has it), fp32 with
    the fast set-up, and INT8 (measured even where refused, for the record)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for model in args.models:
        weights = weights_of(model, args)
        print(f"model-only, {model} on {args.device} ...", flush=True)
        rates = {
            "seed": model_only.measure_apart(
                weights, args.device, [6], args.model_seconds, "fp32", model
            ),
            "fp32": model_only.measure_apart(
                weights, args.device, [6], args.model_seconds, None, model, "fp32"
            ),
            "auto": model_only.measure_apart(
                weights, args.device, BATCHES, args.model_seconds, None, model, "auto"
            ),
        }
        if args.device == "cpu" and "int8" in args.precisions:
            rates["int8"] = model_only.measure_apart(
                weights, args.device, BATCHES, args.model_seconds, None, model, "int8"
            )
        out[model] = rates
    return out


def prepare_int8(args: argparse.Namespace) -> dict[str, float]:
    """Build each allowed model's INT8 program before its worker starts, as an image
    build would (``prepare-model``); seconds each (near zero when already cached)."""
    seconds = {}
    for model in args.models:
        if not runs_int8(model, args):
            continue
        env = {
            **os.environ,
            "CHANGEWATCH_MODEL": model,
            "CHANGEWATCH_MODEL_WEIGHTS": weights_of(model, args),
            "CHANGEWATCH_PRECISION": "int8",
        }
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "changewatch.worker", "prepare-model"],
            env=env,
            check=True,
            capture_output=True,
        )
        seconds[model] = time.perf_counter() - started
    return seconds


def pipeline_runs(args: argparse.Namespace, photos: list[Path]) -> list[e2e.RunResult]:
    """Per model: the reference pipeline, then the fast one (auto precision, then INT8
    where allowed) at each concurrency, on fresh services. Every worker starts with one
    session already queued: its cold start."""
    fresh_database(os.environ["DATABASE_URL"])
    flush_redis(os.environ["CELERY_BROKER_URL"], os.environ["CELERY_RESULT_BACKEND"])
    runs = []
    with s3_bucket(BUCKET) as s3:
        uploads = e2e.upload_sessions(s3, BUCKET, photos, args.sessions)
        first = e2e.upload_sessions(s3, BUCKET, photos, 1)[0]
        producer = Producer()
        for model in args.models:
            env = {
                "CHANGEWATCH_MODEL": model,
                "CHANGEWATCH_MODEL_WEIGHTS": weights_of(model, args),
                "CHANGEWATCH_DEVICE": args.device,
            }
            print(f"{model}: reference pipeline, {args.sessions} sessions ...", flush=True)
            runs.append(
                e2e.run(
                    f"{model}-reference",
                    producer,
                    uploads,
                    {**env, "CHANGEWATCH_PRECISION": "auto"},
                    "reference",
                    args.reference_concurrency,
                    args.out,
                    first,
                )
            )
            precisions = [p for p in args.precisions if p != "int8" or runs_int8(model, args)]
            layouts = args.processes if args.device == "cpu" else [1]
            for precision, processes, c in product(precisions, layouts, args.concurrency):
                layout = f"-p{processes}" if processes > 1 else ""
                label = f"{model}-fast-{precision}-c{c}{layout}"
                print(f"{label} ...", flush=True)
                runs.append(
                    e2e.run(
                        label,
                        producer,
                        uploads,
                        {**env, "CHANGEWATCH_PRECISION": precision},
                        "fast",
                        c,
                        args.out,
                        first,
                        processes,
                    )
                )
    return runs


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def build_report(
    args: argparse.Namespace,
    photos: list[Path],
    models: dict[str, dict[str, dict[str, float]]],
    runs: list[e2e.RunResult],
    prepared: dict[str, float],
) -> dict[str, Any]:
    from changewatch.worker.embed import cpu_has_fast_bf16
    from changewatch.worker.int8 import cpu_isa

    per_model: dict[str, Any] = {}
    for model in args.models:
        mine = [r for r in runs if r.model == model]
        reference = next(r for r in mine if r.pipeline == "reference")
        rates = models.get(model, {})
        summary: dict[str, Any] = {
            "model_only_images_per_s": rates,
            "int8_allowed": int8_allowed(model),
            "reference_sessions_per_s": reference.sessions_per_s,
        }
        for precision in ("auto", "int8"):
            fast = [r for r in mine if r.pipeline == "fast" and r.precision == precision]
            if fast:
                best = max(fast, key=lambda r: r.sessions_per_s)
                summary[f"best_{precision}"] = best.label
                summary[f"speedup_{precision}_vs_reference"] = (
                    best.sessions_per_s / reference.sessions_per_s
                )
        if "int8" in rates and "auto" in rates:
            summary["int8_over_auto_model_only_batch6"] = rates["int8"]["6"] / rates["auto"]["6"]
        per_model[model] = summary
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": {
            "cpus": os.cpu_count(),
            "cpu": cpu_model(),
            "isa": cpu_isa(),
            "fast_bf16": cpu_has_fast_bf16(),
            "platform": platform.platform(),
            "device": args.device,
            "weights": args.weights,
        },
        "photos": [p.name for p in photos],
        "int8_prepare_s": prepared,
        "models": per_model,
        "runs": [r.as_dict() for r in runs],
        "peak_worker_rss_gib": max(r.peak_rss_bytes for r in runs if r.pipeline == "fast") / 2**30,
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
    prepared = prepare_int8(args)
    runs = pipeline_runs(args, photos)
    save(
        build_report(args, photos, models, runs, prepared),
        args.out,
        "bench",
        markdown,
        plot,
        "throughput.png",
    )
    return 0 if all(r.succeeded == r.sessions for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
