"""A SpatialJoinJob from `kubectl apply` to a finished, auditable result, on the real stack."""

from __future__ import annotations

import hashlib
import json
import signal
from typing import Any

import pyarrow.parquet as pq
import pytest

from spatialjoin_contracts.partition_map import grid_partition_map
from spatialjoin_devstack.waiting import wait_for
from tests.support.kafka import read_all
from tests.support.workers import running_workers

from .conftest import POOL, JobWorld, running_operator

pytestmark = pytest.mark.e2e

SLOW_VIEW = ("CREATE VIEW slow_polygons AS SELECT * FROM domain_a_polygons "
             "WHERE (SELECT pg_sleep(1.0)::text) IS NOT NULL")
# p05's rows divide by zero; every other partition reads the table unchanged.
FAILING_VIEW = ("CREATE VIEW failing_polygons AS SELECT * FROM domain_a_polygons "
                "WHERE 1 / (CASE WHEN spatial_partition = 'p05' THEN 0 ELSE 1 END) = 1")


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})


def phase_is(phase: str) -> Any:
    return lambda status: status.get("phase") == phase


def expected_rows(world: JobWorld) -> dict[str, int]:
    """The join counted directly in PostGIS, partition by partition (make-valid semantics)."""
    counts = {}
    with world.connect() as conn:
        for entry in grid_partition_map():
            (count,) = conn.execute(
                "SELECT count(*) FROM domain_a_polygons AS a JOIN domain_b_points AS b "
                "ON ST_Intersects(CASE WHEN ST_IsValid(a.geom) THEN a.geom "
                "ELSE ST_MakeValid(a.geom) END, b.geom) "
                "WHERE a.spatial_partition = %s "
                "AND a.geom && ST_MakeEnvelope(%s, %s, %s, %s, 4326)",
                (entry.name, *entry.bbox.as_tuple())).fetchone() or (0,)
            counts[entry.name] = int(count)
    return counts


