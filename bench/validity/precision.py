"""``python -m bench.validity.precision``: do INT8 scores agree with the float model's?

The validity set (bench.validity: a person's history of re-takes, then new re-takes and
variants with one angle changed, blurred or darkened, per seed) is scored with the
product's own path by one embedder per precision (fp32, bf16 autocast, int8: the compiled
program a worker loads). INT8 agrees (issue 24) if every angle score moves by at most
0.01 against both fp32 and bf16, and the separation verdicts of docs/validity.md stay the
same: the smallest another-scene relative change above the largest re-take one, and the
separation (median another-scene score over the largest re-take score) at the same
one-decimal value. Prints one JSON line; ``worker.int8.REFUSED`` quotes a failing run.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from bench.validity import ANGLE_PHOTOS, UNUSED_PHOTOS, load_scenes, run_seed
from bench.validity.report import summarize
from changewatch.worker import int8
from changewatch.worker.embed import Embedder

LIMIT = 0.01


def angle_scores(seed: dict[str, Any]) -> list[float]:
    """Every angle score of one seed in a fixed order: each re-take session's six, then
    each variant's changed/blurred/darkened angle."""
    out = [r["change_score"] for result in seed["retakes"] for r in result["per_angle"]]
    return out + [row["score"] for row in seed["variants"]]


def session_scores(seed: dict[str, Any]) -> list[float]:
    return [result["change_score"] for result in seed["retakes"]]


def verdicts(summary: dict[str, Any]) -> dict[str, Any]:
    """What docs/validity.md reads off a model's row."""
    changed_min = min(summary["changed_relatives"])
    retake_max = max(summary["retake_relatives"])
    return {
        "separation": round(summary["separation"], 1),
        "scene_above_retakes": changed_min > retake_max,
        "changed_relative_min": round(changed_min, 2),
        "retake_relative_max": round(retake_max, 2),
        "median_ratio": round(summary["median_ratio"], 1),
    }


def measure(model: str, weights: str, seeds: int, retakes: int, cache: str) -> dict[str, Any]:
    scenes = load_scenes([*ANGLE_PHOTOS.values(), *UNUSED_PHOTOS])
    runs: dict[str, dict[str, Any]] = {}
    for precision in ("fp32", "bf16", "int8"):
        embedder = Embedder(weights, precision, model=model, model_cache=cache)
        with int8.refusal_lifted(model):
            embedder.setup("cpu")
        results = [run_seed(embedder, scenes, s, retakes) for s in range(seeds)]
        runs[precision] = {
            "model_id": embedder.model_id,
            "angles": np.array([x for s in results for x in angle_scores(s)]),
            "sessions": np.array([x for s in results for x in session_scores(s)]),
            "retakes": [
                r["change_score"] for s in results for x in s["retakes"] for r in x["per_angle"]
            ],
            "verdicts": verdicts(summarize(model, embedder.model_id, results)),
        }
    out: dict[str, Any] = {"model": model, "weights": weights, "seeds": seeds}
    out["angle_scores"] = int(runs["fp32"]["angles"].size)
    out["median_retake_angle_score_fp32"] = round(float(np.median(runs["fp32"]["retakes"])), 4)
    for a, b in (("bf16", "fp32"), ("int8", "fp32"), ("int8", "bf16")):
        moved = np.abs(runs[a]["angles"] - runs[b]["angles"])
        out[f"{a}_vs_{b}"] = {
            "max_angle_move": round(float(moved.max()), 4),
            "median_angle_move": round(float(np.median(moved)), 4),
            "max_session_move": round(
                float(np.abs(runs[a]["sessions"] - runs[b]["sessions"]).max()), 4
            ),
        }
    out["verdicts"] = {p: r["verdicts"] for p, r in runs.items()}
    out["int8_model_id"] = runs["int8"]["model_id"]
    same = all(
        out["verdicts"]["int8"][k] == out["verdicts"][p][k]
        for p in ("fp32", "bf16")
        for k in ("separation", "scene_above_retakes")
    )
    within = max(out["int8_vs_fp32"]["max_angle_move"], out["int8_vs_bf16"]["max_angle_move"])
    out["int8_agrees"] = bool(within <= LIMIT and same)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.validity.precision", description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--retakes", type=int, default=4)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--weights", default="imagenet", help="'imagenet', 'random' or a file")
    parser.add_argument("--model-cache", default="", help="CHANGEWATCH_MODEL_CACHE")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    out = measure(args.model, args.weights, args.seeds, args.retakes, args.model_cache)
    out["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
