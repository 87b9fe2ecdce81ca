"""Spatial partitions: the default continental grid and what a job selects from a pool's map."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from .models import BBox, PartitionMapEntry, SpatialJoinJobSpec, WorkerPoolSpec

# The continental United States, 60 x 24 degrees: a 4 x 3 grid of 15 x 8 degree tiles.
CONTINENTAL_REGION: Final = BBox(min_lon=-125.0, min_lat=25.0, max_lon=-65.0, max_lat=49.0)
GRID_COLUMNS: Final = 4
GRID_ROWS: Final = 3


def partition_name(index: int) -> str:
    """p00, p01, ... p11."""
    return f"p{index:02d}"


def grid_partition_map(
    region: BBox = CONTINENTAL_REGION, columns: int = GRID_COLUMNS, rows: int = GRID_ROWS
) -> list[PartitionMapEntry]:
    """Tiles of ``region``, row-major from the south-west corner; tile i uses Kafka partition i."""
    width = (region.max_lon - region.min_lon) / columns
    height = (region.max_lat - region.min_lat) / rows
    entries = []
    for row in range(rows):
        for col in range(columns):
            index = row * columns + col
            # Edges computed from the index, not accumulated, so neighbours share exact edges.
            last_col, last_row = col == columns - 1, row == rows - 1
            bbox = BBox(
                min_lon=region.min_lon + col * width,
                min_lat=region.min_lat + row * height,
                max_lon=region.max_lon if last_col else region.min_lon + (col + 1) * width,
                max_lat=region.max_lat if last_row else region.min_lat + (row + 1) * height,
            )
            entries.append(
                PartitionMapEntry(name=partition_name(index), bbox=bbox, kafka_partition=index)
            )
    return entries


def partition_map_document(entries: Sequence[PartitionMapEntry]) -> dict[str, Any]:
    """``{"partitionMap": [...]}``: a WorkerPool spec fragment in camelCase."""
    return {"partitionMap": [entry.to_k8s() for entry in entries]}


def selected_partitions(job: SpatialJoinJobSpec, pool: WorkerPoolSpec) -> list[PartitionMapEntry]:
    """The pool's entries the job runs, in partitionMap order (all when spec.partitions is absent).

    Names that are not in the map are left out here; validation reports them.
    """
    if job.partitions is None:
        return list(pool.partition_map)
    wanted = set(job.partitions)
    return [entry for entry in pool.partition_map if entry.name in wanted]


def task_bbox(entry: PartitionMapEntry, job: SpatialJoinJobSpec) -> BBox | None:
    """The envelope a partition's task queries: its bbox, cut by the job's extra bbox.

    None when the job's bbox misses the partition: the partition has nothing to join.
    """
    if job.bbox is None:
        return entry.bbox
    return entry.bbox.intersection(job.bbox)