def test_job_succeeds_with_correct_results_across_an_operator_restart(
        world: JobWorld, s3_filesystem: Any) -> None:
    with world.connect() as conn:
        conn.execute(SLOW_VIEW)
    world.apply(world.pool_manifest())
    world.apply(world.job_manifest("join-12", source={
        "polygons": {"table": "slow_polygons"}, "points": {"table": "domain_b_points"}}))

    with running_operator(world, "operator-1") as first:
        queued = world.wait_job("join-12", phase_is("Queued"), timeout=30, what="Queued")
        trace_id = queued["status"]["traceId"]
        assert trace_id == queued["metadata"]["uid"]
        assert queued["status"]["progress"] == "0/12"
        assert world.topic_messages() == 12
        with running_workers(world.worker_env(SPATIALJOIN_CONCURRENCY="2"), world.log_dir,
                             count=1):
            world.wait_job("join-12", lambda s: s.get("phase") == "Running"
                           and (s.get("partitionsDone") or 0) >= 2, timeout=90,
                           what="Running with partitions done")
            first.stop(signal.SIGKILL)  # a crash: no cleanup, nothing flushed
            done_at_crash = sum(1 for status, _ in world.rows(trace_id).values()
                                if status == "done")
            assert done_at_crash < 12, "the restart came too late to test anything"

            with running_operator(world, "operator-2") as second:
                finished = world.wait_job("join-12", phase_is("Succeeded"), timeout=120,
                                          what="Succeeded")
                metrics = second.metrics()

    status = finished["status"]
    assert world.topic_messages() == 12, "a restart must not publish again"
    assert set(world.rows(trace_id).values()) == {("done", 1)}
    assert (status["progress"], status["partitionsDone"], status["partitionsTotal"]) == (
        "12/12", 12, 12)
    assert status["observedGeneration"] == finished["metadata"]["generation"]
    assert condition(status, "Complete")["status"] == "True"
    assert condition(status, "SLABreached")["status"] == "False"
    assert status["slaState"] == "Met" and status["activeContract"] == "v2.1"

    # Results: one object per partition, rows and checksums true to the bytes on S3.
    stored = world.results(trace_id)
    expected = expected_rows(world)
    assert sorted(r["partition"] for r in status["results"]) == sorted(expected)
    for result in status["results"]:
        uri, sha256, rows, size = stored[result["partition"]]
        assert (result["uri"], result["sha256"], result["rows"], result["bytes"]) == (
            uri, sha256, rows, size)
        data = s3_filesystem.open_input_file(uri.removeprefix("s3://")).read()
        assert hashlib.sha256(data).hexdigest() == sha256
        assert len(data) == size
        path = uri.removeprefix("s3://")
        assert pq.ParquetFile(s3_filesystem.open_input_file(path)).metadata.num_rows == rows
        assert rows == expected[result["partition"]], result["partition"]
    assert status["rows"] == sum(expected.values()) > 0

    events = world.events("join-12")
    reasons = [reason for _, reason, _ in events]
    assert reasons.count("TasksPublished") == 1
    assert {"Queued", "Running", "Succeeded"} <= set(reasons)
    assert not [e for e in events if e[0] == "Warning"], events

    # kubectl shows the printer columns.
    table = world.kubectl("get", "spatialjoinjobs").splitlines()
    assert table[0].split() == ["NAME", "PHASE", "PARTITIONS", "ROWS", "SLA", "AGE"]
    assert table[1].split()[:5] == ["join-12", "Succeeded", "12/12", str(status["rows"]), "Met"]
    wide = world.kubectl("get", "sjj", "-o", "wide").splitlines()
    assert wide[0].split()[-4:] == ["SEVERITY", "CONTRACT", "POOL", "TRACE"]
    assert wide[1].split()[-3:] == ["v2.1", POOL, trace_id]

    # The operator's metrics saw the job finish.
    assert 'spatialjoin_operator_jobs{phase="Succeeded"} 1.0' in metrics
    assert 'spatialjoin_operator_job_duration_seconds_count{outcome="Succeeded"} 1.0' in metrics

    # Deleting the job keeps its results unless it asks otherwise; this one asks.
    with running_operator(world, "operator-3"):
        world.kubectl("annotate", "spatialjoinjob", "join-12",
                      "spatialjoin.io/delete-results=true")
        world.kubectl("delete", "spatialjoinjob", "join-12", "--wait=false")
        wait_for(lambda: world.job_gone("join-12"), timeout=30, what="job deleted")
    _, _, message = world.wait_event("join-12", "Cancelled")
    assert "12 result object(s) and 12 result row(s) deleted" in message
    assert world.results(trace_id) == {}
    assert s3_filesystem.get_file_info(
        [uri.removeprefix("s3://") for uri, *_ in stored.values()])[0].type.name == "NotFound"


def test_invalid_jobs_fail_naming_the_field_and_publish_nothing(world: JobWorld) -> None:
    world.apply(world.pool_manifest())
    world.apply(world.job_manifest("bad-retry", ttlSecondsAfterFinished=4, retry={
        "initialDelaySeconds": 60, "maxDelaySeconds": 30}))
    world.apply(world.job_manifest("bad-partition", partitions=["p03", "p99"]))
    with running_operator(world):
        bad_partition = world.wait_job("bad-partition", phase_is("Failed"), timeout=30,
                                       what="Failed")
        _, _, invalid = world.wait_event("bad-partition", "InvalidSpec")
        _, _, retry_message = world.wait_event("bad-retry", "InvalidSpec")
        wait_for(lambda: world.job_gone("bad-retry"), timeout=30,
                 what="bad-retry deleted by its ttlSecondsAfterFinished")
        world.wait_event("bad-retry", "Expired")
    accepted = condition(bad_partition["status"], "Accepted")
    assert (accepted["status"], accepted["reason"]) == ("False", "InvalidSpec")
    assert accepted["message"].startswith("spec.partitions[1]: 'p99' is not in the partitionMap")
    assert condition(bad_partition["status"], "Failed")["reason"] == "InvalidSpec"
    assert invalid == accepted["message"]
    assert retry_message.startswith("spec.retry.initialDelaySeconds: 60 must be less than")
    assert ("Warning", "Failed") in [e[:2] for e in world.events("bad-partition")]
    assert world.topic_messages() == 0
    with world.connect() as conn:
        assert conn.execute("SELECT count(*) FROM spatial_async_jobs").fetchone() == (0,)


