"""Both engines on the same tables give the same result files (issue 9).

Point results must be byte-identical to the postgis engine's (and so are the
whole files, checksums included, when every match is a point); intersections
of other features must be ST_Equals to PostGIS's ST_Intersection.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from psycopg_pool import ConnectionPool

from spatialjoin_contracts.models import ContractVersion
from spatialjoin_contracts.task_message import TaskMessage
from spatialjoin_devstack.waiting import wait_for
from spatialjoin_worker.engine import JoinEngine
from spatialjoin_worker.materialize import Materializer, WrittenObject
from spatialjoin_worker.memory import HeapGuard
from spatialjoin_worker.postgis_engine import PostgisEngine
from spatialjoin_worker.settings import InvalidGeometryPolicy, WorkerSettings
from spatialjoin_worker.vectorized_engine import TileLimits, VectorizedEngine, VectorizedMetrics
from tests.support.kafka import group_lag, publish, read_all
from tests.support.workers import running_workers

from .conftest import WorkerWorld

pytestmark = pytest.mark.integration

HEAP = HeapGuard.from_mb(4096)
WORKER_BATCH_ROWS = WorkerSettings.model_fields["batch_rows"].default

# In partition p05 (lon -110..-95, lat 33..41) unless said otherwise.
POLYGONS = [
    (1, "p05", "POLYGON((-105 35,-103 35,-103 37,-105 37,-105 35),"
               "(-104.5 35.5,-103.5 35.5,-103.5 36.5,-104.5 36.5,-104.5 35.5))"),
    (2, "p05", "MULTIPOLYGON(((-102 35,-101 35,-101 36,-102 36,-102 35)),"
               "((-101 36,-100 36,-100 37,-101 37,-101 36)))"),
    (3, "p05", "POLYGON((-105 38,-104 39,-104 38,-105 39,-105 38))"),  # bowtie: invalid
    (4, "p05", "POLYGON((-96 37,-94 37,-94 38,-96 38,-96 37))"),  # reaches past the bbox
    (5, "p05", "POLYGON((-95 39,-94 39,-94 40,-95 40,-95 39))"),  # only touches the bbox
    (6, "p05", None),
    (7, "p05", "POLYGON EMPTY"),
    (8, "p04", "POLYGON((-105.5 35,-104.5 35,-104.5 36,-105.5 36,-105.5 35))"),
    (9, "p05", "POLYGON((-103 38,-101 38,-101 40,-103 38))"),
    (10, "p06", "POLYGON((-95.5 37,-94.5 37,-94.5 37.8,-95.5 37.8,-95.5 37))"),
    (11, "p05", "POLYGON((-90 37,-89 37,-89 38,-90 38,-90 37))"),  # outside the bbox
    (12, "p05", "POLYGON((-103 35,-102 35,-103 35,-103 35))"),  # collapses to a line
]

POINTS = [
    (1, "POINT(-104.8 35.2)"),    # inside polygon 1
    (2, "POINT(-104 36)"),        # in its hole
    (3, "POINT(-104.5 36)"),      # on the hole's ring
    (4, "POINT(-105 36)"),        # on the outer edge
    (5, "POINT(-105 35)"),        # on a vertex
    (6, "POINT(-104.8 35.2)"),    # same place, other id
    (6, "POINT(-104.8 35.2)"),    # the same row twice
    (7, "POINT(-101 36)"),        # where the multipolygon's parts touch
    (8, "POINT(-101.5 35.5)"),    # inside the multipolygon
    (9, "POINT(-104.9 38.5)"),    # inside the bowtie, once made valid
    (10, "POINT(-104.5 38.5)"),   # on the bowtie's crossing
    (11, "POINT(-94.5 37.5)"),    # outside the partition bbox, inside polygon 4
    (12, "POINT(-94.5 39.5)"),    # inside polygon 5
    (13, "POINT(-102 39)"),       # on the triangle's diagonal
    (14, "POINT(-101 39)"),       # on the triangle's vertical edge
    (15, None),
    (16, "POINT EMPTY"),
    (17, "POINT(-80 30)"),
    (18, "POINT(-95 39.5)"),      # on polygon 5's edge, which is the bbox's edge
    (19, "POINT(-104.80000000000001 35.2)"),
    (20, "POINT(-102.5 35)"),     # on polygon 12 made valid (a line)
    (21, "POINT(-95.2 37.5)"),    # polygon 4 (p05) and polygon 10 (p06)
]

FEATURES = [
    (100, "LINESTRING(-105.5 36,-102.5 36)"),  # crosses polygon 1 and its hole
    (101, "POLYGON((-103.5 36.5,-102.5 36.5,-102.5 37.5,-103.5 37.5,-103.5 36.5))"),
    (102, "MULTIPOINT((-104.8 35.1),(-104 36),(-101.5 35.5))"),
    (103, "LINESTRING(-106 35,-105 35)"),       # touches polygon 1 at a vertex
    (104, "LINESTRING EMPTY"),
    (105, None),
]


@pytest.fixture
def db_pool(world: WorkerWorld) -> Iterator[ConnectionPool]:
    with ConnectionPool(world.database_url, min_size=1, max_size=4) as pool:
        yield pool


def engines(pool: ConnectionPool, policy: InvalidGeometryPolicy = InvalidGeometryPolicy.MAKE_VALID,
            limits: TileLimits | None = None, batch_rows: int = WORKER_BATCH_ROWS,
            metrics: VectorizedMetrics | None = None) -> dict[str, JoinEngine]:
    """Both engines; each batch is a row group, so equal files need equal batch_rows."""
    return {"postgis": PostgisEngine(pool, batch_rows=batch_rows, statement_timeout_s=60,
                                     policy=policy, heap=HEAP),
            "vectorized": VectorizedEngine(pool, batch_rows=batch_rows, statement_timeout_s=60,
                                           policy=policy, heap=HEAP, limits=limits,
                                           metrics=metrics)}


def materialize(engine: JoinEngine, task: TaskMessage, s3: Any, uri: str) -> tuple[WrittenObject,
                                                                                    int]:
    with engine.join(task) as stream:
        written = Materializer(s3, row_group_rows=250_000, heap=HEAP).write(
            uri, stream.schema, stream.batches, contract=ContractVersion.V2_1,
            compression=task.output.compression, trace_id=task.trace_id,
            partition_key=task.partition_key)
        return written, stream.invalid.count


def run_both(world: WorkerWorld, s3: Any, pool: ConnectionPool, tasks: list[TaskMessage],
             label: str, **options: Any) -> dict[str, dict[str, tuple[WrittenObject, int]]]:
    out: dict[str, dict[str, tuple[WrittenObject, int]]] = {}
    for name, engine in engines(pool, **options).items():
        out[name] = {t.partition_key: materialize(
            engine, t, s3, f"s3://{world.bucket_path}/{label}/{name}/{t.partition_key}.parquet")
            for t in tasks}
    return out


def test_generated_data_gives_byte_identical_files(world: WorkerWorld, s3_filesystem: Any,
                                                   db_pool: ConnectionPool) -> None:
    tasks = world.tasks(world.job())
    found = run_both(world, s3_filesystem, db_pool, tasks, "generated", batch_rows=2000)
    metrics = VectorizedMetrics()
    tiled = run_both(world, s3_filesystem, db_pool, tasks, "tiled", batch_rows=2000,
                     limits=TileLimits(read_points=300, join_points=40), metrics=metrics)
    split = metrics.registry.get_sample_value("spatialjoin_worker_vectorized_split_tasks_total")
    tiles = metrics.registry.get_sample_value("spatialjoin_worker_vectorized_tiles_total")
    assert split == 12 and tiles is not None and tiles > 12 * 10
    for task in tasks:
        (a, invalid_a), (b, invalid_b) = (found[e][task.partition_key]
                                          for e in ("postgis", "vectorized"))
        assert (b.rows, b.sha256, invalid_b) == (a.rows, a.sha256, invalid_a), task.partition_key
        assert not a.deviations and not b.deviations
        assert tiled["vectorized"][task.partition_key][0].sha256 == a.sha256
    assert sum(v[0].rows for v in found["postgis"].values()) > 1000
    assert sum(v[1] for v in found["postgis"].values()) > 0, "the data has invalid polygons"


def _load_tricky(world: WorkerWorld) -> None:
    with world.connect() as conn:
        conn.execute("CREATE TABLE tricky_polygons (id bigint, spatial_partition text, "
                     "geom geometry(Geometry, 4326))")
        conn.execute("CREATE TABLE tricky_points (id bigint, geom geometry(Point, 4326))")
        conn.execute("CREATE TABLE tricky_features (id bigint, geom geometry(Geometry, 4326))")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO tricky_polygons VALUES (%s, %s, "
                            "ST_GeomFromText(%s, 4326))", POLYGONS)
            cur.executemany("INSERT INTO tricky_points VALUES (%s, ST_GeomFromText(%s, 4326))",
                            POINTS)
            cur.executemany("INSERT INTO tricky_features VALUES (%s, ST_GeomFromText(%s, 4326))",
                            POINTS + FEATURES)
        for table in ("tricky_polygons", "tricky_points", "tricky_features"):
            conn.execute(f"CREATE INDEX ON {table} USING gist (geom)")
            conn.execute(f"ANALYZE {table}")


def _read(s3: Any, written: WrittenObject) -> pa.Table:
    return pq.read_table(written.uri.removeprefix("s3://"), filesystem=s3)


def _pairs(table: pa.Table) -> list[tuple[int, int]]:
    return list(zip(table.column("domain_id").to_pylist(), table.column("feature_id").to_pylist(),
                    strict=True))


def _equal_geometries(world: WorkerWorld, a: bytes, b: bytes) -> bool:
    with world.connect() as conn:
        row = conn.execute("SELECT ST_Equals(ST_GeomFromWKB(%s), ST_GeomFromWKB(%s))",
                           (a, b)).fetchone()
    return bool(row and row[0])


def _tricky_tasks(world: WorkerWorld, points_table: str) -> list[TaskMessage]:
    return world.tasks(world.job(partitions=["p04", "p05", "p06"], source={
        "polygons": {"table": "tricky_polygons"}, "points": {"table": points_table}}))


@pytest.mark.parametrize("policy", [InvalidGeometryPolicy.MAKE_VALID, InvalidGeometryPolicy.SKIP])
def test_tricky_points_give_byte_identical_files(world: WorkerWorld, s3_filesystem: Any,
                                                 db_pool: ConnectionPool,
                                                 policy: InvalidGeometryPolicy) -> None:
    _load_tricky(world)
    tasks = _tricky_tasks(world, "tricky_points")
    found = run_both(world, s3_filesystem, db_pool, tasks, f"tricky-{policy.value}",
                     policy=policy)
    for task in tasks:
        (a, invalid_a), (b, invalid_b) = (found[e][task.partition_key]
                                          for e in ("postgis", "vectorized"))
        assert (b.rows, b.sha256, invalid_b) == (a.rows, a.sha256, invalid_a), task.partition_key
    p05 = _pairs(_read(s3_filesystem, found["vectorized"]["p05"][0]))
    expected = [(1, 1), (1, 3), (1, 4), (1, 5), (1, 6), (1, 6), (1, 19), (2, 7), (2, 8),
                (4, 11), (4, 21), (5, 12), (5, 18), (9, 13), (9, 14)]
    if policy is InvalidGeometryPolicy.MAKE_VALID:
        expected += [(3, 9), (3, 10), (12, 20)]
    assert p05 == sorted(expected)
    assert found["vectorized"]["p05"][1] == 2, "the bowtie and the collapsed polygon"
    assert _pairs(_read(s3_filesystem, found["vectorized"]["p06"][0])) == [(10, 11), (10, 21)]
    assert found["vectorized"]["p04"][0].rows == 0


def test_other_feature_types_intersect_like_postgis(world: WorkerWorld, s3_filesystem: Any,
                                                    db_pool: ConnectionPool) -> None:
    _load_tricky(world)
    (task,) = [t for t in _tricky_tasks(world, "tricky_features") if t.partition_key == "p05"]
    found = run_both(world, s3_filesystem, db_pool, [task], "features")
    a, b = (_read(s3_filesystem, found[e]["p05"][0]) for e in ("postgis", "vectorized"))
    assert _pairs(b) == _pairs(a)
    assert {(1, 100), (1, 101), (1, 102), (1, 103), (2, 102)} <= set(_pairs(a))
    point_ids = {p[0] for p in POINTS}
    for row, (domain_id, feature_id) in enumerate(_pairs(a)):
        wkb_a, wkb_b = a.column("geometry")[row].as_py(), b.column("geometry")[row].as_py()
        if feature_id in point_ids:
            assert wkb_b == wkb_a, (domain_id, feature_id)
        else:
            assert _equal_geometries(world, wkb_a, wkb_b), (domain_id, feature_id)


def test_a_drifted_id_column_deviates_the_same_way(world: WorkerWorld, s3_filesystem: Any,
                                                   db_pool: ConnectionPool) -> None:
    with world.connect() as conn:
        conn.execute("CREATE TABLE drifted AS SELECT id::int4 AS id, spatial_partition, geom "
                     "FROM domain_a_polygons")
    (task,) = world.tasks(world.job(partitions=["p05"], source={
        "polygons": {"table": "drifted"}, "points": {"table": "domain_b_points"}}))
    found = run_both(world, s3_filesystem, db_pool, [task], "drifted")
    a, b = found["postgis"]["p05"][0], found["vectorized"]["p05"][0]
    assert [str(d) for d in b.deviations] == [str(d) for d in a.deviations]
    assert any("column-type domain_id" in str(d) for d in b.deviations)


def _results(world: WorkerWorld, trace_id: str) -> dict[str, tuple[str, int, str]]:
    with world.connect() as conn:
        rows = conn.execute("SELECT partition_key, result_uri, rows, checksum_sha256 "
                            "FROM spatial_join_results WHERE trace_id = %s",
                            (trace_id,)).fetchall()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def test_vectorized_workers_write_what_the_postgis_engine_would(
        world: WorkerWorld, s3_filesystem: Any, db_pool: ConnectionPool) -> None:
    tasks = world.tasks(world.job())
    trace_id = tasks[0].trace_id
    publish(world.bootstrap, world.topic, tasks)
    env = world.env(SPATIALJOIN_ENGINE="vectorized")
    with running_workers(env, world.log_dir, count=2) as workers:
        wait_for(lambda: len(_results(world, trace_id)) == 12, timeout=120, interval=0.5,
                 what="12 partitions recorded")
        wait_for(lambda: group_lag(world.bootstrap, world.group, world.topic, 12) == 0,
                 timeout=30, interval=0.5, what="lag 0 after commits")
    assert all(w.proc.returncode == 0 for w in workers), [w.log()[-2000:] for w in workers]
    assert "vectorized join done" in "".join(w.log() for w in workers)
    recorded = _results(world, trace_id)
    postgis = engines(db_pool)["postgis"]
    for task in tasks:
        uri, rows, checksum = recorded[task.partition_key]
        assert uri == task.output.uri
        reference, _ = materialize(postgis, task, s3_filesystem,
                                   f"s3://{world.bucket_path}/reference/{task.partition_key}"
                                   ".parquet")
        assert (rows, checksum) == (reference.rows, reference.sha256), task.partition_key


def test_dwithin_is_dead_lettered_by_the_vectorized_engine(world: WorkerWorld) -> None:
    job = world.job(partitions=["p05"], source={
        "polygons": {"table": "domain_a_polygons"}, "points": {"table": "domain_b_points"},
        "predicate": {"type": "dwithin", "distanceMeters": 100}})
    (task,) = world.tasks(job)
    publish(world.bootstrap, world.topic, [task])
    with running_workers(world.env(SPATIALJOIN_ENGINE="vectorized"), world.log_dir):
        (record,) = read_all(world.bootstrap, world.dlq, expected=1, timeout=60)
    assert record["headers"]["dlq.reason"] == "query"
    assert "engine: postgis" in record["headers"]["dlq.error"]
    with psycopg.connect(world.database_url) as conn:
        row = conn.execute("SELECT status, failure_kind FROM spatial_async_jobs "
                           "WHERE trace_id = %s", (task.trace_id,)).fetchone()
    assert row == ("failed", "query")


def test_heap_cap_fails_the_task_the_same_way(world: WorkerWorld) -> None:
    (task,) = world.tasks(world.job(partitions=["p05"]))
    publish(world.bootstrap, world.topic, [task])
    env = world.env(SPATIALJOIN_ENGINE="vectorized", SPATIALJOIN_MAX_HEAP_MB="1")
    with running_workers(env, world.log_dir) as (worker,):
        (record,) = read_all(world.bootstrap, world.dlq, expected=1, timeout=60)
    assert worker.proc.returncode == 0, "the process survives; only the task fails"
    assert record["headers"]["dlq.reason"] == "heap-cap"
    assert "maxHeapMb" in record["headers"]["dlq.error"]
