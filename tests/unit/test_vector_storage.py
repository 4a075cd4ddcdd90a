"""Embeddings as stored: float32 as the model gives them, float16 when rounded so
(CHANGEWATCH_EMBEDDING_DTYPE=float16), told apart by their bytes alone."""

from __future__ import annotations

import numpy as np
import pytest

from changewatch.schema.vectors import HALF_MARKER, decode_vector, encode_vector, to_half
from changewatch.settings import Settings


def test_a_model_vector_keeps_every_float32_bit() -> None:
    vector = np.random.default_rng(0).gamma(1.0, 0.5, 2048).astype(np.float32)
    data = encode_vector(vector)
    assert len(data) == 4 * 2048
    assert np.array_equal(decode_vector(data), vector)


def test_a_rounded_vector_takes_half_the_bytes_and_reads_back_exactly() -> None:
    vector = to_half(np.random.default_rng(1).normal(0.0, 1.0, (9, 128)))
    data = encode_vector(vector)
    assert data.startswith(HALF_MARKER) and len(data) == 4 + 2 * 9 * 128
    assert np.array_equal(decode_vector(data).reshape(9, 128), vector)


def test_the_setting_takes_float32_or_float16_only() -> None:
    assert Settings.from_env({}).embedding_dtype == "float32"
    half = Settings.from_env({"CHANGEWATCH_EMBEDDING_DTYPE": "float16"})
    assert half.embedding_dtype == "float16"
    with pytest.raises(ValueError):
        Settings.from_env({"CHANGEWATCH_EMBEDDING_DTYPE": "int8"})
