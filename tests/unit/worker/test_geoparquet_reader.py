"""The GeoParquet readers' pure parts: PostGIS's float32 boxes, point WKB, local files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely
from pyarrow import fs

from spatialjoin_contracts.models import BBox
from spatialjoin_contracts.models.job import PointSource, PolygonSource
from spatialjoin_worker.geoparquet_source import (
    GeoParquetSourceError,
    _point_xy,
    float32_outward,
    read_points,
    read_polygons,
)
from spatialjoin_worker.settings import InvalidGeometryPolicy
from spatialjoin_worker.tiling import Box
from spatialjoin_worker.vector_source import NullFeatureId

pytestmark = pytest.mark.unit


def test_float32_rounding_is_outward() -> None:
    lo, hi = float32_outward(np.array([0.1, -95.0, 1e-50]), np.array([0.1, -95.0, -1e-50]))
    assert (lo <= np.array([0.1, -95.0, 1e-50])).all()
    assert (hi >= np.array([0.1, -95.0, -1e-50])).all()
    assert lo[1] == hi[1] == -95.0, "exact float32 values stay"
    assert lo[0] < 0.1 < hi[0]


def test_point_wkb_is_decoded_without_geometry_objects() -> None:
    wkbs = [shapely.to_wkb(shapely.Point(1.5, -2.0)), None,
            shapely.to_wkb(shapely.LineString([(0, 0), (1, 1)])),
            shapely.to_wkb(shapely.Point(3, 4), byte_order=0)]
    fast, x, y = _point_xy(pa.array(wkbs, pa.binary()).slice(0))
    assert fast.tolist() == [True, False, False, False]
    assert (x[0], y[0]) == (1.5, -2.0)
    assert np.isnan(x[1:]).all()


def _write(path: Path, rows: list[tuple[int | None, str | None, str | None]]) -> str:
    table = pa.table({
        "id": pa.array([r[0] for r in rows], pa.int64()),
        "part": pa.array([r[1] for r in rows], pa.string()),
        "g": pa.array([None if r[2] is None else shapely.to_wkb(shapely.from_wkt(r[2]))
                       for r in rows], pa.binary())})
    geo = {"version": "1.1.0", "primary_column": "g", "columns": {"g": {"encoding": "WKB"}}}
    pq.write_table(table.replace_schema_metadata({"geo": json.dumps(geo)}), str(path),
                   row_group_size=2)
    return f"s3://{path}"  # LocalFileSystem takes the path behind the scheme


def test_polygons_are_filtered_like_postgis(tmp_path: Path) -> None:
    uri = _write(tmp_path / "p.parquet", [
        (1, "a", "POLYGON((0 0,1 0,1 1,0 1,0 0))"),
        (2, "b", "POLYGON((0 0,1 0,1 1,0 1,0 0))"),           # other partition
        (3, "a", "POLYGON((0 0,1 1,1 0,0 1,0 0))"),           # bowtie
        (4, "a", None), (5, "a", "POLYGON EMPTY"),
        (6, "a", "POLYGON((5 5,6 5,6 6,5 6,5 5))"),           # outside the bbox
        (7, "a", "POLYGON((2.0000000001 0,3 0,3 1,2.0000000001 1,2.0000000001 0))"),
    ])
    spec = PolygonSource(geoparquet="s3://bucket/x", id_column="id", geometry_column="g",
                         partition_column="part").model_copy(update={"geoparquet": uri})
    bbox = BBox(min_lon=0, min_lat=0, max_lon=2, max_lat=2)
    rows = read_polygons(fs.LocalFileSystem(), spec, "a", bbox, InvalidGeometryPolicy.SKIP)
    assert rows.ids.tolist() == [1, 3, 7], "7 is past the bbox by less than a float32 step"
    assert rows.valid.tolist() == [True, False, True]
    assert rows.wkbs[1] is None and rows.id_type_oid == 20
    fixed = read_polygons(fs.LocalFileSystem(), spec, "a", bbox, InvalidGeometryPolicy.MAKE_VALID)
    assert shapely.from_wkb(fixed.wkbs[1]).geom_type == "MultiPolygon"


def test_points_and_features_are_split(tmp_path: Path) -> None:
    uri = _write(tmp_path / "f.parquet", [
        (1, None, "POINT(0.5 0.5)"), (2, None, "POINT(5 5)"), (3, None, "POINT EMPTY"),
        (4, None, "LINESTRING(-1 -1,0 0)"), (5, None, None), (6, None, "MULTIPOINT((1 1))"),
    ])
    spec = PointSource(geoparquet="s3://bucket/x", id_column="id",
                       geometry_column="g").model_copy(update={"geoparquet": uri})
    points, (ids, wkbs) = read_points(fs.LocalFileSystem(), spec, Box(0, 0, 1, 1))
    assert points.ids.tolist() == [1] and (points.x[0], points.y[0]) == (0.5, 0.5)
    assert ids.tolist() == [4, 6] and len(wkbs) == 2
    missing = PointSource(geoparquet="s3://bucket/x", id_column="fid",
                          geometry_column="g").model_copy(update={"geoparquet": uri})
    with pytest.raises(GeoParquetSourceError, match="no column"):
        read_points(fs.LocalFileSystem(), missing, Box(0, 0, 1, 1))


def test_a_point_without_an_id_fails(tmp_path: Path) -> None:
    uri = _write(tmp_path / "n.parquet", [(None, None, "POINT(0.5 0.5)")])
    spec = PointSource(geoparquet="s3://bucket/x", id_column="id",
                       geometry_column="g").model_copy(update={"geoparquet": uri})
    with pytest.raises(NullFeatureId):
        read_points(fs.LocalFileSystem(), spec, Box(0, 0, 1, 1))