def test_job_on_a_pool_without_workers_breaches_its_sla_then_deletion_cancels_it(
        world: JobWorld) -> None:
    world.apply(world.pool_manifest())
    world.apply(world.job_manifest("lonely", sla={"deadlineSeconds": 5}))
    with running_operator(world) as operator:
        queued = world.wait_job("lonely", phase_is("Queued"), timeout=30, what="Queued")
        trace_id = queued["status"]["traceId"]
        breached = world.wait_job(
            "lonely", lambda s: condition(s, "SLABreached").get("status") == "True",
            timeout=30, what="SLABreached")
        kind, _, event_message = world.wait_event("lonely", "SLABreached")
        metrics = operator.metrics()
        table = world.kubectl("get", "spatialjoinjobs", "lonely").splitlines()

        world.kubectl("delete", "spatialjoinjob", "lonely", "--wait=false")
        wait_for(lambda: world.job_gone("lonely"), timeout=30, what="finalizer released")
        _, _, cancelled = world.wait_event("lonely", "Cancelled")

    status = breached["status"]
    sla = condition(status, "SLABreached")
    assert sla["reason"] == "DeadlineExceeded"
    assert "exceeds sla.deadlineSeconds (5s)" in sla["message"]
    assert "slowest partitions: p00 (Queued" in sla["message"] and "and 9 more" in sla["message"]
    assert (kind, event_message) == ("Warning", sla["message"])
    assert status["slaState"] == "Breached" and status["severity"] in ("P3", "P2")
    assert status["phase"] == "Queued"
    assert table[1].split()[:5] == ["lonely", "Queued", "0/12", "0", "Breached"]
    assert "spatialjoin_operator_job_sla_breaches_total 1.0" in metrics
    assert "SeverityRaised" in [reason for _, reason, _ in world.events("lonely")]

    # Deleting cancelled every queued partition, and a worker that starts now skips them all.
    assert set(world.rows(trace_id).values()) == {("cancelled", 1)}
    assert "p00, p01" in cancelled and cancelled.endswith("results kept")
    with running_workers(world.worker_env(), world.log_dir) as (worker,):
        wait_for(lambda: worker.log().count("task skipped: job cancelled") == 12, timeout=60,
                 interval=0.25, what="12 cancelled tasks skipped")
    assert world.results(trace_id) == {}


def test_job_waits_for_its_pool_honours_suspend_and_refuses_a_new_trace_id(
        world: JobWorld) -> None:
    world.apply(world.job_manifest("patient", traceId="trace-patient"))
    with running_operator(world):
        waiting = world.wait_job(
            "patient", lambda s: condition(s, "Progressing").get("reason") == "WorkerPoolNotFound",
            timeout=30, what="waiting for the pool")
        assert waiting["status"]["phase"] == "Pending"
        assert condition(waiting["status"], "Progressing")["status"] == "False"
        world.wait_event("patient", "WorkerPoolNotFound")

        world.kubectl("patch", "spatialjoinjob", "patient", "--type=merge",
                      "-p", json.dumps({"spec": {"suspend": True}}))
        world.wait_job("patient", phase_is("Suspended"), timeout=30, what="Suspended")
        world.apply(world.pool_manifest())
        world.wait_job("patient", lambda s: condition(s, "Progressing").get("reason")
                       == "Suspended", timeout=30, what="pool found, still suspended")
        assert world.topic_messages() == 0

        world.kubectl("patch", "spatialjoinjob", "patient", "--type=merge",
                      "-p", json.dumps({"spec": {"suspend": False}}))
        resumed = world.wait_job("patient", phase_is("Queued"), timeout=30, what="Queued")
        world.wait_event("patient", "Resumed")
        assert world.topic_messages() == 12
        assert resumed["status"]["traceId"] == "trace-patient"

        world.kubectl("patch", "spatialjoinjob", "patient", "--type=merge",
                      "-p", json.dumps({"spec": {"traceId": "trace-other"}}))
        refused = world.wait_job(
            "patient", lambda s: condition(s, "Accepted").get("status") == "False",
            timeout=30, what="traceId edit refused")
        _, _, refusal = world.wait_event("patient", "TraceIdImmutable")
    accepted = condition(refused["status"], "Accepted")
    assert accepted["reason"] == "TraceIdImmutable"
    assert "spec.traceId: is immutable once set: was 'trace-patient', now 'trace-other'" in (
        accepted["message"])
    assert refusal == accepted["message"]
    assert refused["status"]["traceId"] == "trace-patient"
    assert refused["status"]["phase"] == "Queued", "the original continues"
    assert accepted["observedGeneration"] == refused["metadata"]["generation"]
    assert set(world.rows("trace-patient")) == {f"p{i:02d}" for i in range(12)}
    assert world.rows("trace-other") == {}
    assert world.topic_messages() == 12


