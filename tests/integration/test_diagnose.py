"""Diagnosis on the real stack: a fresh dataset, a dropped GiST index, a bloated index,
trace correlation through the CLI, and the operator's background run on an SLA breach."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import typer
from kubernetes import client
from psycopg import sql
from typer.testing import CliRunner

from spatialjoin_cli.diagnose_cmd import diagnose as diagnose_command
from spatialjoin_contracts import api, samples
from spatialjoin_contracts.dataset_load import load_dataset
from spatialjoin_contracts.ddl import migrate
from spatialjoin_contracts.models import SpatialJoinJobSpec, WorkerPoolSpec
from spatialjoin_contracts.partition_map import grid_partition_map
from spatialjoin_devstack.waiting import wait_for
from spatialjoin_operator.diagnose import background, gather, record, service
from spatialjoin_operator.diagnose.findings import Severity
from spatialjoin_operator.diagnose.report import Report
from spatialjoin_operator.diagnose.service import Options
from tests.integration.test_crds_apiserver import crds  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

POLYGONS = "domain_a_polygons"
GIST = "domain_a_polygons_geom_gist"


@pytest.fixture(scope="module")
def pgstattuple(database_url: str) -> None:
    """The contrib extension, installed once (diagnosis itself never installs anything)."""
    # UniqueViolation: another session created it at the same moment.
    with psycopg.connect(database_url, autocommit=True) as conn, \
            contextlib.suppress(psycopg.errors.UniqueViolation):
        conn.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")


@pytest.fixture
def source(db_schema: tuple[str, str], pgstattuple: None) -> tuple[str, str]:
    """(schema, url): bookkeeping tables and the tiny dataset, freshly loaded and analyzed."""
    schema, url = db_schema
    with psycopg.connect(url) as conn:
        with conn.transaction(), conn.cursor() as cur:
            migrate(cur)
        load_dataset(conn, grid_partition_map(), scale="tiny", seed=11)
    return schema, url


def job(trace: str = "diag-1") -> SpatialJoinJobSpec:
    return SpatialJoinJobSpec.model_validate(samples.job_spec(traceId=trace))


def pool() -> WorkerPoolSpec:
    return WorkerPoolSpec.model_validate(samples.pool_spec())


def diagnose(url: str, trace: str = "diag-1", **options: Any) -> Report:
    target = service.Target(trace_id=trace, job=job(trace), pool=pool())
    return service.run(target, url, Options(**options))


def catalogue(url: str, schema: str) -> list[tuple[Any, ...]]:
    """Tables, indexes and their definitions in the schema: what a diagnosis must not change."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT c.relname, c.relkind, coalesce(pg_get_indexdef(c.oid), '') FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s ORDER BY 1",
            (schema,)).fetchall()


def actionable(report: Report) -> list[str]:
    return [f"{f.code}: {f.cause}" for f in report.findings if f.severity is not Severity.INFO]


def test_a_fresh_dataset_has_no_finding_and_is_left_unchanged(source: tuple[str, str]) -> None:
    schema, url = source
    before = catalogue(url, schema)
    report = diagnose(url)
    assert actionable(report) == ["TraceNotFound: no spatial_async_jobs row, no result and no "
                                  "SpatialJoinJob carry traceId 'diag-1'"]
    (plan,) = report.facts.plans
    assert plan.analyzed and plan.planning_ms is not None and plan.execution_ms is not None
    assert any(s.index == GIST for s in plan.scans), plan.scans
    assert not any(f.code in ("MissingGistIndex", "StaleStatistics", "IndexBloat")
                   for f in report.findings)
    # The point table's GiST index is ~60 % of its heap by nature; pgstattuple clears it.
    assert {f.code for f in report.findings} <= {"TraceNotFound", "IndexSizeExpected"}
    assert catalogue(url, schema) == before


def test_the_diagnosis_session_cannot_write(source: tuple[str, str]) -> None:
    _schema, url = source
    with gather.connect(url) as conn, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        conn.execute(f"CREATE INDEX {GIST}_2 ON {POLYGONS} USING gist (geom)")


