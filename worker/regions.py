"""Region embeddings: a 3x3 grid of each photo, pooled from the same forward pass.

Why this shape:

- One forward pass per photo, not nine: the backbone's last feature map (7x7 for a
  224-px input, ResNet50 and EfficientNet-Lite0 alike) is pooled over each third of the
  photo. The pooling is exact-area: cell 2 of the 7 straddles the first and second
  thirds and counts 1/3 and 2/3 in them, so the nine regions tile the photo with equal
  weight and their mean *is* the global average pool (the angle's embedding), before
  projection.
- Storage per angle at most the angle embedding's own: each region vector is reduced to
  ``REGION_DIM`` (128) by one fixed Gaussian random projection, seeded, the same for
  every model of one width (Johnson-Lindenstrauss: inner products and hence cosine
  distances are kept to a relative error of about sqrt(2 / 128), the same factor for
  every session, so a region's score and its noise floor are scaled alike). 9 x 128 =
  1152 floats per angle, under Lite0's 1280 and ResNet50's 2048.
- The projection is linear, so the mean of projected vectors is the projection of the
  mean: running sums stay exact in int64 fixed point like the angles'.

Region (0, 0) is the top-left of the upright, centre-cropped square the model saw.
Changing the grid, the width or the seed changes every region vector: bump the model
id's preprocessing version (worker.decode.PREPROCESS_VERSION) with it.
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


class RegionProjector:
    """The fixed projection on the model's device (built once per worker)."""

    def __init__(self, channels: int, device: torch.device) -> None:
        self.matrix = torch.from_numpy(projection(channels)).to(device)

    def __call__(self, feature_map: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, 9, REGION_DIM) float32 region vectors."""
        return pool_regions(feature_map.float()) @ self.matrix


def project(region_features: np.ndarray) -> np.ndarray:
    """(..., C) full-width region features -> (..., REGION_DIM); the benches' check of
    what the projection keeps."""
    return region_features.astype(np.float32) @ projection(region_features.shape[-1])
