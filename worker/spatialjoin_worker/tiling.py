"""Tiles: how a partition too big for its memory share is cut into pieces that fit.

Two levels, both over point space, so that every (polygon, point) pair is found
in exactly one tile, the one owning the point (boxes are half-open: a tile owns
its lower edges, and its upper edges only where they are the partition's own):

- read tiles, planned before reading from the row estimates PostGIS keeps for
  its planner, bound the raw coordinates held at once (a few dozen bytes a
  point);
- join tiles, cut in memory from the points actually read (median splits),
  bound the grid, the sort and the matches (a hundred-odd bytes a point).

A polygon goes to every tile its bounding box overlaps; its matches come from
each tile's points and are put back in order at the end. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# A joined point: id/x/y (24 B), its grid cell and sort order (~40 B), its share of
# the matches (~1.2 a point on the sample data, 32 B each) and of the batches.
JOIN_BYTES_PER_POINT: Final = 160
# The candidates of one chunk of polygons while they live (candidates.CHUNK_CANDIDATES
# of them, ~80 B each): a fixed cost per running join.
CHUNK_CANDIDATE_BYTES: Final = 40 * 2**20
# A point read and waiting for a join slot: id/x/y (24 B) and some slack. The packed
# values it arrived as (another 24 B) live only while the task holds a read slot.
READ_BYTES_PER_POINT: Final = 32
MAX_READ_TILES: Final = 1024


@dataclass(frozen=True)
class Box:
    """An axis-aligned box, closed below; closed above only where ``closed_*`` says so."""

    xmin: float
    ymin: float
    xmax: float
    ymax: float
    closed_x: bool = True
    closed_y: bool = True

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.xmin, self.ymin, self.xmax, self.ymax)

    def contains(self, x: FloatArray, y: FloatArray) -> BoolArray:
        """Which points this box owns (NaN coordinates are owned by no box)."""
        inside_x = (x >= self.xmin) & ((x <= self.xmax) if self.closed_x else (x < self.xmax))
        inside_y = (y >= self.ymin) & ((y <= self.ymax) if self.closed_y else (y < self.ymax))
        return np.asarray(inside_x & inside_y, dtype=np.bool_)

    def halves(self) -> tuple[Box, Box] | None:
        """The two halves across the longer side, or None when it cannot be cut further."""
        if self.xmax - self.xmin >= self.ymax - self.ymin:
            middle = (self.xmin + self.xmax) / 2
            if not self.xmin < middle < self.xmax:
                return None
            return (replace(self, xmax=middle, closed_x=False), replace(self, xmin=middle))
        middle = (self.ymin + self.ymax) / 2
        if not self.ymin < middle < self.ymax:
            return None
        return (replace(self, ymax=middle, closed_y=False), replace(self, ymin=middle))


def extent(bounds: FloatArray) -> Box | None:
    """The closed box around rows of (xmin, ymin, xmax, ymax); None when there are none."""
    finite = bounds[np.isfinite(bounds).all(axis=1)]
    if finite.shape[0] == 0:
        return None
    return Box(float(finite[:, 0].min()), float(finite[:, 1].min()),
               float(finite[:, 2].max()), float(finite[:, 3].max()))


def plan_read_tiles(root: Box, estimate: Callable[[Box], float], max_points: int,
                    max_tiles: int = MAX_READ_TILES) -> list[Box]:
    """Halve boxes whose estimated point count is over ``max_points`` (breadth first)."""
    done: list[Box] = []
    pending = [root]
    while pending:
        box = pending.pop(0)
        halves = box.halves()
        if (halves is None or len(done) + len(pending) + 2 > max_tiles
                or estimate(box) <= max_points):
            done.append(box)
        else:
            pending.extend(halves)
    return done


def split_points(x: FloatArray, y: FloatArray, max_points: int) -> list[IntArray]:
    """Indices of the points, cut at medians into groups of at most ``max_points``.

    A pile of more than ``max_points`` identical locations cannot be cut and
    stays one group (the heap guard has the last word on it).
    """
    max_points = max(1, max_points)
    groups: list[IntArray] = []
    pending = [np.arange(x.shape[0], dtype=np.int64)]
    while pending:
        index = pending.pop()
        if index.shape[0] <= max_points:
            groups.append(index)
            continue
        low = _lower_half(x[index], y[index])
        if low is None:
            groups.append(index)
            continue
        pending.extend((index[~low], index[low]))
    return groups


def _lower_half(xs: FloatArray, ys: FloatArray) -> BoolArray | None:
    wide_x = float(xs.max() - xs.min()) >= float(ys.max() - ys.min())
    for values in ((xs, ys) if wide_x else (ys, xs)):
        middle = np.median(values)
        for low in (values < middle, values <= middle):
            if low.any() and not low.all():
                return np.asarray(low, dtype=np.bool_)
    return None
