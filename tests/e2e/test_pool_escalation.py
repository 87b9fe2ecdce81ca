"""Severity escalation on the real stack: a slow query raises P3, a schema deviation raises P1."""

from __future__ import annotations

from typing import Any

import pytest

from spatialjoin_devstack.waiting import wait_for
from spatialjoin_operator.conditions import get_condition
from spatialjoin_operator.pool_policy import CLEAR_P1_ANNOTATION

from . import pool_support
from .pool_support import (
    PoolWorld,
    assert_recorded,
    assert_spec_untouched,
    escalations,
    running_pool_operator,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

pool_crds = pool_support.pool_crds  # fixtures, from the shared module
pool_world = pool_support.pool_world


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    found = get_condition(status.get("conditions"), type_)
    assert found is not None, f"no {type_} condition in {status.get('conditions')}"
    return dict(found)


def test_a_slow_query_raises_p3_and_the_workers_run_twelve_at_once(
        pool_world: PoolWorld) -> None:
    world = pool_world
    world.slow_view("slow_polygons", 12)
    with running_pool_operator(world) as operator:
        created = world.create_pool(concurrency=2, replicas={"min": 1, "max": 1},
                                    escalation={"cooldownSeconds": 300,
                                                "p3": {"latencySeconds": 3, "concurrency": 12}})
        ready = world.wait_status(lambda s: s.get("readyReplicas") == 1 and s, timeout=90,
                                  what="one ready worker")
        assert ready["effectiveConcurrency"] == 2
        assert condition(ready, "HeapInsufficient")["status"] == "False"
        world.publish_job(world.job_spec(partitions=["p00"],
                                         source={"polygons": {"table": "slow_polygons"},
                                                 "points": {"table": "domain_b_points"}}))
        status = world.wait_status(lambda s: escalations(s, "ScaleConcurrency") and s,
                                   timeout=60, what="P3 escalation")
        (entry,) = escalations(status, "ScaleConcurrency")
        assert (entry["severity"], entry["trigger"]) == ("P3", "WorkerLatency")
        assert "concurrency 2 -> 12" in entry["message"]
        assert status["effectiveConcurrency"] == 12 and status["severity"] == "P3"
        assert condition(status, "LatencyAboveThreshold")["status"] == "True"
        assert condition(status, "Escalated")["reason"] == "SeverityP3"
        assert world.deployment_env()["SPATIALJOIN_CONCURRENCY"] == "12"
        wait_for(lambda: world.ready_pods(SPATIALJOIN_CONCURRENCY="12"), timeout=90,
                 interval=0.5, what="a worker running with concurrency 12")
        assert_recorded(world, operator, entry)
        # the trigger still holds, but the action is not repeated
        world.wait_status(lambda s: s["latency"]["observedTime"] > status["latency"]
                          ["observedTime"], timeout=30, what="a later observation")
        assert len(escalations(world.status(), "ScaleConcurrency")) == 1
        assert_spec_untouched(world, created)


def test_a_schema_deviation_raises_p1_rolls_back_to_v2_0_until_cleared(
        pool_world: PoolWorld) -> None:
    world = pool_world
    with world.connect() as conn:  # an int4 id column drifts from the contract's int64
        conn.execute("CREATE TABLE drifted AS SELECT id::int4 AS id, spatial_partition, geom "
                     "FROM domain_a_polygons")
        expected_invalid = conn.execute(
            "SELECT (SELECT count(*) FROM drifted WHERE NOT ST_IsValid(geom)) + "
            "(SELECT count(*) FROM domain_b_points WHERE NOT ST_IsValid(geom))").fetchone()
    assert expected_invalid is not None and expected_invalid[0] > 0
    with running_pool_operator(world) as operator:
        created = world.create_pool(concurrency=2, replicas={"min": 1, "max": 1},
                                    escalation={"cooldownSeconds": 600})
        world.wait_status(lambda s: s.get("readyReplicas") == 1, timeout=90,
                          what="one ready worker")
        uid, job = world.create_job("drifting", partitions=["p05"],
                                    source={"polygons": {"table": "drifted"},
                                            "points": {"table": "domain_b_points"}})
        world.publish_job(job, uid)
        status = world.wait_status(lambda s: escalations(s, "RollbackContract") and s,
                                   timeout=90, what="P1 rollback")
        (rollback,) = escalations(status, "RollbackContract")
        assert (rollback["severity"], rollback["trigger"]) == ("P1", "SchemaDrift")
        assert status["activeContract"] == "v2.0" and status["severity"] == "P1"
        assert condition(status, "Degraded")["reason"] == "ContractRolledBack"
        assert world.deployment_env()["SPATIALJOIN_ACTIVE_CONTRACT"] == "v2.0"
        assert_recorded(world, operator, rollback)
        validated = world.wait_status(
            lambda s: condition(s, "GeometryValidation")["reason"] == "Done" and s,
            timeout=60, what="geometry validation done")
        message = condition(validated, "GeometryValidation")["message"]
        assert message.startswith(f"{expected_invalid[0]} invalid geometries"), message

        # new results are written with contract v2.0 by the rolled workers
        wait_for(lambda: world.pods() == 1 and world.ready_pods(
            SPATIALJOIN_ACTIVE_CONTRACT="v2.0"), timeout=90, interval=0.5,
            what="the workers rolled to v2.0")
        fresh = world.job_spec(partitions=["p00"])
        assert fresh.output.contract.value == "v2.1"
        world.publish_job(fresh, trace_id="after-rollback")
        contract = wait_for(lambda: _result_contract(world, "after-rollback"), timeout=90,
                            interval=0.5, what="a result after the rollback")
        assert contract == "v2.0"

        # a platform operator clears the incident by its id
        world.annotate(CLEAR_P1_ANNOTATION, rollback["incidentId"])
        cleared = world.wait_status(lambda s: escalations(s, "StepDown") and s, timeout=30,
                                    what="P1 cleared")
        (step,) = escalations(cleared, "StepDown")
        assert step["incidentId"] == rollback["incidentId"] and step["severity"] == "P1"
        assert "cleared by annotation" in step["message"]
        assert cleared["activeContract"] == "v2.1"
        assert world.deployment_env()["SPATIALJOIN_ACTIVE_CONTRACT"] == "v2.1"
        assert_recorded(world, operator, step)
        assert_spec_untouched(world, created)


def _result_contract(world: PoolWorld, trace_id: str) -> str | None:
    with world.connect() as conn:
        row = conn.execute("SELECT contract FROM spatial_join_results WHERE trace_id = %s",
                           (trace_id,)).fetchone()
    return None if row is None else str(row[0])
