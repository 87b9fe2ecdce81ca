# ruff: noqa: F811  (the imported fixtures `world` and `crds` are test parameters here)
"""Disaster recovery on the real stack: lose spatial_join_results mid-job, restore from S3,
resume, and end with every partition materialized exactly once; plus what a restore refuses."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import psycopg
import pyarrow as pa
import pytest
import typer
from kubernetes import client
from typer.testing import CliRunner

from spatialjoin_contracts import api, samples
from spatialjoin_contracts.models import ContractVersion
from spatialjoin_contracts.models.common import Compression
from spatialjoin_devstack.waiting import wait_for
from spatialjoin_operator import restore as recovery
from spatialjoin_operator.restore_plan import Action, RestoreReport
from spatialjoin_worker.groups import raw_schema
from spatialjoin_worker.materialize import Materializer
from spatialjoin_worker.memory import HeapGuard
from tests.integration.test_crds_apiserver import crds  # noqa: F401  (fixture)
from tests.integration.worker.conftest import WorkerWorld, world  # noqa: F401  (fixture)
from tests.support.kafka import group_lag, publish
from tests.support.workers import running_workers

pytestmark = pytest.mark.integration


def filesystem(world: WorkerWorld) -> Any:
    return recovery.s3_filesystem(endpoint=world.s3["endpoint"], access_key=world.s3["access_key"],
                                  secret_key=world.s3["secret_key"])


def statuses(world: WorkerWorld, trace: str) -> dict[str, str]:
    with world.connect() as conn:
        return {r[0]: r[1] for r in conn.execute(
            "SELECT partition_key, status FROM spatial_async_jobs WHERE trace_id = %s",
            (trace,)).fetchall()}


def results(world: WorkerWorld, trace: str) -> dict[str, tuple[str, str, int]]:
    with world.connect() as conn:
        return {r[0]: (r[1], r[2], r[3]) for r in conn.execute(
            "SELECT partition_key, result_uri, checksum_sha256, rows FROM spatial_join_results "
            "WHERE trace_id = %s", (trace,)).fetchall()}


def objects(world: WorkerWorld, trace: str) -> dict[str, str]:
    """partition → sha256 of every object under the trace's prefix."""
    fs = filesystem(world)
    found = {}
    for uri, _size in recovery.list_objects(fs, f"s3://{world.bucket_path}/{trace}"):
        with fs.open_input_stream(uri.removeprefix("s3://")) as stream:
            found[uri.rsplit("/", 1)[-1].removesuffix(".parquet")] = hashlib.sha256(
                stream.read()).hexdigest()
    return found


def done_count(world: WorkerWorld, trace: str) -> int:
    return sum(1 for s in statuses(world, trace).values() if s == "done")


def pool_annotation(kube_api: Any, namespace: str) -> str | None:
    body = client.CustomObjectsApi(kube_api).get_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.POOL_PLURAL, "pool-a")
    return (body["metadata"].get("annotations") or {}).get(recovery.PAUSE_ANNOTATION)


