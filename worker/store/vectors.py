"""How vectors and sums cross the connection (the codec is the contract's:
``schema.vectors``), and the connection type the store's modules share."""

from __future__ import annotations

from typing import Any

import psycopg

from ...schema.vectors import decode_sum, decode_vector, encode_sum, encode_vector

__all__ = ["Conn", "decode_sum", "decode_vector", "encode_sum", "encode_vector"]

Conn = psycopg.Connection[Any]
