"""Point WKB from coordinates, bit for bit, and the packed values PostgreSQL sends."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import shapely

from spatialjoin_worker.point_wkb import MalformedPacked, be_float64, be_int64, point_wkb

pytestmark = pytest.mark.unit


def test_point_wkb_matches_shapely_and_postgis_layout() -> None:
    x = np.array([1.5, -104.80000000000001, 0.0, 180.0])
    y = np.array([-2.25, 35.2, -0.0, -90.0])
    wkb = point_wkb(x, y).to_pylist()
    expected = [bytes(shapely.to_wkb(shapely.Point(a, b), byte_order=1)) for a, b in
                zip(x, y, strict=True)]
    assert wkb == expected
    assert wkb[0] == struct.pack("<BIdd", 1, 1, 1.5, -2.25)


def test_negative_zero_and_nan_payloads_survive() -> None:
    odd_nan = struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000123))[0]
    (wkb,) = point_wkb(np.array([-0.0]), np.array([odd_nan])).to_pylist()
    assert wkb[5:13] == struct.pack("<d", -0.0)
    assert wkb[13:21] == struct.pack("<Q", 0x7FF8000000000123)


def test_empty_input_gives_an_empty_array() -> None:
    assert len(point_wkb(np.empty(0), np.empty(0))) == 0


def test_mismatched_coordinates_are_refused() -> None:
    with pytest.raises(ValueError, match="2 x values but 1 y values"):
        point_wkb(np.zeros(2), np.zeros(1))


def test_packed_big_endian_values() -> None:
    ids = np.array([1, -5, 2**62], dtype=">i8").tobytes()
    assert be_int64(ids).tolist() == [1, -5, 2**62]
    assert be_float64(np.array([1.5, -0.0], dtype=">f8").tobytes()).tolist() == [1.5, -0.0]
    assert be_int64(None).shape == (0,)
    with pytest.raises(MalformedPacked):
        be_int64(b"\x00" * 9)
