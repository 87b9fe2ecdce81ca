"""The vectorized join of one tile, pure shapely and numpy: no database, no I/O.

Points: the bounding-box candidate pairs (the ones an STRtree over the
points would give, found with a grid in candidates.py), then
``shapely.intersects_xy`` on the prepared polygon and the raw coordinates.
The intersection of a polygon with a point it intersects is the point itself,
so nothing is overlaid; the point's WKB is written from its coordinates (see
point_wkb.py).

Other features (lines, polygons, multi-points in the point table) take the
general path: ``intersects`` then ``shapely.intersection``, as ST_Intersection
would.

Polygons are kept sorted by id and points by id, so a match is identified by
(polygon rank, point index) and sorting one int64 key orders the matches by
(domain_id, feature_id), the order the result file needs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import shapely

from .candidates import CHUNK_CANDIDATES, build_grid, candidate_pairs
from .point_wkb import point_wkb

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
ObjectArray = npt.NDArray[np.object_]



@dataclass(frozen=True)
class Polygons:
    """A partition's polygons, sorted by id (stable), prepared, with their bounds."""

    ids: IntArray
    valid: BoolArray
    geoms: ObjectArray
    bounds: FloatArray

    @classmethod
    def from_wkb(cls, ids: IntArray, valid: BoolArray, wkbs: Sequence[bytes]) -> Polygons:
        order = np.argsort(ids, kind="stable")
        geoms = np.asarray(shapely.from_wkb(np.asarray(wkbs, dtype=object)), dtype=object)[order]
        shapely.prepare(geoms)
        return cls(ids[order], valid[order], geoms, _bounds(geoms))

    def __len__(self) -> int:
        return int(self.ids.shape[0])


@dataclass(frozen=True)
class Points:
    """Point features sorted by id (stable); empty (NaN) points are dropped on the way in."""

    ids: IntArray
    x: FloatArray
    y: FloatArray

    @classmethod
    def of(cls, ids: IntArray, x: FloatArray, y: FloatArray) -> Points:
        keep = np.isfinite(x) & np.isfinite(y)
        if not keep.all():
            ids, x, y = ids[keep], x[keep], y[keep]
        if ids.shape[0] > 1 and not bool((ids[1:] >= ids[:-1]).all()):
            order = np.argsort(ids, kind="stable")
            ids, x, y = ids[order], x[order], y[order]
        return cls(ids, x, y)

    def take(self, index: IntArray) -> Points:
        """A subset, still sorted by id when ``index`` is ascending."""
        return Points(self.ids[index], self.x[index], self.y[index])

    def __len__(self) -> int:
        return int(self.ids.shape[0])


@dataclass(frozen=True)
class Features:
    """Non-point features (lines, polygons, collections) with their ids."""

    ids: IntArray
    geoms: ObjectArray

    @classmethod
    def from_wkb(cls, ids: IntArray, wkbs: Sequence[bytes]) -> Features:
        geoms = np.asarray(shapely.from_wkb(np.asarray(wkbs, dtype=object)), dtype=object)
        return cls(ids, geoms)

    def __len__(self) -> int:
        return int(self.ids.shape[0])


@dataclass(frozen=True)
class Shapes:
    """Per-row WKB and bounds for matches that are not plain points (None for point rows)."""

    wkb: ObjectArray
    bounds: FloatArray


@dataclass(frozen=True)
class Matches:
    """Result rows as (polygon rank, feature id) plus what makes their geometry."""

    rank: IntArray
    feature_id: IntArray
    x: FloatArray
    y: FloatArray
    shapes: Shapes | None = None

    def __len__(self) -> int:
        return int(self.rank.shape[0])

    @classmethod
    def empty(cls) -> Matches:
        ints, floats = np.empty(0, np.int64), np.empty(0, np.float64)
        return cls(ints, ints, floats, floats)


def _bounds(geoms: ObjectArray) -> FloatArray:
    return np.asarray(shapely.bounds(geoms), dtype=np.float64).reshape(-1, 4)


def overlapping(polygons: Polygons, xmin: float, ymin: float, xmax: float,
                ymax: float) -> IntArray:
    """Ranks of the polygons whose bounding box meets the closed box (ascending)."""
    b = polygons.bounds
    hit = (b[:, 0] <= xmax) & (b[:, 2] >= xmin) & (b[:, 1] <= ymax) & (b[:, 3] >= ymin)
    return np.flatnonzero(hit).astype(np.int64)


def join_points(polygons: Polygons, points: Points,
                chunk: int = CHUNK_CANDIDATES) -> tuple[Matches, int]:
    """Every (polygon, point) that intersects, sorted; and how many candidate pairs were tested."""
    if len(points) == 0 or len(polygons) == 0:
        return Matches.empty(), 0
    ranks = overlapping(polygons, float(points.x.min()), float(points.y.min()),
                        float(points.x.max()), float(points.y.max()))
    if ranks.shape[0] == 0:
        return Matches.empty(), 0
    bounds = polygons.bounds[ranks]
    grid = build_grid(points.x, points.y, bounds)
    keys: list[IntArray] = []
    candidates = 0
    count = len(points)
    for poly_at, point_at in candidate_pairs(grid, points.x, points.y, bounds, chunk):
        candidates += int(point_at.shape[0])
        hit = np.asarray(shapely.intersects_xy(polygons.geoms[ranks[poly_at]],
                                               points.x[point_at], points.y[point_at]),
                         dtype=np.bool_)
        key = ranks[poly_at[hit]] * count + point_at[hit]
        key.sort()
        keys.append(key)
    del grid
    key = np.concatenate(keys) if keys else np.empty(0, np.int64)
    rank, point_index = np.divmod(key, count)
    matches = Matches(rank, points.ids[point_index], points.x[point_index],
                      points.y[point_index])
    return matches, candidates


