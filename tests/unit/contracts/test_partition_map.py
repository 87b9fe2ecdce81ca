"""The default 12-tile grid and what a job selects from a pool's map."""

from __future__ import annotations

import itertools

import pytest

from spatialjoin_contracts import samples
from spatialjoin_contracts.models import BBox, SpatialJoinJobSpec, WorkerPoolSpec
from spatialjoin_contracts.partition_map import (
    CONTINENTAL_REGION,
    grid_partition_map,
    selected_partitions,
    task_bbox,
)
from spatialjoin_contracts.validation import validate_pool

pytestmark = pytest.mark.unit


def test_grid_has_twelve_named_tiles_on_kafka_partitions_0_to_11() -> None:
    entries = grid_partition_map()
    assert [e.name for e in entries] == [f"p{i:02d}" for i in range(12)]
    assert [e.kafka_partition for e in entries] == list(range(12))


def test_grid_tiles_the_region_without_gaps_or_overlaps() -> None:
    entries = grid_partition_map()
    area = sum(
        (e.bbox.max_lon - e.bbox.min_lon) * (e.bbox.max_lat - e.bbox.min_lat) for e in entries
    )
    region = CONTINENTAL_REGION
    assert area == pytest.approx(
        (region.max_lon - region.min_lon) * (region.max_lat - region.min_lat)
    )
    for a, b in itertools.combinations(entries, 2):
        overlap = a.bbox.intersection(b.bbox)
        if overlap is not None:  # neighbours share an edge, nothing more
            width = overlap.max_lon - overlap.min_lon
            height = overlap.max_lat - overlap.min_lat
            assert width == 0 or height == 0, (a.name, b.name)
    assert min(e.bbox.min_lon for e in entries) == region.min_lon
    assert max(e.bbox.max_lat for e in entries) == region.max_lat


def test_grid_is_a_valid_pool_map() -> None:
    assert validate_pool(WorkerPoolSpec.model_validate(samples.pool_spec())) == []


POOL = WorkerPoolSpec.model_validate(samples.pool_spec())


@pytest.mark.parametrize(
    ("partitions", "expected"),
    [
        (None, [f"p{i:02d}" for i in range(12)]),
        (["p05", "p01"], ["p01", "p05"]),  # partitionMap order
        (["p01", "zz"], ["p01"]),  # unknown names are validation's business
    ],
)
def test_selected_partitions(partitions: list[str] | None, expected: list[str]) -> None:
    job = SpatialJoinJobSpec.model_validate(samples.job_spec(partitions=partitions))
    assert [e.name for e in selected_partitions(job, POOL)] == expected


@pytest.mark.parametrize(
    ("bbox", "expected"),
    [
        (None, (-125.0, 25.0, -110.0, 33.0)),
        (
            {"minLon": -120, "minLat": 30, "maxLon": -100, "maxLat": 40},
            (-120.0, 30.0, -110.0, 33.0),
        ),
        ({"minLon": -80, "minLat": 40, "maxLon": -70, "maxLat": 45}, None),
    ],
)
def test_task_bbox_cuts_the_partition_by_the_job_bbox(
    bbox: dict[str, float] | None, expected: tuple[float, ...] | None
) -> None:
    job = SpatialJoinJobSpec.model_validate(samples.job_spec(bbox=bbox))
    result = task_bbox(POOL.partition_map[0], job)
    assert (result.as_tuple() if result else None) == expected


def test_bbox_intersection_is_symmetric() -> None:
    a = BBox(min_lon=0, min_lat=0, max_lon=2, max_lat=2)
    b = BBox(min_lon=1, min_lat=1, max_lon=3, max_lat=3)
    assert (
        a.intersection(b) == b.intersection(a) == BBox(min_lon=1, min_lat=1, max_lon=2, max_lat=2)
    )
