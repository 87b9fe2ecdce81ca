"""What the vectorized engine reads from GeoParquet, when a side of the job names one.

The readers give exactly what vector_source.py's PostGIS readers give for a
partition, so that the join (and the result file) does not depend on where the
data came from:

* polygons: partition column equal to the partition key, bounding box meeting
  the task's bbox the way PostGIS's ``&&`` does (both boxes rounded outward to
  float32, as PostGIS's index boxes are), NULL and empty geometries left out,
  validity from ``shapely.is_valid`` (GEOS, as ST_IsValid) and, under
  make-valid, ``shapely.make_valid``. PostGIS's ST_MakeValid is GEOS's too, but
  the worker's GEOS (shapely's wheel) and the server's may be different
  versions, and their repairs can differ on exotic inputs (collapsed rings,
  self-touching shells); valid polygons are never touched.
* points inside a box (the polygons' extent), and the other features (lines,
  polygons, multi-points) whose bounds meet it.

A file or a prefix holding several is read as one pyarrow dataset, batch by
batch: only the id, geometry, partition (and covering) columns, and only the
rows that pass the filter are kept. When the file has a GeoParquet 1.1 bbox
covering, the filter runs on it first (row groups whose statistics miss the
box are not even fetched); otherwise every batch's WKB is decoded: 2D
little-endian points with numpy (no geometry objects), anything else with
shapely.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import shapely
from pyarrow import fs

from spatialjoin_contracts.models import BBox
from spatialjoin_contracts.models.job import PointSource, PolygonSource

from .groups import type_oid_of
from .point_wkb import POINT_WKB, POINT_WKB_BYTES, FloatArray, IntArray
from .settings import InvalidGeometryPolicy
from .tiling import Box
from .vector_source import NullFeatureId, PointRows, PolygonRows

BATCH_ROWS: Final = 65_536
"""Rows per record batch read: a few MB of WKB at a time."""
_READ_AHEAD: Final = {"batch_readahead": 2, "fragment_readahead": 1}


class GeoParquetSourceError(ValueError):
    """The GeoParquet source lacks a column the job names, or holds rows it cannot join."""


@dataclass(frozen=True)
class Covering:
    """Paths of a GeoParquet 1.1 bbox covering's four columns."""

    xmin: tuple[str, ...]
    ymin: tuple[str, ...]
    xmax: tuple[str, ...]
    ymax: tuple[str, ...]

    def overlaps(self, box: tuple[float, float, float, float]) -> ds.Expression:
        """Rows whose covering box meets ``box`` (closed)."""
        xmin, ymin, xmax, ymax = box
        return ((ds.field(*self.xmin) <= xmax) & (ds.field(*self.xmax) >= xmin)
                & (ds.field(*self.ymin) <= ymax) & (ds.field(*self.ymax) >= ymin))


def dataset(filesystem: fs.FileSystem, uri: str) -> ds.Dataset:
    """The file, or every Parquet file under the prefix, as one dataset."""
    path = uri.removeprefix("s3://").rstrip("/")
    return ds.dataset(path, filesystem=filesystem, format="parquet")


def covering(schema: pa.Schema, geometry_column: str) -> Covering | None:
    """The geometry column's bbox covering from the ``geo`` metadata, when there is one."""
    raw = (schema.metadata or {}).get(b"geo")
    if raw is None:
        return None
    try:
        bbox = json.loads(raw)["columns"][geometry_column]["covering"]["bbox"]
        paths = [tuple(str(p) for p in bbox[k]) for k in ("xmin", "ymin", "xmax", "ymax")]
    except (KeyError, TypeError, ValueError):
        return None
    top = paths[0][0]
    if top not in schema.names:
        return None
    return Covering(*paths)


def _require(schema: pa.Schema, uri: str, columns: list[str]) -> None:
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise GeoParquetSourceError(f"GeoParquet {uri} has no column(s) {', '.join(missing)} "
                                    f"(it has {', '.join(schema.names)})")