def test_failed_partition_is_retried_with_backoff_then_fails_the_job(world: JobWorld) -> None:
    with world.connect() as conn:
        conn.execute(FAILING_VIEW)
    world.apply(world.pool_manifest())
    world.apply(world.job_manifest(
        "flaky", partitions=["p04", "p05"],
        source={"polygons": {"table": "failing_polygons"}, "points": {"table": "domain_b_points"}},
        retry={"maxRetries": 1, "initialDelaySeconds": 1, "maxDelaySeconds": 1}))
    with running_operator(world), running_workers(world.worker_env(), world.log_dir):
        failed = world.wait_job("flaky", phase_is("Failed"), timeout=90, what="Failed")
        _, _, retried = world.wait_event("flaky", "PartitionRetried")
        dead_letters = read_all(world.bootstrap, world.dlq, expected=2, timeout=30)
    status = failed["status"]
    reason = condition(status, "Failed")
    assert reason["reason"] == "RetriesExhausted"
    assert reason["message"].startswith("partition p05 failed after 2 attempt(s) (query):")
    assert "division by zero" in reason["message"]
    assert retried.startswith("partition p05: attempt 2 published; attempt 1 failed (query)")
    assert status["severity"] == "P1"
    assert (status["partitionsDone"], status["partitionsFailed"]) == (1, 1)
    progress = {p["name"]: p for p in status["partitions"]}
    assert (progress["p04"]["state"], progress["p05"]["state"]) == ("Done", "Failed")
    assert progress["p05"]["attempt"] == 2
    assert world.rows(status["traceId"]) == {"p04": ("done", 1), "p05": ("failed", 2)}
    assert world.topic_messages() == 3, "two first attempts and one retry"
    assert [r["headers"]["attempt"] for r in dead_letters] == ["1", "2"]
    assert ("Warning", "Failed") in [e[:2] for e in world.events("flaky")]


def test_partition_stuck_in_processing_is_republished_once_and_counted_once(
        world: JobWorld) -> None:
    # Each attempt of p05 sits in 'processing' for about 6 s (two 3 s queries) without
    # progress: longer than the 2 s deadline, so the operator publishes attempt 2 while
    # attempt 1 still runs. Both finish; the result is recorded once.
    with world.connect() as conn:
        conn.execute("CREATE VIEW sticky_polygons AS SELECT * FROM domain_a_polygons "
                     "WHERE (SELECT pg_sleep(3)::text) IS NOT NULL")
    world.apply(world.pool_manifest())
    world.apply(world.job_manifest(
        "sticky", partitions=["p05"], sla={"deadlineSeconds": 2},
        source={"polygons": {"table": "sticky_polygons"}, "points": {"table": "domain_b_points"}},
        retry={"maxRetries": 1, "initialDelaySeconds": 1, "maxDelaySeconds": 1}))
    with running_operator(world), running_workers(world.worker_env(), world.log_dir) as (worker,):
        _, _, republished = world.wait_event("sticky", "PartitionRepublished", timeout=60)
        finished = world.wait_job("sticky", phase_is("Succeeded"), timeout=90, what="Succeeded")
        wait_for(lambda: worker.log().count('"task done"') + worker.log().count(
            "result already recorded") >= 2, timeout=60, interval=0.25,
            what="both attempts finished")
    assert republished.startswith("partition p05: attempt 2 published; attempt 1 has been "
                                  "processing on worker w0 for more than sla.deadlineSeconds")
    status = finished["status"]
    assert world.topic_messages() == 2, "one first attempt, one re-publish, no more (budget 1)"
    assert len(world.results(status["traceId"])) == 1
    assert world.rows(status["traceId"]) == {"p05": ("done", 2)}
    assert status["partitions"][0]["attempt"] == 2
    assert condition(status, "SLABreached")["status"] == "True"
    assert status["slaState"] == "Breached"
