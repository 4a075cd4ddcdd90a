"""The CUDA path; skipped cleanly where there is no GPU (this project's CI has none)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from changewatch.worker.embed import Embedder
from changewatch.worker.score import cosine_distance

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]


def test_cuda_embeddings_match_the_cpu_path() -> None:
    """A GPU worker's bf16 embeddings agree with a CPU worker's, so histories can mix."""
    batch = np.random.default_rng(4).integers(0, 255, (40, 224, 224, 3), dtype=np.uint8)
    gpu, cpu = Embedder("random"), Embedder("random", precision="fp32")
    gpu.setup("cuda")
    cpu.setup("cpu")
    assert gpu.model_id == cpu.model_id
    # Growing and then reusing the pinned buffer must not leak rows between calls.
    for rows in (8, 40, 6):
        got, want = gpu.predict(batch[:rows]), cpu.predict(batch[:rows])
        assert max(cosine_distance(a, b) for a, b in zip(got, want, strict=True)) < 1e-4


def test_cuda_region_vectors_match_the_cpu_path() -> None:
    """Region vectors (pooling and projection on the GPU) agree with a CPU worker's."""
    batch = np.random.default_rng(5).integers(0, 255, (6, 224, 224, 3), dtype=np.uint8)
    gpu, cpu = Embedder("random"), Embedder("random", precision="fp32")
    gpu.setup("cuda")
    cpu.setup("cpu")
    got, want = gpu.features(batch).regions, cpu.features(batch).regions
    assert got.shape == want.shape == (6, 9, 128)
    pairs = zip(got.reshape(-1, 128), want.reshape(-1, 128), strict=True)
    assert max(cosine_distance(a, b) for a, b in pairs) < 1e-3