def test_a_dropped_gist_index_is_found_and_the_fix_works(source: tuple[str, str]) -> None:
    schema, url = source
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP INDEX {GIST}")
    report = diagnose(url)
    top = report.primary
    assert top is not None and top.code == "MissingGistIndex", actionable(report)
    assert top.subject == f"table {schema}.{POLYGONS}"
    assert f"CREATE INDEX CONCURRENTLY {GIST} ON {schema}.{POLYGONS} USING gist (geom)" in top.fix
    assert any("domain_a_polygons" in item for item in top.evidence)
    # Apply the recommended fix as written; the next diagnosis finds nothing.
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in top.fix.split(". Off-peak")[0].split("; then "):
            conn.execute(statement)
    again = diagnose(url)
    assert not any(f.code == "MissingGistIndex" for f in again.findings)
    assert any(s.index == GIST for s in again.facts.plans[0].scans)


def bloat(url: str) -> None:
    """Grow the polygon indexes with copies, delete them, VACUUM: the heap shrinks back
    (the copies sit at its end), the index pages stay."""
    with psycopg.connect(url, autocommit=True) as conn:
        for copy in range(1, 41):
            conn.execute(sql.SQL("INSERT INTO {t} SELECT id + %s, spatial_partition, geom "
                                 "FROM {t} WHERE id < 1000000").format(t=sql.Identifier(POLYGONS)),
                         (copy * 1_000_000,))
        conn.execute(f"DELETE FROM {POLYGONS} WHERE id >= 1000000")
        conn.execute(f"VACUUM (ANALYZE) {POLYGONS}")


def test_an_artificially_bloated_index_is_found(source: tuple[str, str]) -> None:
    schema, url = source
    bloat(url)
    report = diagnose(url)
    polygons = next(t for t in report.facts.tables if t.table == POLYGONS)
    assert polygons.index_ratio is not None and polygons.index_ratio > 0.6
    found = [f for f in report.findings if f.code == "IndexBloat"]
    assert found, actionable(report)
    finding = found[0]
    assert finding.subject == f"table {schema}.{POLYGONS}"
    assert "REINDEX INDEX CONCURRENTLY" in finding.fix and "pg_repack" in finding.fix
    assert "VACUUM FULL" in finding.fix
    gist = next(ix for ix in polygons.indexes if ix.name == GIST)
    assert gist.free_percent is not None and gist.free_percent >= 50
    assert polygons.heap_free_percent is not None
    # Without pgstattuple the ratio alone is a suspicion, with how to confirm it.
    unconfirmed = diagnose(url, pgstattuple=False)
    possible = [f for f in unconfirmed.findings if f.code == "PossibleIndexBloat"
                and f.subject == f"table {schema}.{POLYGONS}"]
    assert possible and "CREATE EXTENSION pgstattuple" in possible[0].fix


# --- trace correlation: rows, the Kubernetes object, Events, results; the CLI ----------


