"""The model-only ceiling: forward passes on ready uint8 tensors, nothing else."""

from __future__ import annotations

import os
import time

import numpy as np

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
) -> dict[str, float]:
    """Same model set-up as the fast pipeline's worker unless ``precision`` is given (then
    the seed's: that precision, BatchNorm not folded)."""
    embedder = Embedder(
        weights,
        precision or os.environ.get("CHANGEWATCH_PRECISION", "auto"),
        fold_batchnorm=precision is None,
        model=model,
    )
    embedder.setup(device)
    return {str(b): images_per_second(embedder, b, seconds) for b in batches}
