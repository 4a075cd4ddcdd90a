"""The model-only ceiling: forward passes on ready uint8 tensors, nothing else.

``python -m bench.model_only --precision int8 ...`` measures one precision in a process of
its own and prints one JSON line: an AOTInductor program's OpenMP threads and eager torch's
compete for the two cores when both run in one process (measured: bf16 batch 6 fell from
28 to 5 images/s after an INT8 program had run), and a worker only ever runs one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from changewatch.worker import int8
from changewatch.worker.embed import Embedder


def images_per_second(embedder: Embedder, batch: int, seconds: float = 3.0) -> float:
    """Best steady rate at this batch size: warm once, then repeat for ``seconds``."""
    images = np.random.default_rng(0).integers(0, 255, (batch, 224, 224, 3), dtype=np.uint8)
    embedder.predict(images)
    done, started = 0, time.perf_counter()
    while True:
        embedder.predict(images)
        done += batch
        elapsed = time.perf_counter() - started
        if elapsed >= seconds and done >= 2 * batch:
            return done / elapsed


def measure(
    weights: str,
    device: str,
    batches: list[int],
    seconds: float,
    precision: str | None = None,
    model: str = "resnet50",
    fast_precision: str | None = None,
    model_cache: str = "",
) -> dict[str, float]:
    """Same model set-up as the fast pipeline's worker unless ``precision`` is given (then
    the seed's: that precision, BatchNorm not folded). ``fast_precision`` overrides the
    fast worker's CHANGEWATCH_PRECISION (int8 is measured even where refused)."""
    fast = fast_precision or os.environ.get("CHANGEWATCH_PRECISION", "auto")
    embedder = Embedder(
        weights,
        precision or fast,
        fold_batchnorm=precision is None,
        model=model,
        model_cache=model_cache,
    )
    with int8.refusal_lifted(model):
        embedder.setup(device)
    return {str(b): images_per_second(embedder, b, seconds) for b in batches}


def measure_apart(
    weights: str,
    device: str,
    batches: list[int],
    seconds: float,
    precision: str | None = None,
    model: str = "resnet50",
    fast_precision: str | None = None,
) -> dict[str, float]:
    """``measure`` in a fresh process (see the module's docstring)."""
    command = [sys.executable, "-m", "bench.model_only", "--weights", weights, "--device", device]
    command += ["--model", model, "--seconds", str(seconds), "--batches", *map(str, batches)]
    if precision:
        command += ["--seed-precision", precision]
    if fast_precision:
        command += ["--precision", fast_precision]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.model_only", description=__doc__)
    parser.add_argument("--weights", default="random")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 6])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--precision", help="the fast worker's CHANGEWATCH_PRECISION")
    parser.add_argument("--seed-precision", help="the seed's model step at this precision")
    args = parser.parse_args(argv)
    rates = measure(
        args.weights,
        args.device,
        args.batches,
        args.seconds,
        args.seed_precision,
        args.model,
        args.precision,
        os.environ.get("CHANGEWATCH_MODEL_CACHE", ""),
    )
    print(json.dumps(rates))


if __name__ == "__main__":
    main()
