"""The pure join: tricky shapes, order, tiles, batches, against a brute-force shapely join."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import shapely

from spatialjoin_worker.groups import raw_schema
from spatialjoin_worker.vector_join import (
    Features,
    Matches,
    Points,
    Polygons,
    batch_bounds,
    join_features,
    join_points,
    merge,
    record_batches,
)

pytestmark = pytest.mark.unit

SCHEMA = raw_schema(pa.int64(), pa.int64())

HOLED = shapely.Polygon([(0, 0), (4, 0), (4, 4), (0, 4)], [[(1, 1), (3, 1), (3, 3), (1, 3)]])
MULTI = shapely.MultiPolygon([shapely.box(10, 0, 11, 1), shapely.box(11, 1, 12, 2)])
TRIANGLE = shapely.Polygon([(20, 0), (22, 0), (22, 2)])
BOWTIE_FIXED = shapely.make_valid(shapely.Polygon([(30, 0), (31, 1), (31, 0), (30, 1)]))


def _polygons(*pairs: tuple[int, shapely.Geometry], valid: list[bool] | None = None,
              ) -> Polygons:
    ids = np.array([p[0] for p in pairs], dtype=np.int64)
    flags = np.array(valid if valid is not None else [True] * len(pairs), dtype=np.bool_)
    wkbs = [bytes(shapely.to_wkb(p[1], byte_order=1)) for p in pairs]
    return Polygons.from_wkb(ids, flags, wkbs)


def _points(rows: list[tuple[int, float, float]]) -> Points:
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    return Points.of(ids, np.array([r[1] for r in rows]), np.array([r[2] for r in rows]))


TRICKY_POINTS = [
    (1, 0.5, 0.5),     # inside HOLED
    (2, 2.0, 2.0),     # in HOLED's hole
    (3, 1.0, 2.0),     # on the hole's ring
    (4, 0.0, 2.0),     # on the outer edge
    (5, 4.0, 4.0),     # on a vertex
    (6, 0.5, 0.5),     # duplicate location, other id
    (6, 0.5, 0.5),     # duplicate row
    (7, 11.0, 1.0),    # where MULTI's parts touch
    (8, 10.5, 0.5),    # inside MULTI's first part
    (9, 21.0, 1.0),    # on TRIANGLE's diagonal edge
    (10, 22.0, 1.0),   # on TRIANGLE's vertical edge
    (11, 21.5, 0.2),   # inside TRIANGLE
    (12, 30.5, 0.5),   # the bowtie's crossing point, made valid
    (13, 30.1, 0.5),   # inside the bowtie's left triangle
    (14, np.nan, np.nan),  # an empty point
    (15, 50.0, 50.0),  # far from everything
    (0, 3.5, 3.5),     # smallest id last in input, inside HOLED
]


def _brute_force(polygons: list[tuple[int, shapely.Geometry]],
                 rows: list[tuple[int, float, float]]) -> list[tuple[int, int, bytes]]:
    found = []
    for pid, polygon in sorted(polygons, key=lambda p: p[0]):
        for fid, x, y in sorted(rows, key=lambda r: r[0]):
            if np.isfinite(x) and shapely.intersects(polygon, shapely.Point(x, y)):
                found.append((pid, fid, bytes(shapely.to_wkb(shapely.Point(x, y),
                                                             byte_order=1))))
    return found


def _rows(matches: Matches, polygons: Polygons) -> list[tuple[int, int, bytes]]:
    table = pa.Table.from_batches(list(record_batches(matches, polygons, SCHEMA, 2)), SCHEMA)
    return list(zip(table.column("domain_id").to_pylist(), table.column("feature_id").to_pylist(),
                    table.column("geometry").to_pylist(), strict=True))


SHAPES = [(30, HOLED), (10, MULTI), (20, TRIANGLE), (25, BOWTIE_FIXED)]


def test_tricky_points_match_a_brute_force_join_in_order() -> None:
    polygons = _polygons(*SHAPES)
    matches, candidates = join_points(polygons, _points(TRICKY_POINTS))
    assert _rows(matches, polygons) == _brute_force(SHAPES, TRICKY_POINTS)
    assert candidates >= len(matches)


def test_boundary_hole_and_duplicate_cases_explicitly() -> None:
    polygons = _polygons((30, HOLED))
    matches, _ = join_points(polygons, _points(TRICKY_POINTS))
    assert matches.feature_id.tolist() == [0, 1, 3, 4, 5, 6, 6]


def test_tiles_give_the_same_rows_as_one_join() -> None:
    rng = np.random.default_rng(5)
    centres = rng.uniform(0, 10, (300, 2))
    shapes = [(int(i), shapely.buffer(shapely.Point(*c), rng.uniform(0.05, 0.6), quad_segs=6))
              for i, c in zip(rng.permutation(300), centres, strict=True)]
    polygons = _polygons(*shapes)
    points = _points([(int(i), float(x), float(y)) for i, (x, y) in
                      zip(rng.permutation(20_000), rng.uniform(0, 10, (20_000, 2)), strict=True)])
    whole, _ = join_points(polygons, points)
    halves = [points.take(np.flatnonzero(points.x < 5)), points.take(np.flatnonzero(points.x >= 5))]
    tiled = merge([join_points(polygons, half)[0] for half in halves])
    assert _rows(tiled, polygons) == _rows(whole, polygons)
    small_chunks, _ = join_points(polygons, points, chunk=100)
    assert _rows(small_chunks, polygons) == _rows(whole, polygons)


def test_nothing_to_join() -> None:
    polygons = _polygons((1, HOLED))
    assert len(join_points(polygons, _points([(1, 50.0, 50.0)]))[0]) == 0
    assert len(join_points(polygons, _points([]))[0]) == 0
    assert list(record_batches(Matches.empty(), polygons, SCHEMA, 10)) == []


def test_valid_flag_and_id_types_follow_the_polygon() -> None:
    polygons = _polygons((1, HOLED), (2, TRIANGLE), valid=[False, True])
    matches, _ = join_points(polygons, _points([(5, 0.5, 0.5), (6, 21.5, 0.2)]))
    schema = raw_schema(pa.int32(), pa.int16())
    (batch,) = record_batches(matches, polygons, schema, 1000)
    assert batch.schema == schema
    assert batch.column("domain_geometry_valid").to_pylist() == [False, True]
    assert batch.column("xmin").to_pylist() == [0.5, 21.5]
    assert batch.column("ymax").to_pylist() == [0.5, 0.2]


def test_batches_hold_whole_polygons_like_the_postgis_engine() -> None:
    rank = np.array([0, 0, 0, 1, 2, 2, 5, 5, 7], dtype=np.int64)
    assert batch_bounds(rank, 2) == [(0, 4), (4, 8), (8, 9)]
    assert batch_bounds(rank, 100) == [(0, 9)]
    assert batch_bounds(np.empty(0, np.int64), 2) == []


def test_non_point_features_are_intersected_and_sorted() -> None:
    polygons = _polygons((2, HOLED), (1, TRIANGLE))
    line = shapely.LineString([(-1, 2), (5, 2)])            # crosses HOLED and its hole
    square = shapely.box(3, 3, 6, 6)                          # overlaps a corner
    multipoint = shapely.MultiPoint([(0.5, 0.5), (2, 2), (21.5, 0.2)])
    away = shapely.LineString([(40, 40), (41, 41)])
    features = Features.from_wkb(np.array([9, 4, 7, 3], dtype=np.int64), [
        bytes(shapely.to_wkb(g, byte_order=1)) for g in (line, square, multipoint, away)])
    matches = join_features(polygons, features)
    rows = _rows(matches, polygons)
    assert [(d, f) for d, f, _ in rows] == [(1, 7), (2, 4), (2, 7), (2, 9)]
    got = {(d, f): shapely.from_wkb(w) for d, f, w in rows}
    assert shapely.equals(got[(2, 9)], shapely.intersection(HOLED, line))
    assert shapely.equals(got[(2, 4)], shapely.box(3, 3, 4, 4))
    assert shapely.equals(got[(1, 7)], shapely.Point(21.5, 0.2))
    assert shapely.equals(got[(2, 7)], shapely.Point(0.5, 0.5))


def test_points_and_features_merge_in_feature_order() -> None:
    polygons = _polygons((1, HOLED))
    points, _ = join_points(polygons, _points([(5, 0.5, 0.5), (2, 3.5, 3.5)]))
    features = join_features(polygons, Features.from_wkb(np.array([3], dtype=np.int64), [
        bytes(shapely.to_wkb(shapely.box(0, 0, 0.2, 0.2), byte_order=1))]))
    rows = _rows(merge([points, features]), polygons)
    assert [f for _, f, _ in rows] == [2, 3, 5]
    assert rows[0][2] == bytes(shapely.to_wkb(shapely.Point(3.5, 3.5), byte_order=1))
    assert shapely.equals(shapely.from_wkb(rows[1][2]), shapely.box(0, 0, 0.2, 0.2))
