"""How vectors and sums cross the connection: bytea in Postgres's own binary order.

Shared by the worker's store (which writes them) and the result readers (symmetry reads
stored embeddings back). Big-endian float4 is what SQL's ``float4send`` writes too, so
SQL can build vectors; numpy decodes them without a Python loop. Sums are exact int64
fixed point.

A sum is stored packed (``encode_sum``): the values less their minimum, cut to the bytes
the largest needs, split into byte planes (every value's lowest byte, then the next), and
a plane of few distinct bytes (the high ones; the low ones are random) deflated when that
makes it smaller. A person's sums are ~35 significant bits of 64, so a checkpoint takes
~54% of the raw bytes (~45% with float16 embeddings) and its WAL with it; every value
reads back bit-identical. A packed sum starts with a marker no raw sum starts with
(int64's minimum, which no exact sum reaches: |fixed point| <= 2^48 per session), so raw
sums (big-endian int64, as the release before the packing stores them in
``baseline_sums``) read back as they are. Packed ones live in ``packed_sums``, where a
reader of that release never looks (migration 0012).

A vector whose every value is a float16 (a worker with CHANGEWATCH_EMBEDDING_DTYPE=float16
rounds its embeddings so) is stored as big-endian float16 behind a 4-byte marker: half the
bytes, the same values read back. The marker is a float32 NaN, which no stored float32
vector starts with (embeddings are finite), so every reader tells the two apart by the
bytes alone, and rows of either kind can sit side by side.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

__all__ = [
    "SUM_MARKER",
    "decode_sum",
    "decode_vector",
    "encode_sum",
    "encode_vector",
    "to_half",
]

_F32 = np.dtype(">f4")
_F16 = np.dtype(">f2")
_I64 = np.dtype(">i8")
HALF_MARKER = b"\xff\xff\xff\xfe"  # a float32 NaN: never the start of a stored float32 vector
SUM_MARKER = b"\x80" + bytes(7)  # int64's minimum: never the first value of a raw sum
# After the marker: version, byte width, value count, base (the minimum, as uint64).
_SUM_HEADER = struct.Struct(">BBIQ")
_PLANE_LENGTH = struct.Struct(">I")  # a plane's stored bytes: the count when raw
_U64 = np.dtype("<u8")
_DEFLATE_DISTINCT = 128  # a plane with more distinct bytes gains little from deflating


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
    """The sum packed (module docstring); ``decode_sum`` gives back every bit."""
    signed = np.asarray(total, dtype=np.int64).ravel()
    values = signed.view(np.uint64)
    base = np.int64(signed.min()).view(np.uint64) if values.size else np.uint64(0)
    offsets = values - base  # modulo 2^64: the base's own wrap undoes it on the way back
    width = (int(offsets.max()).bit_length() + 7) // 8 if values.size else 0
    planes = offsets.astype(_U64).view(np.uint8).reshape(-1, 8)[:, :width].T
    parts = [SUM_MARKER, _SUM_HEADER.pack(1, width, values.size, int(base))]
    for plane in planes:
        raw = plane.tobytes()
        stored = raw
        # A plane of random bytes (the low ones) does not deflate: it is not tried.
        if np.count_nonzero(np.bincount(plane, minlength=256)) <= _DEFLATE_DISTINCT:
            packed = zlib.compress(raw, 1)
            stored = packed if len(packed) < len(raw) else raw
        parts += [_PLANE_LENGTH.pack(len(stored)), stored]
    return b"".join(parts)


def decode_sum(data: bytes | memoryview) -> np.ndarray:
    """A stored sum, packed or raw (written before the packing)."""
    data = memoryview(data)
    if bytes(data[:8]) != SUM_MARKER:
        return np.frombuffer(data, dtype=_I64).astype(np.int64)
    version, width, count, base = _SUM_HEADER.unpack_from(data, 8)
    if version != 1:
        raise ValueError(f"unknown sum encoding {version}")
    bytes_ = np.zeros((count, 8), np.uint8)
    at = 8 + _SUM_HEADER.size
    for plane in range(width):
        (size,) = _PLANE_LENGTH.unpack_from(data, at)
        at += _PLANE_LENGTH.size
        stored = data[at : at + size]
        at += size
        bytes_[:, plane] = np.frombuffer(
            stored if size == count else zlib.decompress(stored), np.uint8
        )
    values = bytes_.view(_U64).ravel()
    values += np.uint64(base)
    return values.view(np.int64)