def float32_outward(lo: FloatArray, hi: FloatArray) -> tuple[FloatArray, FloatArray]:
    """``lo`` rounded down and ``hi`` rounded up to float32, as PostGIS's index boxes are
    (next_float_down/next_float_up): ``&&`` compares these, not the exact bounds."""
    lo32 = lo.astype(np.float32)
    lo32 = np.where(lo32.astype(np.float64) > lo, np.nextafter(lo32, np.float32(-np.inf)), lo32)
    hi32 = hi.astype(np.float32)
    hi32 = np.where(hi32.astype(np.float64) < hi, np.nextafter(hi32, np.float32(np.inf)), hi32)
    return lo32.astype(np.float64), hi32.astype(np.float64)


def _outward_box(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    lo, hi = float32_outward(np.array([box[0], box[1]]), np.array([box[2], box[3]]))
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


def _batches(data: ds.Dataset, columns: list[str], where: ds.Expression | None
             ) -> Iterator[pa.RecordBatch]:
    yield from data.to_batches(columns=columns, filter=where, batch_size=BATCH_ROWS,
                               **_READ_AHEAD)


def _ids(column: pa.Array, what: str) -> IntArray:
    if column.null_count:
        raise NullFeatureId(f"{column.null_count} {what} row(s) without an id")
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.int64)


def read_polygons(filesystem: fs.FileSystem, spec: PolygonSource, partition_key: str,
                  bbox: BBox, policy: InvalidGeometryPolicy) -> PolygonRows:
    """The partition's polygons as vector_source.polygons_query selects them from PostGIS."""
    assert spec.geoparquet is not None
    data = dataset(filesystem, spec.geoparquet)
    pid, geom, part = spec.id_column, spec.geometry_column, spec.partition_column
    _require(data.schema, spec.geoparquet, [pid, geom, part])
    envelope = _outward_box(bbox.as_tuple())
    where = ds.field(part) == partition_key
    cover = covering(data.schema, geom)
    if cover is not None:
        where = where & cover.overlaps(envelope)
    id_parts: list[IntArray] = []
    valid_parts: list[np.ndarray[Any, np.dtype[np.bool_]]] = []
    wkbs: list[bytes | None] = []
    for batch in _batches(data, [pid, geom], where):
        shapes = shapely.from_wkb(batch.column(geom).to_numpy(zero_copy_only=False))
        present = ~(shapely.is_missing(shapes) | shapely.is_empty(shapes))
        bounds = shapely.bounds(shapes)
        lo, hi = float32_outward(bounds[:, :2], bounds[:, 2:])
        meets = present & ((lo[:, 0] <= envelope[2]) & (hi[:, 0] >= envelope[0])
                           & (lo[:, 1] <= envelope[3]) & (hi[:, 1] >= envelope[1]))
        keep = np.flatnonzero(meets)
        if keep.shape[0] == 0:
            continue
        ids = _ids(batch.column(pid).take(pa.array(keep)), "polygon")
        kept = shapes[keep]
        valid = np.asarray(shapely.is_valid(kept), dtype=np.bool_)
        raw = batch.column(geom).take(pa.array(keep)).to_pylist()
        for index, ok in enumerate(valid):
            if ok:
                wkbs.append(bytes(raw[index]))
            elif policy is InvalidGeometryPolicy.MAKE_VALID:
                wkbs.append(shapely.to_wkb(shapely.make_valid(kept[index])))
            else:
                wkbs.append(None)
        id_parts.append(ids)
        valid_parts.append(valid)
    id_type = data.schema.field(pid).type
    return PolygonRows(np.concatenate(id_parts) if id_parts else np.empty(0, np.int64),
                       np.concatenate(valid_parts) if valid_parts else np.empty(0, np.bool_),
                       wkbs, type_oid_of(id_type))


def feature_id_type_oid(filesystem: fs.FileSystem, spec: PointSource) -> int:
    """The PostgreSQL type oid the point id column would have (arrow_type's inverse)."""
    assert spec.geoparquet is not None
    schema = dataset(filesystem, spec.geoparquet).schema
    _require(schema, spec.geoparquet, [spec.id_column, spec.geometry_column])
    return type_oid_of(schema.field(spec.id_column).type)


