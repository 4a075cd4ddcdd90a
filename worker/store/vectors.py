"""How vectors and sums cross the connection (the codec is the contract's:
``schema.vectors``), and the connection type the store's modules share. An angle's
region vectors (and their sums) are one row-major (9, region dim) block."""

from __future__ import annotations

from typing import Any

import numpy as np
import psycopg

from ...schema.vectors import decode_sum, decode_vector, encode_sum, encode_vector

__all__ = [
    "Conn",
    "decode_grid",
    "decode_grid_sum",
    "decode_sum",
    "decode_vector",
    "encode_sum",
    "encode_vector",
]

Conn = psycopg.Connection[Any]


def decode_grid(data: bytes | memoryview | None) -> np.ndarray | None:
    """An angle's (9, region dim) region vectors; None for rows stored before regions."""
    return None if data is None else decode_vector(data).reshape(9, -1)


def decode_grid_sum(data: bytes | memoryview | None) -> np.ndarray | None:
    return None if data is None else decode_sum(data).reshape(9, -1)