def seed_rows(url: str, trace: str) -> None:
    now = datetime.now(UTC)
    rows = [
        ("p00", "done", 1, "w0", now - timedelta(seconds=200), 4000, None, None),
        ("p01", "failed", 1, "w1", now - timedelta(seconds=150), None, "heap-cap",
         "HeapCapExceeded: heap cap exceeded while streaming join rows: resident 4200 MiB > "
         "maxHeapMb 4096 MiB"),
        ("p02", "processing", 2, "w2", now - timedelta(seconds=400), None, None,
         "attempt 1 after: SerializationFailure: could not serialize access due to concurrent "
         "update"),
    ]
    with psycopg.connect(url, autocommit=True) as conn:
        for part, status, attempt, worker, started, duration, kind, error in rows:
            conn.execute(
                "INSERT INTO spatial_async_jobs (job_id, trace_id, partition_key, status, "
                "attempt, worker, started_at, updated_at, duration_ms, failure_kind, error_log) "
                "VALUES ('uid', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (trace, part, status, attempt, worker, started, started, duration, kind, error))
        conn.execute(
            "INSERT INTO spatial_join_results (trace_id, partition_key, result_uri, "
            "checksum_sha256, contract, rows, bytes) VALUES (%s, 'p00', %s, %s, 'v2.1', 5, 900)",
            (trace, f"s3://spatialjoin-results/jobs/{trace}/p00.parquet", "c" * 64))


@pytest.fixture
def kube_job(kube_api: Any, crds: None, namespace: str,  # noqa: F811
             source: tuple[str, str]) -> Iterator[dict[str, Any]]:
    """A WorkerPool whose database Secret points at the test schema, and a job on it."""
    _schema, url = source
    core, custom = client.CoreV1Api(kube_api), client.CustomObjectsApi(kube_api)
    core.create_namespaced_secret(namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name="spatialjoin-db"),
        data={"url": base64.b64encode(url.encode()).decode()}))
    custom.create_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.POOL_PLURAL,
                                           samples.pool_object(namespace=namespace))
    trace = f"diag-{namespace}"
    body = custom.create_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.JOB_PLURAL,
        samples.job_object(name="slow-job", namespace=namespace, traceId=trace))
    yield dict(body)


def test_cli_correlates_rows_job_events_and_results(kube_api: Any, kube_job: dict[str, Any],
                                                    source: tuple[str, str],
                                                    stack_env: dict[str, str]) -> None:
    _schema, url = source
    meta = kube_job["metadata"]
    trace = kube_job["spec"]["traceId"]
    seed_rows(url, trace)
    target = background.JobTarget(meta["namespace"], meta["name"], meta["uid"], trace, job(trace),
                                  pool())
    background.post_event(kube_api, target, "Warning", "job age 95s exceeds 90s",
                          reason="SLABreached")
    app = typer.Typer()
    app.command()(diagnose_command)
    result = CliRunner().invoke(app, ["--trace-id", trace, "--json", "--statement-timeout", "20"],
                                env={"KUBECONFIG": stack_env["KUBECONFIG"],
                                     "SPATIALJOIN_DATABASE_URL": ""})
    assert result.exit_code == 1, result.output  # findings
    data = json.loads(result.stdout)
    assert data["job"]["name"] == "slow-job" and data["job"]["uid"] == meta["uid"]
    assert [p["partition"] for p in data["partitions"]] == ["p00", "p01", "p02"]
    assert data["partitions"][1]["errorLog"].startswith("HeapCapExceeded")
    assert data["results"][0]["sha256"] == "c" * 64
    assert any(e["reason"] == "SLABreached" for e in data["events"])
    codes = {f["code"] for f in data["findings"]}
    assert {"HeapCapExceeded", "SerializationFailure", "StuckPartition"} <= codes
    (plan,) = data["plans"]
    assert plan["partition"] == "p02" and plan["reason"].startswith("stuck")
    assert plan["analyzed"] and plan["executionMs"] is not None and plan["plan"]
    # The readable report says the same.
    text = CliRunner().invoke(app, ["--trace-id", trace, "--namespace", meta["namespace"]],
                              env={"KUBECONFIG": stack_env["KUBECONFIG"],
                                   "SPATIALJOIN_DATABASE_URL": ""})
    assert "[CRITICAL] HeapCapExceeded" in text.stdout and "Plan of partition p02" in text.stdout