def test_restore_after_losing_the_results_table_mid_job(
        world: WorkerWorld, kube_api: Any, crds: None, namespace: str) -> None:
    client.CustomObjectsApi(kube_api).create_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.POOL_PLURAL,
        samples.pool_object(namespace=namespace))
    tasks = world.tasks(world.job())
    trace = tasks[0].trace_id
    first, rest = tasks[:5], tasks[5:]
    publish(world.bootstrap, world.topic, first)

    # The first part of the job runs, then the pool stops (the pause); the rest is
    # published later, as the operator would once the pool resumes.
    with running_workers(world.env(), world.log_dir):
        wait_for(lambda: done_count(world, trace) == len(first), timeout=120, interval=0.2,
                 what="the first partitions done")
    done_before = {p for p, s in statuses(world, trace).items() if s == "done"}
    before = results(world, trace)
    assert set(before) == done_before == {t.partition_key for t in first}

    # Disaster: the results table is gone.
    with world.connect() as conn:
        conn.execute("DROP TABLE spatial_join_results")

    source = f"s3://{world.bucket_path}"
    pool = [(namespace, "pool-a")]
    seen_paused: list[str | None] = []
    with recovery.pools_paused(kube_api, pool, "restore-test") as paused:
        assert paused == [f"{namespace}/pool-a"]
        seen_paused.append(pool_annotation(kube_api, namespace))
        report = recovery.restore(source, database_url=world.database_url,
                                  filesystem=filesystem(world))
    assert seen_paused[0] is not None and seen_paused[0].startswith("restore-test at ")
    assert pool_annotation(kube_api, namespace) is None  # resumed

    assert report.tables_recreated == ["spatial_join_results"]
    restored = report.by_action(Action.RESTORE)
    assert {d.partition for d in restored} == done_before
    assert not report.by_action(Action.INCONSISTENT) and not report.lost and report.consistent
    assert results(world, trace) == before  # same URIs, checksums and row counts

    # Idempotent: a second run restores nothing and skips everything.
    again = recovery.restore(source, database_url=world.database_url,
                             filesystem=filesystem(world))
    assert {d.action for d in again.decisions} == {Action.SKIP}

    # Resume: the remaining partitions run; redelivered ones find their result and skip.
    publish(world.bootstrap, world.topic, rest)
    with running_workers(world.env(), world.log_dir):
        wait_for(lambda: done_count(world, trace) == 12, timeout=120, interval=0.5,
                 what="all twelve partitions done")
        wait_for(lambda: group_lag(world.bootstrap, world.group, world.topic, 12) == 0,
                 timeout=30, interval=0.5, what="offsets committed")
    final = results(world, trace)
    stored = objects(world, trace)
    assert sorted(final) == sorted(t.partition_key for t in tasks)
    assert sorted(stored) == sorted(final)  # one object per partition
    for partition, (uri, sha, _rows) in final.items():
        assert uri == f"{source}/{trace}/{partition}.parquet"
        assert stored[partition] == sha  # the row's checksum is the object's
    for partition in done_before:
        assert final[partition] == before[partition]
    with world.connect() as conn:
        (count,) = conn.execute("SELECT count(*) FROM spatial_join_results WHERE trace_id = %s",
                                (trace,)).fetchone()  # type: ignore[misc]
    assert count == 12


def write_result(world: WorkerWorld, trace: str, partition: str) -> tuple[str, str]:
    """A valid, empty v2.1 result object written as the worker writes it: (uri, sha256)."""
    uri = f"s3://{world.bucket_path}/{trace}/{partition}.parquet"
    written = Materializer(filesystem(world), row_group_rows=1000,
                           heap=HeapGuard(1 << 40)).write(
        uri, raw_schema(pa.int64(), pa.int64()), [], contract=ContractVersion.V2_1,
        compression=Compression.ZSTD, trace_id=trace, partition_key=partition)
    assert not written.deviations
    return uri, written.sha256


def put(world: WorkerWorld, key: str, data: bytes) -> None:
    with filesystem(world).open_output_stream(f"{world.bucket_path}/{key}") as stream:
        stream.write(data)


