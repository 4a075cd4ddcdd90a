"""Region vectors: a 3x3 grid of each photo, pooled from the same forward pass.

Why this shape:

- One forward pass per photo, not nine: the backbone's stride-16 feature map (14x14 at
  224 px; worker/trunk.py says why not the last, 7x7 one) is pooled over each third of
  the photo. The pooling is exact-area: a feature cell that straddles two thirds counts
  in both by its covered fraction, so the nine regions tile the photo with equal weight
  and their mean is the map's global mean.
- Storage per angle at most the angle embedding's own: a map wider than ``REGION_DIM``
  (ResNet50's 1024 channels) is reduced to 128 by one fixed Gaussian random projection,
  seeded (Johnson-Lindenstrauss: inner products, hence cosine distances, are kept to a
  relative error of about sqrt(2 / 128), and the same matrix scales a region's score and
  its noise floor alike). Lite0's 112 channels are kept as they are. 9 x 128 = 1152
  floats per angle under ResNet50's 2048; 9 x 112 = 1008 under Lite0's 1280.
- The projection is linear, so the mean of projected vectors is the projection of the
  mean: running sums stay exact in int64 fixed point like the angles'.

Region (0, 0) is the top-left of the upright, centre-cropped square the model saw.
Changing the grid, the map, the width or the seed changes every region vector: bump the
model id's preprocessing version (worker.decode.PREPROCESS_VERSION) with it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from ..schema.regions import REGIONS as REGIONS  # the names, row-major

GRID = 3
REGION_DIM = 128
PROJECTION_SEED = 25


@lru_cache(maxsize=8)
def pooling_weights(cells: int, grid: int = GRID) -> np.ndarray:
    """(grid, cells) exact-area weights, rows summing to 1: row i averages the feature
    cells under the i-th 1/grid of the side, a straddling cell by its covered fraction."""
    weights = np.zeros((grid, cells), np.float64)
    for i in range(grid):
        lo, hi = i * cells / grid, (i + 1) * cells / grid
        for c in range(cells):
            weights[i, c] = max(0.0, min(hi, c + 1) - max(lo, c))
    return weights / weights.sum(axis=1, keepdims=True)


@lru_cache(maxsize=4)
def projection(channels: int, dim: int = REGION_DIM, seed: int = PROJECTION_SEED) -> np.ndarray:
    """(channels, dim) float32 Gaussian matrix / sqrt(dim), the same on every machine
    (numpy's PCG64 stream is fixed by its seed)."""
    rng = np.random.default_rng([seed, channels, dim])
    matrix = rng.standard_normal((channels, dim)) / np.sqrt(dim)
    return matrix.astype(np.float32)


def pool_regions(feature_map: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) float -> (N, GRID * GRID, C): each region's mean feature, row-major."""
    _, _, height, width = feature_map.shape
    rows = torch.from_numpy(pooling_weights(height)).to(feature_map)
    cols = torch.from_numpy(pooling_weights(width)).to(feature_map)
    pooled = torch.einsum("ih,nchw,jw->nijc", rows, feature_map, cols)
    return pooled.reshape(feature_map.shape[0], GRID * GRID, feature_map.shape[1])


def region_dim(channels: int) -> int:
    """The stored width of a region vector from a map of ``channels``."""
    return min(channels, REGION_DIM)


class RegionProjector:
    """Pooling and the fixed projection on the model's device (built once per worker)."""

    def __init__(self, channels: int, device: torch.device) -> None:
        self.matrix: torch.Tensor | None = None
        if channels > REGION_DIM:
            self.matrix = torch.from_numpy(projection(channels)).to(device)

    def __call__(self, feature_map: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, 9, region_dim(C)) float32 region vectors."""
        pooled = pool_regions(feature_map.float())
        return pooled if self.matrix is None else pooled @ self.matrix


def project(region_features: np.ndarray) -> np.ndarray:
    """(..., C) full-width region features -> (..., region_dim(C)), as stored; the
    benches' check of what the projection keeps."""
    channels = region_features.shape[-1]
    if channels <= REGION_DIM:
        return region_features.astype(np.float32)
    return region_features.astype(np.float32) @ projection(channels)