def test_background_diagnosis_records_condition_annotation_and_event(
        kube_api: Any, kube_job: dict[str, Any], source: tuple[str, str]) -> None:
    _schema, url = source
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP INDEX {GIST}")
    meta = kube_job["metadata"]
    trace = kube_job["spec"]["traceId"]
    custom = client.CustomObjectsApi(kube_api)
    # What the job timer leaves behind on a breach: SLABreached True.
    custom.patch_namespaced_custom_object_status(
        api.GROUP, api.VERSION, meta["namespace"], api.JOB_PLURAL, meta["name"],
        {"status": {"traceId": trace, "conditions": [{
            "type": "SLABreached", "status": "True", "reason": "DeadlineExceeded",
            "message": "job age 95s exceeds sla.deadlineSeconds (90s)",
            "lastTransitionTime": "2025-01-01T00:00:00Z"}]}})
    current = custom.get_namespaced_custom_object(api.GROUP, api.VERSION, meta["namespace"],
                                                  api.JOB_PLURAL, meta["name"])
    assert record.needs_diagnosis(current["metadata"].get("annotations") or {},
                                      current["status"])
    started = datetime.now(UTC)
    future = background.diagnose_in_background(
        namespace=meta["namespace"], name=meta["name"], uid=meta["uid"], trace_id=trace,
        job=job(trace), pool=pool(), database_url=url, api_client=kube_api, generation=1)
    assert future is not None
    # A second call while it runs schedules nothing (the timer fires every few seconds).
    assert background.diagnose_in_background(
        namespace=meta["namespace"], name=meta["name"], uid=meta["uid"], trace_id=trace,
        job=job(trace), pool=pool(), database_url=url, api_client=kube_api) is None
    assert (datetime.now(UTC) - started).total_seconds() < 1.0  # it did not block
    report = future.result(timeout=120)
    assert report.primary is not None and report.primary.code == "MissingGistIndex"

    body = custom.get_namespaced_custom_object(api.GROUP, api.VERSION, meta["namespace"],
                                               api.JOB_PLURAL, meta["name"])
    conditions = {c["type"]: c for c in body["status"]["conditions"]}
    assert conditions["SLABreached"]["status"] == "True"  # kept
    diagnosed = conditions["Diagnosed"]
    assert (diagnosed["status"], diagnosed["reason"]) == ("True", "MissingGistIndex")
    assert "Fix: CREATE INDEX CONCURRENTLY" in diagnosed["message"]
    recorded = json.loads(body["metadata"]["annotations"][record.DIAGNOSIS_ANNOTATION])
    assert recorded["traceId"] == trace and recorded["reason"] == "MissingGistIndex"
    assert not record.needs_diagnosis(body["metadata"]["annotations"], body["status"])

    def event() -> Any:
        events = client.CoreV1Api(kube_api).list_namespaced_event(
            meta["namespace"], field_selector=f"involvedObject.uid={meta['uid']}").items
        return next((e for e in events if e.reason == "Diagnosed"), None)

    posted = wait_for(event, timeout=10, what="Diagnosed Event")
    assert posted.type == "Warning"
    assert "MissingGistIndex" in posted.message and "CREATE INDEX CONCURRENTLY" in posted.message


def test_background_diagnosis_failure_is_recorded_with_a_retry_time(
        kube_api: Any, kube_job: dict[str, Any]) -> None:
    meta = kube_job["metadata"]
    trace = kube_job["spec"]["traceId"]
    future = background.diagnose_in_background(
        namespace=meta["namespace"], name=meta["name"], uid=meta["uid"], trace_id=trace,
        job=job(trace), pool=pool(), database_url="postgresql://nobody:x@127.0.0.1:1/none",
        api_client=kube_api)
    assert future is not None
    with pytest.raises(psycopg.OperationalError):
        future.result(timeout=60)
    body = client.CustomObjectsApi(kube_api).get_namespaced_custom_object(
        api.GROUP, api.VERSION, meta["namespace"], api.JOB_PLURAL, meta["name"])
    diagnosed = {c["type"]: c for c in body["status"]["conditions"]}["Diagnosed"]
    assert (diagnosed["status"], diagnosed["reason"]) == ("Unknown", "DiagnosisFailed")
    recorded = json.loads(body["metadata"]["annotations"][record.DIAGNOSIS_ANNOTATION])
    assert recorded["reason"] == "DiagnosisFailed" and recorded["retryAt"]