def test_restore_reports_what_it_refuses(world: WorkerWorld) -> None:
    trace = f"r-{uuid.uuid4().hex[:8]}"
    fs = filesystem(world)
    good_uri, good_sha = write_result(world, trace, "p00")
    _mismatch_uri, _ = write_result(world, trace, "p03")
    with fs.open_input_stream(good_uri.removeprefix("s3://")) as stream:
        p00_bytes = stream.read()
    put(world, f"{trace}/p01.parquet", p00_bytes)  # footer says p00
    put(world, f"{trace}/p02.parquet", b"PAR1 not really parquet")
    put(world, f"{trace}/README.txt", b"notes")
    with world.connect() as conn:  # p04 is done, but its result is nowhere
        conn.execute("INSERT INTO spatial_async_jobs (job_id, trace_id, partition_key, status, "
                     "attempt, rows) VALUES ('uid-r', %s, 'p04', 'done', 1, 3)", (trace,))
    source = f"s3://{world.bucket_path}/{trace}"
    references = {(trace, "p03"): [("SpatialJoinJob ns/j status.results", "0" * 64)]}

    dry = recovery.restore(source, database_url=world.database_url, filesystem=fs,
                           references=references, dry_run=True)
    assert results(world, trace) == {} and dry.by_action(Action.RESTORE)

    report: RestoreReport = recovery.restore(
        source, database_url=world.database_url, filesystem=fs, references=references,
        job_uids={trace: "uid-r"}, requeue_lost=True)
    actions = {d.partition or d.uri: (d.action, d.reason) for d in report.decisions}
    assert actions["p00"][0] is Action.RESTORE
    assert actions["p01"] == (Action.INCONSISTENT, "footer names traceId "
                              f"'{trace}' partition 'p00', the key '{trace}' 'p01'")
    assert actions["p02"][0] is Action.INCONSISTENT and "unreadable" in actions["p02"][1]
    assert actions["p03"][0] is Action.INCONSISTENT and "checksum mismatch" in actions["p03"][1]
    assert actions[f"{source}/README.txt"][0] is Action.IGNORE
    assert [(p.partition, p.job_id) for p in report.lost] == [("p04", "uid-r")]
    assert report.requeued == report.lost and not report.consistent

    assert results(world, trace) == {"p00": (good_uri, good_sha, 0)}
    assert statuses(world, trace) == {"p00": "done", "p04": "queued"}
    with world.connect() as conn:
        row = conn.execute("SELECT job_id, attempt FROM spatial_async_jobs WHERE trace_id = %s "
                           "AND partition_key = 'p00'", (trace,)).fetchone()
    assert row == ("uid-r", 1)  # registered anew as done, under the job's uid


def test_restore_verifies_against_a_surviving_row(world: WorkerWorld) -> None:
    trace = f"r-{uuid.uuid4().hex[:8]}"
    uri, sha = write_result(world, trace, "p00")
    with world.connect() as conn:
        conn.execute("INSERT INTO spatial_join_results (trace_id, partition_key, result_uri, "
                      "checksum_sha256, contract, rows, bytes) VALUES (%s, 'p00', %s, %s, "
                      "'v2.1', 0, 1)", (trace, uri, "f" * 64))
    report = recovery.restore(f"s3://{world.bucket_path}/{trace}",
                              database_url=world.database_url, filesystem=filesystem(world))
    (decision,) = report.decisions
    assert decision.action is Action.INCONSISTENT
    assert f"the object's sha256 is {sha}, spatial_join_results records {'f' * 64}" in \
        decision.reason
    assert results(world, trace)["p00"][1] == "f" * 64  # never overwritten


def test_ensure_tables_recreates_only_what_is_missing(world: WorkerWorld) -> None:
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        assert recovery.ensure_tables(conn) == []
        conn.execute("DROP TABLE spatial_join_results")
        assert recovery.ensure_tables(conn) == ["spatial_join_results"]
        assert recovery.ensure_tables(conn) == []


def test_restore_command(world: WorkerWorld, kube_api: Any, crds: None,
                         namespace: str) -> None:
    from spatialjoin_cli.restore_cmd import restore as restore_command

    client.CustomObjectsApi(kube_api).create_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.POOL_PLURAL,
        samples.pool_object(namespace=namespace))
    trace = f"r-{uuid.uuid4().hex[:8]}"
    _uri, sha = write_result(world, trace, "p00")
    app = typer.Typer()
    app.command()(restore_command)
    env = {"SPATIALJOIN_DATABASE_URL": world.database_url,
           "SPATIALJOIN_S3_ENDPOINT": world.s3["endpoint"],
           "AWS_ACCESS_KEY_ID": world.s3["access_key"],
           "AWS_SECRET_ACCESS_KEY": world.s3["secret_key"]}
    args = ["--from", f"s3://{world.bucket_path}/{trace}", "--pool", f"{namespace}/pool-a",
            "--json"]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["summary"]["restore"] == 1 and report["consistent"]
    assert report["pausedPools"] == [f"{namespace}/pool-a"]
    assert report["objects"][0]["sha256"] == sha
    assert pool_annotation(kube_api, namespace) is None  # resumed
    text = CliRunner().invoke(app, args[:-1], env=env)
    assert text.exit_code == 0 and "summary: 1 skip" in text.stdout
