"""Tiles own every point exactly once and keep within their limits."""

from __future__ import annotations

import numpy as np
import pytest

from spatialjoin_worker.tiling import Box, extent, plan_read_tiles, split_points
from spatialjoin_worker.vectorized_engine import TileLimits

pytestmark = pytest.mark.unit


def _leaves(box: Box, depth: int) -> list[Box]:
    if depth == 0:
        return [box]
    halves = box.halves()
    assert halves is not None
    return [leaf for half in halves for leaf in _leaves(half, depth - 1)]


def test_halves_own_every_point_once_edges_included() -> None:
    root = Box(0.0, 0.0, 4.0, 2.0)
    grid = np.linspace(0.0, 4.0, 17)
    xs, ys = np.meshgrid(grid, grid / 2)
    x, y = xs.ravel(), ys.ravel()
    owners = np.sum([leaf.contains(x, y) for leaf in _leaves(root, 4)], axis=0)
    assert bool((owners == 1).all())
    assert not root.contains(np.array([4.0 + 1e-12, np.nan]), np.array([1.0, 1.0])).any()


def test_a_box_too_small_to_halve_says_so() -> None:
    assert Box(1.0, 1.0, 1.0, 1.0).halves() is None
    assert Box(1.0, 1.0, np.nextafter(1.0, 2.0), 1.0).halves() is None


def test_read_tiles_split_until_the_estimate_fits() -> None:
    def estimate(box: Box) -> float:  # 100 points per unit of area
        return (box.xmax - box.xmin) * (box.ymax - box.ymin) * 100

    tiles = plan_read_tiles(Box(0.0, 0.0, 4.0, 4.0), estimate, max_points=250)
    assert len(tiles) == 8 and all(estimate(t) <= 250 for t in tiles)
    assert sum(estimate(t) for t in tiles) == pytest.approx(1600)
    assert plan_read_tiles(Box(0.0, 0.0, 1.0, 1.0), estimate, 1000) == [Box(0.0, 0.0, 1.0, 1.0)]


def test_read_tiles_stop_at_the_tile_cap() -> None:
    tiles = plan_read_tiles(Box(0.0, 0.0, 1.0, 1.0), lambda _: 1e12, 10, max_tiles=16)
    assert len(tiles) <= 16


def test_split_points_partitions_indices_within_the_limit() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(0, 1, 10_000), rng.normal(0, 3, 10_000)
    groups = split_points(x, y, 700)
    assert all(len(g) <= 700 for g in groups)
    assert np.array_equal(np.sort(np.concatenate(groups)), np.arange(10_000))
    assert all((np.diff(g) > 0).all() for g in groups), "indices stay ascending (id order)"


def test_a_pile_of_identical_points_cannot_be_cut() -> None:
    x = np.concatenate([np.full(50, 2.0), [1.0, 3.0]])
    y = np.full(52, 5.0)
    groups = split_points(x, y, 10)
    assert max(len(g) for g in groups) == 50
    assert sum(len(g) for g in groups) == 52


def test_extent_skips_non_finite_rows() -> None:
    bounds = np.array([[0.0, 1.0, 2.0, 3.0], [np.nan] * 4, [-1.0, 2.0, 1.0, 5.0]])
    assert extent(bounds) == Box(-1.0, 1.0, 2.0, 5.0)
    assert extent(np.full((1, 4), np.nan)) is None


def test_limits_follow_the_heap_cap() -> None:
    small = TileLimits.for_heap(1024 * 2**20, slots=2, tasks=8)
    big = TileLimits.for_heap(4096 * 2**20, slots=2, tasks=8)
    assert big.read_points > small.read_points and big.join_points > small.join_points
    assert TileLimits.for_heap(1, slots=2, tasks=8) == TileLimits(4096, 4096)
