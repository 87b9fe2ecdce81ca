"""Unpacking per-polygon rows: ids, member WKBs and bounds, in order."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import shapely

from spatialjoin_worker.groups import MalformedGroup, raw_schema, unpack

pytestmark = pytest.mark.unit

SCHEMA = raw_schema(pa.int64(), pa.int64())


def _ids(*ids: int) -> bytes:
    return np.array(ids, dtype=">i8").tobytes()


def _collection(*geoms: shapely.Geometry) -> bytes:
    collect = shapely.multipoints if all(g.geom_type == "Point" for g in geoms) else (
        shapely.geometrycollections)
    return bytes(shapely.to_wkb(collect(list(geoms)), byte_order=1))


def test_points_are_cut_out_byte_for_byte() -> None:
    a, b, c = shapely.Point(1, 2), shapely.Point(3.5, -4), shapely.Point(-1, 0)
    rows = [(10, True, 5, _ids(5, 9), _collection(a, b)), (11, False, 7, _ids(7), _collection(c))]
    batch = unpack(rows, SCHEMA)
    assert batch.column("domain_id").to_pylist() == [10, 10, 11]
    assert batch.column("feature_id").to_pylist() == [5, 9, 7]
    assert batch.column("geometry").to_pylist() == [
        bytes(shapely.to_wkb(g, byte_order=1)) for g in (a, b, c)]
    assert batch.column("xmin").to_pylist() == [1, 3.5, -1]
    assert batch.column("ymax").to_pylist() == [2, -4, 0]
    assert batch.column("domain_geometry_valid").to_pylist() == [True, True, False]


def test_non_point_members_go_through_shapely() -> None:
    square = shapely.box(0, 0, 2, 1)
    point = shapely.Point(5, 5)
    batch = unpack([(1, True, 1, _ids(1, 2), _collection(square, point))], SCHEMA)
    geoms = shapely.from_wkb(batch.column("geometry").to_numpy(zero_copy_only=False))
    assert shapely.equals(geoms[0], square) and shapely.equals(geoms[1], point)
    assert batch.column("xmax").to_pylist() == [2, 5]


def test_id_types_follow_the_source() -> None:
    schema = raw_schema(pa.int32(), pa.int64())
    batch = unpack([(1, True, 1, _ids(1), _collection(shapely.Point(0, 0)))], schema)
    assert batch.schema.field("domain_id").type == pa.int32()


def test_mismatched_counts_are_refused() -> None:
    rows = [(1, True, 1, _ids(1, 2), _collection(shapely.Point(0, 0)))]
    with pytest.raises(MalformedGroup, match="2 points but 21 bytes"):
        unpack(rows, SCHEMA)


def test_empty_batch() -> None:
    assert unpack([], SCHEMA).num_rows == 0
