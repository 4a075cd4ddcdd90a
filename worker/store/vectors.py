"""How vectors and sums cross the connection: bytea in Postgres's own binary order.

Big-endian float4 is what SQL's ``float4send`` writes too, so SQL can build vectors;
numpy decodes them without a Python loop. Sums are exact int64 fixed point. An angle's
region vectors (and their sums) are one row-major (9, REGION_DIM) block.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import psycopg

Conn = psycopg.Connection[Any]

_F32 = np.dtype(">f4")
_I64 = np.dtype(">i8")


def encode_vector(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=_F32).tobytes()


def decode_vector(data: bytes | memoryview) -> np.ndarray:
    return np.frombuffer(data, dtype=_F32).astype(np.float32)


def decode_grid(data: bytes | memoryview | None) -> np.ndarray | None:
    """An angle's (9, REGION_DIM) region vectors; None for rows stored before regions."""
    return None if data is None else decode_vector(data).reshape(9, -1)


def decode_grid_sum(data: bytes | memoryview | None) -> np.ndarray | None:
    return None if data is None else decode_sum(data).reshape(9, -1)


def encode_sum(total: np.ndarray) -> bytes:
    return np.asarray(total, dtype=_I64).tobytes()


def decode_sum(data: bytes | memoryview) -> np.ndarray:
    return np.frombuffer(data, dtype=_I64).astype(np.int64)
