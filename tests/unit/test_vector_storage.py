"""Embeddings as stored: float32 as the model gives them, float16 when rounded so
(CHANGEWATCH_EMBEDDING_DTYPE=float16), told apart by their bytes alone; sums packed, and
the raw ones stored before that read back alike."""

from __future__ import annotations

import numpy as np
import pytest

from changewatch.schema.vectors import (
    HALF_MARKER,
    SUM_MARKER,
    decode_sum,
    decode_vector,
    encode_sum,
    encode_vector,
    to_half,
)
from changewatch.settings import Settings
from changewatch.worker import score


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


def _sum(rng: np.random.Generator, sessions: int, half: bool = False) -> np.ndarray:
    vectors = rng.normal(0.0, 1.0, (sessions, 2048)).astype(np.float32)
    return score.to_fixed(to_half(vectors) if half else vectors).sum(axis=0)


@pytest.mark.parametrize("half", [False, True])
def test_a_sum_is_packed_and_reads_back_bit_identical(half: bool) -> None:
    """~35 significant bits of 64: a person's sums take well under their raw bytes."""
    total = _sum(np.random.default_rng(2), 170, half)
    data = encode_sum(total)
    assert data.startswith(SUM_MARKER) and len(data) < 0.6 * 8 * total.size
    back = decode_sum(data)
    assert back.dtype == np.int64 and np.array_equal(back, total)


def test_any_int64_values_read_back_exactly() -> None:
    rng, extremes = np.random.default_rng(4), np.iinfo(np.int64)
    cases = [np.zeros(0, np.int64), np.array([extremes.min, extremes.max, 0, -1])]
    cases += [np.full(7, -5), np.full(3, extremes.max)]
    for bits in (1, 7, 8, 9, 33, 48, 63, 64):
        cases.append(rng.integers(-(2 ** (bits - 1)), 2 ** (bits - 1), 500, dtype=np.int64))
    for values in cases:
        assert np.array_equal(decode_sum(encode_sum(values)), values)


def test_a_sum_stored_before_the_packing_still_reads_back() -> None:
    total = _sum(np.random.default_rng(3), 40)
    assert np.array_equal(decode_sum(total.astype(">i8").tobytes()), total)
