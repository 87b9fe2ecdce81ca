"""Seeded sample data: shapes, skew, determinism, and the binary COPY encoding."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import shapely

from spatialjoin_contracts.dataset import (
    MAX_VERTICES,
    MIN_VERTICES,
    SCALES,
    generate_points,
    generate_polygons,
    make_cities,
    partition_index,
    region_of,
)
from spatialjoin_contracts.dataset_load import encode_points, encode_polygons
from spatialjoin_contracts.partition_map import grid_partition_map

pytestmark = pytest.mark.unit

ENTRIES = grid_partition_map()
REGION = region_of(ENTRIES)


def _polygons(seed: int = 3, count: int = 2000, invalid: float = 0.0):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    cities = make_cities(rng, REGION)
    return generate_polygons(rng, count, ENTRIES, cities, invalid), rng, cities


def test_scales() -> None:
    assert (SCALES["small"].polygons, SCALES["small"].points) == (5_000, 200_000)
    assert (SCALES["ref"].polygons, SCALES["ref"].points) == (50_000, 2_000_000)
    assert (SCALES["large"].polygons, SCALES["large"].points) == (50_000, 10_000_000)


def test_same_seed_same_rows_other_seed_other_rows() -> None:
    a, _, _ = _polygons(seed=11, count=300)
    b, _, _ = _polygons(seed=11, count=300)
    c, _, _ = _polygons(seed=12, count=300)
    assert a.ewkb == b.ewkb
    assert a.ewkb != c.ewkb


def test_polygons_are_valid_irregular_and_in_ewkb_4326() -> None:
    polys, _, _ = _polygons()
    geoms = shapely.from_wkb(polys.ewkb)
    assert shapely.is_valid(geoms).all()
    assert set(shapely.get_srid(geoms).tolist()) == {4326}
    exterior = shapely.get_num_coordinates(geoms) - 1  # closed ring repeats the first vertex
    assert exterior.min() >= MIN_VERTICES and exterior.max() <= MAX_VERTICES
    assert (exterior == polys.vertex_counts).all()
    assert len(set(exterior.tolist())) > 40  # varied vertex counts
    areas = shapely.area(geoms)
    assert areas.max() / np.median(areas) > 50  # varied sizes
    assert polys.ids.tolist() == list(range(1, 2001))


def test_each_polygon_has_one_partition_holding_its_centre_and_some_cross_edges() -> None:
    polys, _, _ = _polygons()
    geoms = shapely.from_wkb(polys.ewkb)
    assert (polys.partition_index >= 0).all()
    boxes = [shapely.box(*e.bbox.as_tuple()) for e in ENTRIES]
    own = [boxes[i] for i in polys.partition_index]
    crossing = ~shapely.within(geoms, own)
    assert 0.005 < crossing.mean() < 0.5


def test_invalid_fraction_makes_self_intersecting_polygons() -> None:
    polys, _, _ = _polygons(invalid=0.1)
    invalid = ~shapely.is_valid(shapely.from_wkb(polys.ewkb))
    assert 0.05 < invalid.mean() < 0.15


def test_points_are_clustered_not_uniform_and_inside_the_region() -> None:
    rng = np.random.default_rng(5)
    cities = make_cities(rng, REGION)
    chunks = list(generate_points(rng, 50_000, ENTRIES, cities, chunk=20_000))
    assert [c.ids.size for c in chunks] == [20_000, 20_000, 10_000]
    ids = np.concatenate([c.ids for c in chunks])
    assert ids.tolist() == list(range(1, 50_001))
    lon = np.concatenate([c.lon for c in chunks])
    lat = np.concatenate([c.lat for c in chunks])
    assert (partition_index(lon, lat, ENTRIES) >= 0).all()
    # On a 60x24 one-degree grid, a uniform spread puts ~0.7 % of points in the top 1 %
    # of cells; clusters put far more there.
    cells, _, _ = np.histogram2d(
        lon,
        lat,
        bins=(60, 24),
        range=((REGION.min_lon, REGION.max_lon), (REGION.min_lat, REGION.max_lat)),
    )
    top = np.sort(cells.ravel())[::-1][: cells.size // 100].sum() / cells.sum()
    assert top > 0.1


def test_point_copy_rows_decode_to_id_and_ewkb() -> None:
    rng = np.random.default_rng(1)
    chunk = next(generate_points(rng, 3, ENTRIES, make_cities(rng, REGION)))
    data = encode_points(chunk)
    assert len(data) == 3 * 43
    fields, id_len, pid, geom_len = struct.unpack(">hiqi", data[:18])
    assert (fields, id_len, pid, geom_len) == (2, 8, 1, 25)
    point = shapely.from_wkb(data[18:43])
    assert shapely.get_srid(point) == 4326
    assert (point.x, point.y) == (chunk.lon[0], chunk.lat[0])


def test_polygon_copy_rows_decode_to_id_partition_and_ewkb() -> None:
    polys, _, _ = _polygons(count=2)
    data = encode_polygons(polys, [e.name for e in ENTRIES])
    fields, id_len, pid, name_len = struct.unpack(">hiqi", data[:18])
    assert (fields, id_len, pid, name_len) == (3, 8, 1, 3)
    assert data[18:21].decode() == ENTRIES[int(polys.partition_index[0])].name
    (geom_len,) = struct.unpack(">i", data[21:25])
    assert data[25 : 25 + geom_len] == polys.ewkb[0]
