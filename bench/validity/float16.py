"""``python -m bench.validity.float16``: does storing embeddings as float16 hold?

The validity set (bench.validity: a person's history of re-takes, then new re-takes and
variants with one angle changed, blurred or darkened, per seed), scored twice with the
product's own path: once with the embedder's float32 vectors, once with every vector
rounded to float16 and back, as a worker storing float16 (CHANGEWATCH_EMBEDDING_DTYPE)
scores, sums and stores them. It holds if every score (per angle and per session) moves by
less than 1e-3 and the separation (median another-scene score over the largest re-take
score, docs/validity.md) stays the same. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from bench.validity import ANGLE_PHOTOS, UNUSED_PHOTOS, load_scenes, run_seed
from bench.validity.report import summarize
from changewatch.worker.embed import Embedder


class Float16Embedder:
    """The embedder, its vectors rounded to float16 (what storage keeps) and back."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner

    def predict(self, batch: Any) -> np.ndarray:
        return self.inner.predict(batch).astype(np.float16).astype(np.float32)


def _scores(seed: dict[str, Any]) -> list[float]:
    """Every score of one seed, in a fixed order: re-takes (session, then per angle),
    then the variants' angle and session scores."""
    out: list[float] = []
    for result in seed["retakes"]:
        out.append(result["change_score"])
        out += [r["change_score"] for r in result["per_angle"]]
    for row in seed["variants"]:
        out.append(row["score"])
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.validity.float16", description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--retakes", type=int, default=4)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--weights", default="imagenet", help="'imagenet', 'random' or a file")
    args = parser.parse_args(argv)
    label, weights, model = f"{args.model}, {args.weights}", args.weights, args.model
    started = time.perf_counter()
    scenes = load_scenes([*ANGLE_PHOTOS.values(), *UNUSED_PHOTOS])
    embedder = Embedder(weights, model=model)
    embedder.setup("cpu")
    half = Float16Embedder(embedder)
    full_seeds = [run_seed(embedder, scenes, s, args.retakes) for s in range(args.seeds)]
    half_seeds = [run_seed(half, scenes, s, args.retakes) for s in range(args.seeds)]  # type: ignore[arg-type]
    full = np.array([x for s in full_seeds for x in _scores(s)])
    moved = np.abs(np.array([x for s in half_seeds for x in _scores(s)]) - full)
    relative_full = [v["relative"] for s in full_seeds for v in s["variants"]]
    relative_half = [v["relative"] for s in half_seeds for v in s["variants"]]
    a = summarize(label, embedder.model_id, full_seeds)
    b = summarize(label, embedder.model_id, half_seeds)
    same_separation = round(a["separation"], 1) == round(b["separation"], 1)
    out = {
        "model_id": embedder.model_id,
        "seeds": args.seeds,
        "scores": int(full.size),
        "max_score_move": float(moved.max()),
        "median_score_move": float(np.median(moved)),
        "max_relative_change_move": float(
            np.max(np.abs(np.subtract(relative_half, relative_full)))
        ),
        "separation_float32": round(a["separation"], 3),
        "separation_float16": round(b["separation"], 3),
        "median_ratio_float32": round(a["median_ratio"], 2),
        "median_ratio_float16": round(b["median_ratio"], 2),
        "holds": bool(moved.max() < 1e-3 and same_separation),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