def _point_xy(wkb: pa.BinaryArray) -> tuple[np.ndarray[Any, np.dtype[np.bool_]], FloatArray,
                                            FloatArray]:
    """Which elements are 2D little-endian point WKB, and their x and y (NaN elsewhere)."""
    count = len(wkb)
    x, y = np.full(count, np.nan), np.full(count, np.nan)
    if count == 0:
        return np.zeros(0, np.bool_), x, y
    wkb = pc.if_else(pc.is_null(wkb), pa.scalar(b"", pa.binary()), wkb)
    offsets = np.frombuffer(wkb.buffers()[1], dtype=np.int32)[wkb.offset:wkb.offset + count + 1]
    data = np.frombuffer(wkb.buffers()[2], dtype=np.uint8)
    starts = offsets[:-1]
    fast = np.diff(offsets) == POINT_WKB_BYTES
    rows = np.flatnonzero(fast)
    if rows.shape[0]:
        packed = data[starts[rows, None] + np.arange(POINT_WKB_BYTES)].copy().view(POINT_WKB)[:, 0]
        ok = (packed["order"] == 1) & (packed["type"] == 1)
        fast[rows[~ok]] = False
        x[rows[ok]], y[rows[ok]] = packed["x"][ok], packed["y"][ok]
    return fast, x, y


def read_points(filesystem: fs.FileSystem, spec: PointSource, box: Box
                ) -> tuple[PointRows, tuple[IntArray, list[bytes]]]:
    """The points ``box`` owns, and the other features whose bounds meet it.

    The same rows as vector_source's points and features queries over ``box`` once the
    engine keeps the points the box owns (point EMPTY is NaN and owned by no box).
    """
    assert spec.geoparquet is not None
    data = dataset(filesystem, spec.geoparquet)
    fid, geom = spec.id_column, spec.geometry_column
    _require(data.schema, spec.geoparquet, [fid, geom])
    cover = covering(data.schema, geom)
    where = None if cover is None else cover.overlaps(_outward_box(box.as_tuple()))
    ids: list[IntArray] = []
    xs: list[FloatArray] = []
    ys: list[FloatArray] = []
    feature_ids: list[IntArray] = []
    feature_wkbs: list[bytes] = []
    for batch in _batches(data, [fid, geom], where):
        column = batch.column(geom)
        if isinstance(column, pa.LargeBinaryArray):
            column = column.cast(pa.binary())
        fast, x, y = _point_xy(column)
        slow = np.flatnonzero(~fast & ~np.asarray(column.is_null().to_numpy(
            zero_copy_only=False), dtype=np.bool_))
        other = np.zeros(len(column), np.bool_)
        shapes: np.ndarray[Any, np.dtype[np.object_]] = np.empty(0, object)
        if slow.shape[0]:
            shapes = shapely.from_wkb(column.take(pa.array(slow)).to_numpy(zero_copy_only=False))
            is_point = shapely.get_type_id(shapes) == shapely.GeometryType.POINT
            points = slow[is_point]
            x[points] = shapely.get_x(shapes[is_point])
            y[points] = shapely.get_y(shapes[is_point])
            other[slow[~is_point]] = True
        owned = np.flatnonzero(box.contains(x, y))
        if owned.shape[0]:
            ids.append(_ids(batch.column(fid).take(pa.array(owned)), "point"))
            xs.append(x[owned])
            ys.append(y[owned])
        if other.any():
            shapes = shapes[~(shapely.get_type_id(shapes) == shapely.GeometryType.POINT)]
            bounds = shapely.bounds(shapes)
            meets = ((bounds[:, 0] <= box.xmax) & (bounds[:, 2] >= box.xmin)
                     & (bounds[:, 1] <= box.ymax) & (bounds[:, 3] >= box.ymin))
            rows = np.flatnonzero(other)[meets]
            if rows.shape[0]:
                feature_ids.append(_ids(batch.column(fid).take(pa.array(rows)), "feature"))
                feature_wkbs += [bytes(w) for w in column.take(pa.array(rows)).to_pylist()]
    empty_f: FloatArray = np.empty(0, np.float64)
    points = PointRows(np.concatenate(ids) if ids else np.empty(0, np.int64),
                       np.concatenate(xs) if xs else empty_f,
                       np.concatenate(ys) if ys else empty_f)
    features = (np.concatenate(feature_ids) if feature_ids else np.empty(0, np.int64),
                feature_wkbs)
    return points, features
