"""How vectors and sums cross the connection: bytea in Postgres's own binary order.

Shared by the worker's store (which writes them) and the result readers (symmetry reads
stored embeddings back). Big-endian float4 is what SQL's ``float4send`` writes too, so
SQL can build vectors; numpy decodes them without a Python loop. Sums are exact int64
fixed point.
"""

from __future__ import annotations

import numpy as np

__all__ = ["decode_sum", "decode_vector", "encode_sum", "encode_vector"]

_F32 = np.dtype(">f4")
_I64 = np.dtype(">i8")


def encode_vector(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=_F32).tobytes()


def decode_vector(data: bytes | memoryview) -> np.ndarray:
    return np.frombuffer(data, dtype=_F32).astype(np.float32)


def encode_sum(total: np.ndarray) -> bytes:
    return np.asarray(total, dtype=_I64).tobytes()


def decode_sum(data: bytes | memoryview) -> np.ndarray:
    return np.frombuffer(data, dtype=_I64).astype(np.int64)
