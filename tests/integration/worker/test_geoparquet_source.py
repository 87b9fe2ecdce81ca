"""The vectorized engine reads GeoParquet when the job's source names it (issue 9).

The tables are exported from PostGIS to GeoParquet on the stack's S3; the same
partitions joined from the tables and from the files give the same rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from psycopg_pool import ConnectionPool

from spatialjoin_contracts.task_message import TaskMessage
from spatialjoin_worker.postgis_engine import PostgisEngine
from spatialjoin_worker.query import GeoParquetNeedsVectorized
from spatialjoin_worker.settings import InvalidGeometryPolicy
from spatialjoin_worker.vectorized_engine import VectorizedEngine

from .conftest import WorkerWorld
from .test_engines_agree import HEAP, WORKER_BATCH_ROWS, _load_tricky, materialize

pytestmark = pytest.mark.integration

BBOX_FIELDS = ("xmin", "ymin", "xmax", "ymax")


@pytest.fixture
def db_pool(world: WorkerWorld) -> Iterator[ConnectionPool]:
    with ConnectionPool(world.database_url, min_size=1, max_size=4) as pool:
        yield pool


def export(world: WorkerWorld, s3: Any, table: str, path: str, *, partition: bool,
           covering: bool, files: int = 1, row_group_rows: int = 200) -> str:
    """``table`` as GeoParquet (WKB, small row groups) in ``files`` files under ``path``."""
    columns = "id, spatial_partition, " if partition else "id, "
    with world.connect() as conn:
        rows = conn.execute(
            f"SELECT {columns} ST_AsBinary(geom), ST_XMin(geom), ST_YMin(geom), "
            f"ST_XMax(geom), ST_YMax(geom) FROM {table} ORDER BY id").fetchall()
    names = ["id", "spatial_partition"] if partition else ["id"]
    arrays: dict[str, pa.Array] = {name: pa.array([r[i] for r in rows])
                                   for i, name in enumerate(names)}
    arrays["id"] = arrays["id"].cast(pa.int64())
    offset = len(names)
    arrays["geom"] = pa.array([None if r[offset] is None else bytes(r[offset]) for r in rows],
                              pa.binary())
    geo: dict[str, Any] = {"encoding": "WKB", "geometry_types": []}
    if covering:
        arrays["bbox"] = pa.StructArray.from_arrays(
            [pa.array([r[offset + 1 + i] for r in rows], pa.float64()) for i in range(4)],
            names=list(BBOX_FIELDS))
        geo["covering"] = {"bbox": {k: ["bbox", k] for k in BBOX_FIELDS}}
    metadata = {b"geo": json.dumps({"version": "1.1.0", "primary_column": "geom",
                                    "columns": {"geom": geo}}).encode()}
    data = pa.table(arrays).replace_schema_metadata(metadata)
    step = -(-data.num_rows // files)
    for index in range(files):
        part = data.slice(index * step, step)
        name = f"{path}/part-{index}.parquet" if files > 1 else f"{path}.parquet"
        pq.write_table(part, name, filesystem=s3, row_group_size=row_group_rows)
    return f"s3://{path}/" if files > 1 else f"s3://{path}.parquet"


def vectorized(pool: ConnectionPool, s3: Any,
               policy: InvalidGeometryPolicy = InvalidGeometryPolicy.MAKE_VALID
               ) -> VectorizedEngine:
    return VectorizedEngine(pool, batch_rows=WORKER_BATCH_ROWS, statement_timeout_s=60,
                            policy=policy, heap=HEAP, filesystem=s3)


def rows_of(s3: Any, uri: str) -> list[tuple[Any, ...]]:
    table = pq.read_table(uri.removeprefix("s3://"), filesystem=s3)
    return list(zip(*(table.column(c).to_pylist()
                      for c in ("domain_id", "feature_id", "geometry")), strict=True))


def compare(world: WorkerWorld, s3: Any, engine: VectorizedEngine, from_tables: list[TaskMessage],
            from_files: list[TaskMessage], label: str) -> int:
    """Materialize both task lists; assert equal rows, invalid counts and files; total rows."""
    total = 0
    for a, b in zip(from_tables, from_files, strict=True):
        assert a.partition_key == b.partition_key
        base = f"s3://{world.bucket_path}/{label}"
        written_a, invalid_a = materialize(engine, a, s3, f"{base}/t/{a.partition_key}.parquet")
        written_b, invalid_b = materialize(engine, b, s3, f"{base}/f/{b.partition_key}.parquet")
        assert rows_of(s3, written_b.uri) == rows_of(s3, written_a.uri), a.partition_key
        assert (written_b.rows, invalid_b) == (written_a.rows, invalid_a), a.partition_key
        assert written_b.sha256 == written_a.sha256, a.partition_key
        total += written_a.rows
    return total


@pytest.mark.parametrize("covering", [True, False], ids=["bbox-covering", "wkb-only"])
def test_geoparquet_gives_the_rows_of_the_tables(world: WorkerWorld, s3_filesystem: Any,
                                                 db_pool: ConnectionPool, covering: bool) -> None:
    polygons = export(world, s3_filesystem, "domain_a_polygons",
                      f"{world.bucket_path}/gpq/polygons", partition=True, covering=covering)
    points = export(world, s3_filesystem, "domain_b_points", f"{world.bucket_path}/gpq/points",
                    partition=False, covering=covering, files=3)
    uid = "0c6f1f0e-9d0b-4c57-8b0e-1d5a2b7f1c11"
    from_tables = world.tasks(world.job(), uid=uid)
    from_files = world.tasks(world.job(source={"polygons": {"geoparquet": polygons},
                                               "points": {"geoparquet": points}}), uid=uid)
    engine = vectorized(db_pool, s3_filesystem)
    total = compare(world, s3_filesystem, engine, from_tables, from_files,
                    f"generated-{covering}")
    assert total > 1000
    mixed = world.tasks(world.job(source={"polygons": {"geoparquet": polygons},
                                          "points": {"table": "domain_b_points"}}), uid=uid)
    assert compare(world, s3_filesystem, engine, from_tables[:3], mixed[:3],
                   f"mixed-{covering}") > 0


@pytest.mark.parametrize("policy", [InvalidGeometryPolicy.MAKE_VALID, InvalidGeometryPolicy.SKIP])
def test_tricky_geometries_read_from_geoparquet_join_the_same(
        world: WorkerWorld, s3_filesystem: Any, db_pool: ConnectionPool,
        policy: InvalidGeometryPolicy) -> None:
    """NULL, empty, invalid and collapsing polygons; points, lines, multi-points, NULL and
    empty features; an edge that only touches the bbox (PostGIS's float32 boxes)."""
    _load_tricky(world)
    polygons = export(world, s3_filesystem, "tricky_polygons",
                      f"{world.bucket_path}/tricky/polygons", partition=True, covering=False,
                      row_group_rows=3)
    features = export(world, s3_filesystem, "tricky_features",
                      f"{world.bucket_path}/tricky/features", partition=False, covering=True,
                      files=2, row_group_rows=4)
    uid = "5a0f7c59-52ab-4c1e-9a2e-7f0c3e1b2d44"
    partitions = ["p04", "p05", "p06"]
    from_tables = world.tasks(world.job(partitions=partitions, source={
        "polygons": {"table": "tricky_polygons"}, "points": {"table": "tricky_features"}}),
        uid=uid)
    from_files = world.tasks(world.job(partitions=partitions, source={
        "polygons": {"geoparquet": polygons}, "points": {"geoparquet": features}}), uid=uid)
    total = compare(world, s3_filesystem, vectorized(db_pool, s3_filesystem, policy),
                    from_tables, from_files, f"tricky-{policy.value}")
    assert total > 10


def test_the_postgis_engine_refuses_geoparquet(world: WorkerWorld,
                                               db_pool: ConnectionPool) -> None:
    (task,) = world.tasks(world.job(partitions=["p05"], source={
        "polygons": {"table": "domain_a_polygons"},
        "points": {"geoparquet": f"s3://{world.bucket_path}/points.parquet"}}))
    engine = PostgisEngine(db_pool, batch_rows=WORKER_BATCH_ROWS, statement_timeout_s=60,
                           policy=InvalidGeometryPolicy.MAKE_VALID, heap=HEAP)
    with pytest.raises(GeoParquetNeedsVectorized, match="engine: vectorized"), engine.join(task):
        pass
