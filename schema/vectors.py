"""How vectors and sums cross the connection: bytea in Postgres's own binary order.

Shared by the worker's store (which writes them) and the result readers (symmetry reads
stored embeddings back). Big-endian float4 is what SQL's ``float4send`` writes too, so
SQL can build vectors; numpy decodes them without a Python loop. Sums are exact int64
fixed point.

A vector whose every value is a float16 (a worker with CHANGEWATCH_EMBEDDING_DTYPE=float16
rounds its embeddings so) is stored as big-endian float16 behind a 4-byte marker: half the
bytes, the same values read back. The marker is a float32 NaN, which no stored float32
vector starts with (embeddings are finite), so every reader tells the two apart by the
bytes alone, and rows of either kind can sit side by side.
"""

from __future__ import annotations

import numpy as np

__all__ = ["decode_sum", "decode_vector", "encode_sum", "encode_vector", "to_half"]

_F32 = np.dtype(">f4")
_F16 = np.dtype(">f2")
_I64 = np.dtype(">i8")
HALF_MARKER = b"\xff\xff\xff\xfe"  # a float32 NaN: never the start of a stored float32 vector


def encode_vector(vector: np.ndarray) -> bytes:
    """float16 when that loses nothing (the vector was rounded to float16), else float32."""
    values = np.asarray(vector, dtype=np.float32)
    half = values.astype(np.float16)
    if np.array_equal(half.astype(np.float32), values):
        return HALF_MARKER + half.astype(_F16).tobytes()
    return values.astype(_F32).tobytes()


def decode_vector(data: bytes | memoryview) -> np.ndarray:
    if bytes(data[:4]) == HALF_MARKER:
        return np.frombuffer(data, dtype=_F16, offset=4).astype(np.float32)
    return np.frombuffer(data, dtype=_F32).astype(np.float32)


def to_half(vectors: np.ndarray) -> np.ndarray:
    """Rounded to float16 and back: what a float16 store keeps, scored as it is kept."""
    return np.asarray(vectors).astype(np.float16).astype(np.float32)


def encode_sum(total: np.ndarray) -> bytes:
    return np.asarray(total, dtype=_I64).tobytes()


def decode_sum(data: bytes | memoryview) -> np.ndarray:
    return np.frombuffer(data, dtype=_I64).astype(np.int64)
