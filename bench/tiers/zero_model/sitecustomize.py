"""The tiers bench's zero-cost model: on PYTHONPATH of its workers only (bench.tiers).

Python imports ``sitecustomize`` at start-up; this one replaces the worker's model with one
that costs nothing: ``setup`` builds no network, ``features`` gives each image a 2048-d
vector and nine 128-d region vectors drawn from a generator seeded by a few of its
pixels (random-looking, as real features are to storage). Everything else the worker does
(fetch, decode, score, store, notify) is the product's own, so what the services do per
session is what they do behind a GPU.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from changewatch.worker import embed


def _setup(self: Any, device: str = "auto") -> None:
    """No network; the model id the worker registers (its architecture and weights')."""
    self._model = object()
    self.model_id = embed.model_id_for(self.weights, self.architecture.name)


def _features(self: Any, images: np.ndarray, fp32: bool = False) -> embed.Features:
    vectors, regions = [], []
    for image in images:
        rng = np.random.default_rng(zlib.crc32(np.ascontiguousarray(image[::16, ::16]).data))
        vectors.append(rng.gamma(1.0, 0.5, embed.EMBEDDING_DIM).astype(np.float32))
        regions.append(rng.normal(0.0, 1.0, (9, 128)).astype(np.float32))
    return embed.Features(np.stack(vectors), np.stack(regions))


embed.Embedder.setup = _setup  # type: ignore[method-assign]
embed.Embedder.features = _features  # type: ignore[method-assign]
