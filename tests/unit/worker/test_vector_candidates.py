"""Grid candidates are exactly the STRtree's bounding-box candidates."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from spatialjoin_worker.candidates import _chunks, build_grid, candidate_pairs, cell_size

pytestmark = pytest.mark.unit


def _strtree_pairs(x: np.ndarray, y: np.ndarray, boxes: np.ndarray) -> set[tuple[int, int]]:
    tree = shapely.STRtree(shapely.points(x, y))
    poly_at, point_at = tree.query(shapely.box(boxes[:, 0], boxes[:, 1], boxes[:, 2],
                                               boxes[:, 3]))
    return set(zip(poly_at.tolist(), point_at.tolist(), strict=True))


def _grid_pairs(x: np.ndarray, y: np.ndarray, boxes: np.ndarray,
                chunk: int = 500_000) -> set[tuple[int, int]]:
    grid = build_grid(x, y, boxes)
    found: list[tuple[int, int]] = []
    for poly_at, point_at in candidate_pairs(grid, x, y, boxes, chunk):
        found.extend(zip(poly_at.tolist(), point_at.tolist(), strict=True))
    assert len(found) == len(set(found)), "a pair came out twice"
    return set(found)


def _boxes(rng: np.random.Generator, count: int, scale: float) -> np.ndarray:
    cx, cy = rng.uniform(0, 10, count), rng.uniform(0, 10, count)
    w, h = rng.lognormal(np.log(scale), 1.0, count), rng.lognormal(np.log(scale), 1.0, count)
    return np.column_stack([cx - w, cy - h, cx + w, cy + h])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_boxes_and_clustered_points(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(5, 0.5, 3000), rng.uniform(-1, 11, 2000)])
    y = np.concatenate([rng.normal(5, 0.5, 3000), rng.uniform(-1, 11, 2000)])
    boxes = _boxes(rng, 400, 0.2)
    assert _grid_pairs(x, y, boxes) == _strtree_pairs(x, y, boxes)


def test_points_on_box_edges_and_corners_are_candidates() -> None:
    boxes = np.array([[0.0, 0.0, 1.0, 1.0], [0.3, 0.3, 0.3, 0.9], [1.0, 1.0, 2.0, 2.0]])
    x = np.array([0.0, 1.0, 1.0, 0.5, 0.3, 0.3, 2.0, 1.0 + 1e-15, -1e-300])
    y = np.array([0.0, 1.0, 0.5, 0.0, 0.3, 0.95, 2.0, 1.0, 0.5])
    found = _grid_pairs(x, y, boxes)
    assert found == _strtree_pairs(x, y, boxes)
    assert {(0, 0), (0, 1), (2, 1), (1, 4), (2, 6)} <= found
    assert (1, 5) not in found and (0, 8) not in found


def test_one_huge_box_among_tiny_ones() -> None:
    rng = np.random.default_rng(7)
    x, y = rng.uniform(0, 100, 4000), rng.uniform(0, 100, 4000)
    boxes = np.vstack([_boxes(rng, 200, 0.01) * 10, [[-5.0, -5.0, 105.0, 105.0]]])
    assert _grid_pairs(x, y, boxes) == _strtree_pairs(x, y, boxes)


def test_degenerate_extents_do_not_break_the_grid() -> None:
    x = np.full(50, 3.0)
    y = np.linspace(0, 1, 50)
    boxes = np.array([[3.0, 0.2, 3.0, 0.4], [2.0, 0.0, 4.0, 0.0]])
    assert _grid_pairs(x, y, boxes) == _strtree_pairs(x, y, boxes)


def test_small_chunks_give_the_same_pairs() -> None:
    rng = np.random.default_rng(11)
    x, y = rng.uniform(0, 10, 3000), rng.uniform(0, 10, 3000)
    boxes = _boxes(rng, 300, 0.3)
    assert _grid_pairs(x, y, boxes, chunk=50) == _strtree_pairs(x, y, boxes)


def test_chunks_respect_the_limit_but_always_progress() -> None:
    weights = np.array([3, 3, 10, 1, 1, 1], dtype=np.int64)
    assert _chunks(weights, 6) == [(0, 2), (2, 3), (3, 6)]
    assert _chunks(np.zeros(0, dtype=np.int64), 6) == []


def test_cell_count_stays_proportional_to_points() -> None:
    bounds = np.array([[0.0, 0.0, 1e-9, 1e-9]])
    size = cell_size(bounds, 1000.0, 1000.0, 10)
    assert (1000.0 / size + 1) ** 2 <= 3 * 1024 + 1
