"""The worker on the real stack: results, redelivery, crashes, poison, drift, heap cap."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import shapely

from spatialjoin_devstack.waiting import wait_for
from tests.support.kafka import group_lag, publish, publish_raw, read_all
from tests.support.workers import running_workers

from .conftest import WorkerWorld

pytestmark = pytest.mark.integration


def statuses(world: WorkerWorld, trace_id: str) -> dict[str, str]:
    with world.connect() as conn:
        rows = conn.execute("SELECT partition_key, status FROM spatial_async_jobs "
                            "WHERE trace_id = %s", (trace_id,)).fetchall()
    return {r[0]: r[1] for r in rows}


def results(world: WorkerWorld, trace_id: str) -> dict[str, tuple[str, int, int, str]]:
    with world.connect() as conn:
        rows = conn.execute("SELECT partition_key, result_uri, rows, bytes, checksum_sha256 "
                            "FROM spatial_join_results WHERE trace_id = %s",
                            (trace_id,)).fetchall()
    return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}


def all_done(world: WorkerWorld, trace_id: str, count: int) -> bool:
    found = statuses(world, trace_id)
    return len(found) == count and set(found.values()) == {"done"}


def expected_pairs(world: WorkerWorld) -> dict[str, set[tuple[int, int]]]:
    """The join computed independently with shapely from the same tables."""
    with world.connect() as conn:
        polys = conn.execute("SELECT id, spatial_partition, ST_AsBinary(geom) "
                             "FROM domain_a_polygons").fetchall()
        pts = conn.execute("SELECT id, ST_X(geom), ST_Y(geom) FROM domain_b_points").fetchall()
    point_ids = np.array([p[0] for p in pts])
    geoms = shapely.points(np.array([[p[1], p[2]] for p in pts]))
    tree = shapely.STRtree(geoms)
    pairs: dict[str, set[tuple[int, int]]] = defaultdict(set)
    for pid, part, wkb in polys:
        polygon = shapely.from_wkb(bytes(wkb))
        if not polygon.is_valid:
            polygon = shapely.make_valid(polygon)
        for index in tree.query(polygon, predicate="intersects"):
            pairs[part].add((pid, int(point_ids[index])))
    return pairs


def read_pairs(world: WorkerWorld, uri: str) -> list[tuple[int, int]]:
    from pyarrow import fs

    s3 = fs.S3FileSystem(access_key=world.s3["access_key"], secret_key=world.s3["secret_key"],
                         endpoint_override=world.s3["endpoint"], scheme="http",
                         region="us-east-1")
    table = pq.read_table(uri.removeprefix("s3://"), filesystem=s3,
                          columns=["domain_id", "feature_id"])
    return list(zip(table.column("domain_id").to_pylist(),
                    table.column("feature_id").to_pylist(), strict=True))


def test_job_writes_one_file_per_partition_equal_to_shapely(world: WorkerWorld) -> None:
    job = world.job()
    tasks = world.tasks(job)
    publish(world.bootstrap, world.topic, tasks)
    trace_id = tasks[0].trace_id
    with running_workers(world.env(), world.log_dir, count=2) as workers:
        wait_for(lambda: all_done(world, trace_id, 12), timeout=120, interval=0.5,
                 what="12 partitions done")
        wait_for(lambda: group_lag(world.bootstrap, world.group, world.topic, 12) == 0,
                 timeout=30, interval=0.5, what="lag 0 after commits")
    assert all(w.proc.returncode == 0 for w in workers), [w.log()[-2000:] for w in workers]
    found = results(world, trace_id)
    assert sorted(found) == [t.partition_key for t in tasks]
    expected = expected_pairs(world)
    for task in tasks:
        uri, rows, _bytes, checksum = found[task.partition_key]
        pairs = read_pairs(world, uri)
        assert uri == task.output.uri
        assert pairs == sorted(pairs), "rows must be ordered by (domain_id, feature_id)"
        assert set(pairs) == expected[task.partition_key], task.partition_key
        assert rows == len(pairs) and len(checksum) == 64
    assert sum(v[1] for v in found.values()) > 0


def test_redelivering_every_task_changes_nothing(world: WorkerWorld) -> None:
    tasks = world.tasks(world.job())
    trace_id = tasks[0].trace_id
    publish(world.bootstrap, world.topic, tasks)
    with running_workers(world.env(), world.log_dir):
        wait_for(lambda: all_done(world, trace_id, 12), timeout=120, interval=0.5,
                 what="first pass done")
        wait_for(lambda: group_lag(world.bootstrap, world.group, world.topic, 12) == 0,
                 timeout=30, interval=0.5, what="first pass committed")
    first = results(world, trace_id)
    # Every task again, from offset 0. A fresh group stands in for resetting the old
    # group's offsets, which librdkafka's mock cluster refuses once a group has had
    # members (UNKNOWN_MEMBER_ID, even through the admin API).
    world.group = f"{world.group}-again"
    with running_workers(world.env(), world.log_dir) as (worker,):
        wait_for(lambda: group_lag(world.bootstrap, world.group, world.topic, 12) == 0
                 and worker.log().count("result already recorded") == 12,
                 timeout=60, interval=0.5, what="redelivered tasks consumed")
    assert results(world, trace_id) == first
    assert worker.log().count('"task skipped: result already recorded"') == 12
    with world.connect() as conn:
        (count,) = conn.execute("SELECT count(*) FROM spatial_join_results").fetchone()  # type: ignore[misc]
    assert count == 12


def test_killed_worker_mid_task_leads_to_the_same_files(world: WorkerWorld,
                                                        s3_filesystem: Any) -> None:
    with world.connect() as conn:
        conn.execute("CREATE VIEW slow_polygons AS SELECT * FROM domain_a_polygons "
                     "WHERE (SELECT pg_sleep(0.5)::text) IS NOT NULL")
    job = world.job(traceId="crash-trace", source={"polygons": {"table": "slow_polygons"},
                                                   "points": {"table": "domain_b_points"}})
    tasks = world.tasks(job)
    publish(world.bootstrap, world.topic, tasks)
    with running_workers(world.env(SPATIALJOIN_CONCURRENCY="4"), world.log_dir) as (victim,):
        wait_for(lambda: "processing" in statuses(world, "crash-trace").values(), timeout=60,
                 interval=0.05, what="a partition in processing")
        victim.kill()
    assert not all_done(world, "crash-trace", 12), "the kill came too late to test anything"
    with running_workers(world.env(), world.log_dir):
        wait_for(lambda: all_done(world, "crash-trace", 12), timeout=120, interval=0.5,
                 what="all partitions done after the crash")
    after_crash = results(world, "crash-trace")

    # An uninterrupted run of the same tasks must give byte-identical objects.
    with world.connect() as conn:
        conn.execute("DELETE FROM spatial_join_results WHERE trace_id = 'crash-trace'")
        conn.execute("UPDATE spatial_async_jobs SET status = 'queued' "
                     "WHERE trace_id = 'crash-trace'")
    s3_filesystem.delete_dir_contents(world.bucket_path)
    world.group = f"{world.group}-rerun"  # every task again from offset 0
    with running_workers(world.env(), world.log_dir):
        wait_for(lambda: all_done(world, "crash-trace", 12), timeout=120, interval=0.5,
                 what="clean rerun done")
    assert results(world, "crash-trace") == after_crash
    assert len(after_crash) == 12


def test_poison_message_is_dead_lettered_with_its_error(world: WorkerWorld) -> None:
    headers = [("traceId", b"t-poison"), ("jobUid", b"u"), ("contract", b"v2.1"),
               ("attempt", b"1")]
    publish_raw(world.bootstrap, world.topic, 3, b"{not json", headers)
    with running_workers(world.env(), world.log_dir):
        (record,) = read_all(world.bootstrap, world.dlq, expected=1, timeout=60)
        wait_for(lambda: group_lag(world.bootstrap, world.group, world.topic, 12) == 0,
                 timeout=30, interval=0.5, what="poison committed")
    assert record["value"] == b"{not json"
    assert record["headers"]["dlq.reason"] == "invalid-json"
    assert record["headers"]["dlq.stage"] == "decode"
    assert record["headers"]["traceId"] == "t-poison"
    assert "not JSON" in record["headers"]["dlq.error"]


def test_schema_deviation_is_dead_lettered_and_recorded(world: WorkerWorld) -> None:
    with world.connect() as conn:  # an int4 id column drifts from the contract's int64
        conn.execute("CREATE TABLE drifted AS SELECT id::int4 AS id, spatial_partition, geom "
                     "FROM domain_a_polygons")
    job = world.job(partitions=["p05"], source={"polygons": {"table": "drifted"},
                                                "points": {"table": "domain_b_points"}})
    (task,) = world.tasks(job)
    publish(world.bootstrap, world.topic, [task])
    with running_workers(world.env(), world.log_dir):
        (record,) = read_all(world.bootstrap, world.dlq, expected=1, timeout=60)
    assert record["headers"]["dlq.reason"] == "schema-drift"
    assert "column-type domain_id" in record["headers"]["dlq.error"]
    with world.connect() as conn:
        row = conn.execute("SELECT status, failure_kind, error_log FROM spatial_async_jobs "
                           "WHERE trace_id = %s", (task.trace_id,)).fetchone()
    assert row is not None and row[0] == "failed" and row[1] == "schema-drift"
    assert results(world, task.trace_id) == {}


def test_heap_cap_fails_the_task_clearly(world: WorkerWorld) -> None:
    job = world.job(partitions=["p05"])
    (task,) = world.tasks(job)
    publish(world.bootstrap, world.topic, [task])
    with running_workers(world.env(SPATIALJOIN_MAX_HEAP_MB="1"), world.log_dir) as (worker,):
        (record,) = read_all(world.bootstrap, world.dlq, expected=1, timeout=60)
    assert worker.proc.returncode == 0, "the process survives; only the task fails"
    assert record["headers"]["dlq.reason"] == "heap-cap"
    assert "heap cap exceeded" in record["headers"]["dlq.error"]
    with world.connect() as conn:
        row = conn.execute("SELECT status, error_log FROM spatial_async_jobs "
                           "WHERE trace_id = %s", (task.trace_id,)).fetchone()
    assert row is not None and row[0] == "failed" and "maxHeapMb" in row[1]
    _ = json
