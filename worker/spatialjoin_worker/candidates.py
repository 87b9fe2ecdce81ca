"""Bounding-box candidate pairs (polygon, point) with a uniform grid, in numpy.

The pairs are exactly those an STRtree over the points would return when
queried with the polygons without a predicate: every point inside or on the
polygon's bounding box (tests check the two agree). The grid gets them
without a single geometry object:

- points are bucketed by cell (row-major) with one sort;
- each polygon's bounding box covers a block of cells, that is one run of
  sorted points per cell row; the runs are expanded with ``repeat``/``cumsum``;
- the exact closed bounding-box test on the raw coordinates then drops the
  points of the edge cells that lie outside the box.

``floor((v - origin) / size)`` is monotonic in ``v``, so a point inside a
box always lands in a cell of the box's block, edges included.

Why not the STRtree: it needs a shapely Point per point, and creating those
holds the GIL (two threads made them no faster than one, measured); on two
cores that serialised the joins. The grid costs a sort and some gathers, most
of it outside the GIL, and the candidates of a chunk of polygons are counted
before they are made, which bounds their memory exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

CELLS_PER_POLYGON: Final = 2.0
"""Cell side = the median polygon's longer side / this (about 1.7 points read per candidate)."""
MAX_CELLS_PER_POINT: Final = 4
MIN_CELLS: Final = 1024
CHUNK_CANDIDATES: Final = 500_000
"""Grid candidates (before the box test) made at once: about 80 bytes each while they live."""


@dataclass(frozen=True)
class Grid:
    """Points bucketed into cells: ``order`` sorts them by cell, ``start`` indexes the cells."""

    x0: float
    y0: float
    size: float
    columns: int
    rows: int
    order: IntArray
    start: IntArray

    def column(self, v: FloatArray) -> IntArray:
        return np.clip(np.floor((v - self.x0) / self.size), 0, self.columns - 1).astype(np.int64)

    def row(self, v: FloatArray) -> IntArray:
        return np.clip(np.floor((v - self.y0) / self.size), 0, self.rows - 1).astype(np.int64)


def cell_size(bounds: FloatArray, width: float, height: float, points: int) -> float:
    """Half the median polygon's longer side, coarsened so the grid has at most a few
    cells per point (and never zero)."""
    sides = np.maximum(bounds[:, 2] - bounds[:, 0], bounds[:, 3] - bounds[:, 1])
    size = float(np.median(sides)) / CELLS_PER_POLYGON if sides.shape[0] else 0.0
    max_cells = max(MIN_CELLS, MAX_CELLS_PER_POINT * points)
    floor = float(np.sqrt(max(width, 0.0) * max(height, 0.0) / max_cells))
    floor = max(floor, max(width, height) / max_cells)
    return max(size, floor, np.finfo(np.float64).tiny)


def build_grid(x: FloatArray, y: FloatArray, bounds: FloatArray) -> Grid:
    """Bucket the points over the box that holds them and the polygons."""
    x0 = float(min(x.min(), bounds[:, 0].min()))
    y0 = float(min(y.min(), bounds[:, 1].min()))
    x1 = float(max(x.max(), bounds[:, 2].max()))
    y1 = float(max(y.max(), bounds[:, 3].max()))
    size = cell_size(bounds, x1 - x0, y1 - y0, x.shape[0])
    columns = int(min((x1 - x0) / size, 2**31)) + 1
    rows = int(min((y1 - y0) / size, 2**31)) + 1
    grid = Grid(x0, y0, size, columns, rows, np.empty(0, np.int64), np.empty(0, np.int64))
    cell = grid.row(y) * columns + grid.column(x)
    order = np.argsort(cell).astype(np.int64)  # order within a cell does not matter
    start = np.zeros(columns * rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(cell, minlength=columns * rows), out=start[1:])
    return Grid(x0, y0, size, columns, rows, order, start)


@dataclass(frozen=True)
class Runs:
    """One run of cell-sorted points per (polygon, covered cell row)."""

    polygon: IntArray
    first: IntArray
    stop: IntArray

    @property
    def lengths(self) -> IntArray:
        return self.stop - self.first


def runs(grid: Grid, bounds: FloatArray) -> Runs:
    """The runs of sorted points under each polygon's box, polygons in input order."""
    left, right = grid.column(bounds[:, 0]), grid.column(bounds[:, 2])
    bottom, top = grid.row(bounds[:, 1]), grid.row(bounds[:, 3])
    count = top - bottom + 1
    polygon = np.repeat(np.arange(bounds.shape[0], dtype=np.int64), count)
    row = np.repeat(bottom, count) + _ramp(count)
    first = grid.start[row * grid.columns + left[polygon]]
    stop = grid.start[row * grid.columns + right[polygon] + 1]
    return Runs(polygon, first, stop)


def _ramp(counts: IntArray) -> IntArray:
    """0..n-1 for each n in ``counts``, concatenated."""
    total = int(counts.sum())
    return np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)


def candidate_pairs(grid: Grid, x: FloatArray, y: FloatArray, bounds: FloatArray,
                    chunk: int = CHUNK_CANDIDATES) -> Iterator[tuple[IntArray, IntArray]]:
    """(polygon index, point index) pairs whose point is in the polygon's closed box.

    Yields them a chunk of polygons at a time, each chunk making at most
    ``chunk`` grid candidates (a single polygon may exceed it alone).
    """
    found = runs(grid, bounds)
    per_polygon = np.bincount(found.polygon, weights=found.lengths,
                              minlength=bounds.shape[0]).astype(np.int64)
    for lo, hi in _chunks(per_polygon, chunk):
        at = slice(int(np.searchsorted(found.polygon, lo)),
                   int(np.searchsorted(found.polygon, hi)))
        lengths = found.lengths[at]
        polygon = np.repeat(found.polygon[at], lengths)
        point = grid.order[np.repeat(found.first[at], lengths) + _ramp(lengths)]
        keep = (x[point] >= bounds[polygon, 0]) & (x[point] <= bounds[polygon, 2])
        polygon, point = polygon[keep], point[keep]
        keep = (y[point] >= bounds[polygon, 1]) & (y[point] <= bounds[polygon, 3])
        yield polygon[keep], point[keep]


def _chunks(weights: IntArray, limit: int) -> list[tuple[int, int]]:
    """Consecutive index ranges whose weights sum to at most ``limit`` (one index at least)."""
    bounds: list[tuple[int, int]] = []
    total = np.cumsum(weights)
    lo, base = 0, 0
    n = weights.shape[0]
    while lo < n:
        hi = int(np.searchsorted(total, base + limit, side="right"))
        hi = max(hi, lo + 1)
        bounds.append((lo, hi))
        base = int(total[hi - 1])
        lo = hi
    return bounds
