"""Point WKB and PostgreSQL's packed binary values, with numpy and no geometry objects.

A 2D point's WKB, as ST_AsBinary writes it on a little-endian server, is 21
bytes: byte order 1, type 1 (uint32), then x and y as little-endian doubles.
A numpy structured dtype with exactly that layout turns coordinate arrays
into an Arrow binary column in one copy, bit for bit (-0.0 and every NaN
payload included), because the coordinates are never re-parsed.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa

POINT_WKB_BYTES: Final = 21
_NDR: Final = 1
_WKB_POINT: Final = 1

POINT_WKB: Final = np.dtype([("order", "u1"), ("type", "<u4"), ("x", "<f8"), ("y", "<f8")])
"""Packed (no alignment): itemsize 21, one WKB point per element."""

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class MalformedPacked(ValueError):
    """A packed value whose length does not fit its element size: a query bug, not data."""


def point_wkb(x: FloatArray, y: FloatArray) -> pa.BinaryArray:
    """An Arrow binary array of 2D NDR point WKB, one element per (x, y)."""
    if x.shape != y.shape:
        raise ValueError(f"{x.shape[0]} x values but {y.shape[0]} y values")
    count = int(x.shape[0])
    records = np.empty(count, dtype=POINT_WKB)
    records["order"] = _NDR
    records["type"] = _WKB_POINT
    records["x"] = x
    records["y"] = y
    offsets = np.arange(0, (count + 1) * POINT_WKB_BYTES, POINT_WKB_BYTES, dtype=np.int32)
    result = pa.Array.from_buffers(pa.binary(), count,
                                   [None, pa.py_buffer(offsets), pa.py_buffer(records)])
    assert isinstance(result, pa.BinaryArray)
    return result


def be_int64(packed: bytes | None) -> IntArray:
    """Big-endian int8 values as ``int8send`` packs them (``string_agg``), native int64."""
    return _unpack(packed, ">i8").astype(np.int64)


def be_float64(packed: bytes | None) -> FloatArray:
    """Big-endian float8 values as ``float8send`` packs them, native float64, bits kept."""
    return _unpack(packed, ">f8").astype(np.float64)


def _unpack(packed: bytes | None, dtype: str) -> npt.NDArray[np.generic]:
    if not packed:
        return np.empty(0, dtype=dtype)
    if len(packed) % 8:
        raise MalformedPacked(f"{len(packed)} bytes is not a whole number of 8-byte values")
    return np.frombuffer(packed, dtype=dtype)