def join_features(polygons: Polygons, features: Features) -> Matches:
    """Polygon and non-point feature: intersects, then the intersection (ST_Intersection)."""
    if len(features) == 0 or len(polygons) == 0:
        return Matches.empty()
    tree = shapely.STRtree(features.geoms)
    pairs = np.asarray(tree.query(polygons.geoms, predicate="intersects"), dtype=np.int64)
    poly_at, feature_at = pairs[0], pairs[1]
    shapes = np.asarray(shapely.intersection(polygons.geoms[poly_at],
                                             features.geoms[feature_at]), dtype=object)
    wkb = np.asarray(shapely.to_wkb(shapes, byte_order=1, output_dimension=2), dtype=object)
    nan = np.full(poly_at.shape[0], np.nan)
    order = np.lexsort((features.ids[feature_at], poly_at))
    return Matches(poly_at[order], features.ids[feature_at][order], nan, nan.copy(),
                   Shapes(wkb[order], _bounds(shapes)[order]))


def merge(parts: Sequence[Matches]) -> Matches:
    """One sorted Matches from several sorted ones (tiles, points and features)."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return Matches.empty()
    if len(parts) == 1:
        return parts[0]
    rank = np.concatenate([p.rank for p in parts])
    feature_id = np.concatenate([p.feature_id for p in parts])
    x = np.concatenate([p.x for p in parts])
    y = np.concatenate([p.y for p in parts])
    shapes = None
    if any(p.shapes is not None for p in parts):
        shapes = Shapes(np.concatenate([_shape_wkb(p) for p in parts]),
                        np.concatenate([_shape_bounds(p) for p in parts]))
    order = np.lexsort((feature_id, rank))
    if shapes is not None:
        shapes = Shapes(shapes.wkb[order], shapes.bounds[order])
    return Matches(rank[order], feature_id[order], x[order], y[order], shapes)


def _shape_wkb(part: Matches) -> ObjectArray:
    if part.shapes is not None:
        return part.shapes.wkb
    return np.full(len(part), None, dtype=object)


def _shape_bounds(part: Matches) -> FloatArray:
    if part.shapes is not None:
        return part.shapes.bounds
    return np.column_stack([part.x, part.y, part.x, part.y])


def batch_bounds(rank: IntArray, groups_per_batch: int) -> list[tuple[int, int]]:
    """Row ranges holding ``groups_per_batch`` polygons each (the postgis engine's batches).

    The postgis engine fetches that many polygons with matches per batch and
    each batch becomes one Parquet row group, so cutting at the same places
    makes the two engines' files byte-identical.
    """
    if rank.shape[0] == 0:
        return []
    starts = np.flatnonzero(np.r_[True, rank[1:] != rank[:-1]])
    cuts = [*starts[::max(1, groups_per_batch)].tolist(), int(rank.shape[0])]
    return list(pairwise(cuts))


def record_batch(matches: Matches, polygons: Polygons, start: int, stop: int,
                 schema: pa.Schema) -> pa.RecordBatch:
    """Rows ``start:stop`` in the engine's raw schema (see groups.raw_schema)."""
    rank = matches.rank[start:stop]
    x, y = matches.x[start:stop], matches.y[start:stop]
    if matches.shapes is None:
        geometry: pa.Array = point_wkb(x, y)
        bounds = [x, y, x, y]
    else:
        geometry = _mixed_geometry(x, y, matches.shapes.wkb[start:stop])
        box = matches.shapes.bounds[start:stop]
        bounds = [box[:, 0], box[:, 1], box[:, 2], box[:, 3]]
    arrays: list[Any] = [
        pa.array(polygons.ids[rank]).cast(schema.field("domain_id").type),
        pa.array(matches.feature_id[start:stop]).cast(schema.field("feature_id").type),
        geometry, *[pa.array(np.ascontiguousarray(b)) for b in bounds],
        pa.array(polygons.valid[rank])]
    return pa.record_batch(arrays, schema=schema)


def _mixed_geometry(x: FloatArray, y: FloatArray, wkb: ObjectArray) -> pa.Array:
    points = point_wkb(x, y).to_pylist()
    return pa.array([w if w is not None else p for w, p in zip(wkb, points, strict=True)],
                    pa.binary())


def record_batches(matches: Matches, polygons: Polygons, schema: pa.Schema,
                   groups_per_batch: int) -> Iterator[pa.RecordBatch]:
    for start, stop in batch_bounds(matches.rank, groups_per_batch):
        yield record_batch(matches, polygons, start, stop, schema)
