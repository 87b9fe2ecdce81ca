"""Seeded sample data: irregular polygons (domain A) and clustered points (domain B).

Pure numpy/shapely; no database.  The same (scale, seed) gives the same rows.

The region is tiled by the partition map (12 tiles of the continental US by
default).  "Cities" (Zipf-weighted, of varied spread) concentrate both
polygons and points, so partitions are skewed like real data and the join
has plenty of matches.  Polygons are star-shaped around their centre
(vertices at increasing angles), hence simple and valid; 8 to 64 vertices,
log-normal sizes from a few hundred metres to tens of kilometres, so some cross
tile edges.  Each polygon's ``spatial_partition`` is the tile holding its
centre.  Points are 85 % city clusters (Gaussian, some with wide tails) and
15 % uniform background.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import shapely

from .models import BBox, PartitionMapEntry

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

SRID: Final = 4326
MIN_VERTICES: Final = 8
MAX_VERTICES: Final = 64
CITY_COUNT: Final = 48
POINT_CLUSTER_SHARE: Final = 0.85
POLYGON_CLUSTER_SHARE: Final = 0.5
# Median polygon radius (degrees) at REFERENCE_POLYGONS polygons.  More polygons are
# finer-grained (radius ~ 1/sqrt(count)), so the join's matches per point stay alike
# across scales: roughly 1 to 2 result rows per point.
MEDIAN_RADIUS: Final = 0.04
REFERENCE_POLYGONS: Final = 5_000


@dataclass(frozen=True)
class Scale:
    """Row counts of one dataset size."""

    name: str
    polygons: int
    points: int


SCALES: Final = {
    "tiny": Scale("tiny", 500, 20_000),  # for tests
    "small": Scale("small", 5_000, 200_000),
    "ref": Scale("ref", 50_000, 2_000_000),
    "large": Scale("large", 50_000, 10_000_000),
}


@dataclass(frozen=True)
class Cities:
    """Cluster centres, their weights (sum 1) and spreads in degrees."""

    lon: FloatArray
    lat: FloatArray
    weight: FloatArray
    sigma: FloatArray


@dataclass(frozen=True)
class Polygons:
    """Domain A rows: ids 1..n, tile index of each, EWKB (SRID 4326) of each."""

    ids: IntArray
    partition_index: IntArray
    ewkb: list[bytes]
    vertex_counts: IntArray


@dataclass(frozen=True)
class Points:
    """A chunk of domain B rows."""

    ids: IntArray
    lon: FloatArray
    lat: FloatArray


def region_of(entries: Sequence[PartitionMapEntry]) -> BBox:
    """The bbox covering every partition."""
    return BBox(
        min_lon=min(e.bbox.min_lon for e in entries),
        min_lat=min(e.bbox.min_lat for e in entries),
        max_lon=max(e.bbox.max_lon for e in entries),
        max_lat=max(e.bbox.max_lat for e in entries),
    )


def make_cities(rng: np.random.Generator, region: BBox, count: int = CITY_COUNT) -> Cities:
    """Zipf-weighted cluster centres inside ``region``, spreads 0.1 to ~1.5 degrees."""
    margin = 0.05 * (region.max_lon - region.min_lon)
    lon = rng.uniform(region.min_lon + margin, region.max_lon - margin, count)
    lat = rng.uniform(region.min_lat + margin / 2, region.max_lat - margin / 2, count)
    weight = 1.0 / np.arange(1, count + 1) ** 1.1
    rng.shuffle(weight)
    sigma = np.clip(rng.lognormal(np.log(0.35), 0.5, count), 0.08, 1.5)
    return Cities(lon=lon, lat=lat, weight=weight / weight.sum(), sigma=sigma)


def _clustered(
    rng: np.random.Generator, count: int, region: BBox, cities: Cities, cluster_share: float
) -> tuple[FloatArray, FloatArray]:
    """Locations: a share around cities (a tenth of them with 3x tails), the rest uniform."""
    clustered = rng.random(count) < cluster_share
    city = rng.choice(len(cities.weight), size=count, p=cities.weight)
    spread = cities.sigma[city] * np.where(rng.random(count) < 0.1, 3.0, 1.0)
    lon = np.where(
        clustered,
        cities.lon[city] + rng.normal(0.0, 1.0, count) * spread,
        rng.uniform(region.min_lon, region.max_lon, count),
    )
    lat = np.where(
        clustered,
        cities.lat[city] + rng.normal(0.0, 1.0, count) * spread * 0.75,
        rng.uniform(region.min_lat, region.max_lat, count),
    )
    # Keep every location inside the region: nothing falls outside the partition map.
    eps = 1e-9
    lon = np.clip(lon, region.min_lon + eps, region.max_lon - eps)
    lat = np.clip(lat, region.min_lat + eps, region.max_lat - eps)
    return lon, lat


def partition_index(
    lon: FloatArray, lat: FloatArray, entries: Sequence[PartitionMapEntry]
) -> IntArray:
    """Index into ``entries`` of the tile holding each location (-1 when none does)."""
    out = np.full(lon.shape, -1, dtype=np.int64)
    for index, entry in enumerate(entries):
        box = entry.bbox
        inside = (lon >= box.min_lon) & (lon < box.max_lon) & (lat >= box.min_lat)
        inside &= lat < box.max_lat
        out[(out < 0) & inside] = index
    return out


def generate_polygons(
    rng: np.random.Generator,
    count: int,
    entries: Sequence[PartitionMapEntry],
    cities: Cities,
    invalid_fraction: float = 0.0,
) -> Polygons:
    """``count`` irregular polygons; ``invalid_fraction`` of them made self-intersecting."""
    region = region_of(entries)
    cx, cy = _clustered(rng, count, region, cities, POLYGON_CLUSTER_SHARE)
    shrink = np.sqrt(REFERENCE_POLYGONS / max(count, 1))
    radius = np.clip(rng.lognormal(np.log(MEDIAN_RADIUS), 0.7, count), 0.004, 0.6) * shrink
    stretch = rng.uniform(0.5, 1.0, count)
    rotation = rng.uniform(0.0, np.pi, count)
    n_vertices = rng.integers(MIN_VERTICES, MAX_VERTICES + 1, count).astype(np.int64)

    owner = np.repeat(np.arange(count), n_vertices)
    # Angles sorted within each polygon: offset by owner so one global sort suffices.
    angle = np.sort(rng.uniform(0.0, 2 * np.pi, owner.size) + owner * 10.0) - owner * 10.0
    reach = radius[owner] * rng.uniform(0.55, 1.0, owner.size)
    ux = reach * np.cos(angle)
    uy = reach * np.sin(angle) * stretch[owner]
    cos_r, sin_r = np.cos(rotation[owner]), np.sin(rotation[owner])
    # Degrees of longitude shrink with latitude: widen x so shapes look right on the ground.
    widen = 1.0 / np.cos(np.radians(cy[owner]))
    x = cx[owner] + (ux * cos_r - uy * sin_r) * widen
    y = cy[owner] + ux * sin_r + uy * cos_r
    coords = np.column_stack([x, y])

    starts = np.concatenate([[0], np.cumsum(n_vertices)[:-1]])
    if invalid_fraction > 0:
        _make_bowties(rng, coords, starts, n_vertices, invalid_fraction)

    rings = shapely.linearrings(coords, indices=owner)
    polygons = shapely.set_srid(shapely.polygons(rings), SRID)
    ewkb = shapely.to_wkb(polygons, include_srid=True, byte_order=1)
    return Polygons(
        ids=np.arange(1, count + 1, dtype=np.int64),
        partition_index=partition_index(cx, cy, entries),
        ewkb=[bytes(b) for b in ewkb],
        vertex_counts=n_vertices,
    )


def _make_bowties(
    rng: np.random.Generator,
    coords: FloatArray,
    starts: IntArray,
    n_vertices: IntArray,
    fraction: float,
) -> None:
    """Swap two vertices a quarter turn apart: the ring then crosses itself."""
    chosen = np.flatnonzero(rng.random(starts.size) < fraction)
    for poly in chosen:
        a = int(starts[poly]) + 1
        b = a + int(n_vertices[poly]) // 4
        coords[[a, b]] = coords[[b, a]]


def generate_points(
    rng: np.random.Generator,
    count: int,
    entries: Sequence[PartitionMapEntry],
    cities: Cities,
    chunk: int = 1_000_000,
) -> Iterator[Points]:
    """``count`` clustered points with ids 1..count, in chunks (bounded memory)."""
    region = region_of(entries)
    for start in range(0, count, chunk):
        size = min(chunk, count - start)
        lon, lat = _clustered(rng, size, region, cities, POINT_CLUSTER_SHARE)
        yield Points(ids=np.arange(start + 1, start + size + 1, dtype=np.int64), lon=lon, lat=lat)
