"""pool_status, pool_plan and escalation: the status document, the plan, the incident record."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any

import pytest
from prometheus_client import REGISTRY

from spatialjoin_contracts.models.pool import WorkerPoolStatus
from spatialjoin_operator import escalation
from spatialjoin_operator.conditions import get_condition
from spatialjoin_operator.pool_observe import (
    DeploymentReading,
    LagReading,
    Observation,
    PartitionLagReading,
    TaskWindow,
    deployment_reading,
)
from spatialjoin_operator.pool_plan import assignment_plan, describe_plan, isolated_partitions
from spatialjoin_operator.pool_policy import History, decide
from spatialjoin_operator.pool_status import (
    StatusInputs,
    Validation,
    build_status,
    conform,
    status_patch,
)

from .pool_timeline import Timeline, at, lag, pool

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("lags", "workers", "expected"), [
    ({"a": 900, "b": 50, "c": 40, "d": 10}, 2, [("a",), ("b", "c", "d")]),
    ({"a": 500, "b": 400, "c": 300}, 3, [("a",), ("b",), ("c",)]),
    ({"a": 100, "b": 100, "c": 0, "d": 0}, 2, [("a", "c"), ("b", "d")]),
    ({"a": 5}, 3, [("a",)]),
    ({}, 2, []),
])
def test_lag_weighted_plan_keeps_heavy_partitions_apart(lags: dict[str, int], workers: int,
                                                        expected: list[tuple[str, ...]]) -> None:
    plan = assignment_plan(lags, workers)
    assert [a.partitions for a in plan] == expected
    assert sum(a.lag for a in plan) == sum(lags.values())


def test_plan_description_and_isolation() -> None:
    plan = assignment_plan({"p03": 5000, "p07": 3000, "p01": 1000, "p02": 1000}, 3)
    assert describe_plan(plan) == "w0: p03 (5000) | w1: p07 (3000) | w2: p01+p02 (2000)"
    assert isolated_partitions(plan) == ["p03", "p07"]


def observation(total: int = 120, ready: int = 1, **tasks: Any) -> Observation:
    window = TaskWindow(window_s=300, finished=10, p50_s=1.5, p95_s=4.25, processing=1,
                        oldest_processing_s=2.0, failed=0, materialization_failures=0,
                        schema_deviations=0, last_failure_at=None, observed_at=at(0))
    return Observation(
        lag=LagReading(total, (PartitionLagReading("p00", 0, total),), at(0)),
        tasks=replace(window, **tasks),
        deployment=DeploymentReading(exists=True, replicas=1, ready=ready, updated=1,
                                     desired=1, rolled_out=True))


def inputs(obs: Observation, previous: dict[str, Any] | None = None, **extra: Any
           ) -> StatusInputs:
    spec = pool(escalation={"p2": {"consumerLag": 100}})
    decision = decide(spec, obs.signals(), History(), at(0), generation=2)
    return StatusInputs(spec=spec, generation=2, selector="a=b", observation=obs,
                        decision=decision, previous=previous or {}, escalations=[],
                        validation=extra.get("validation"), now=at(0))


def test_status_is_valid_for_the_contract_and_speaks_kubernetes() -> None:
    status = build_status(inputs(observation()))
    WorkerPoolStatus.model_validate(status)
    assert status["lag"]["total"] == 120 and status["latency"]["p95Seconds"] == 4.25
    assert status["severity"] == "P2" and status["effectiveConcurrency"] == 8
    assert status["observedGeneration"] == 2 and status["selector"] == "a=b"
    types = {c["type"]: c["status"] for c in status["conditions"]}
    assert types["Available"] == "True" and types["Escalated"] == "True"
    assert types["LagAboveThreshold"] == "True" and types["Rebalanced"] == "True"
    rebalanced = get_condition(status["conditions"], "Rebalanced")
    assert rebalanced is not None and "keep apart" in rebalanced["message"]


def test_a_failed_read_keeps_the_last_values_in_status() -> None:
    first = build_status(inputs(observation()))
    blind = Observation(lag=None, tasks=None, deployment=observation().deployment,
                        errors=("consumer lag: broker: down",))
    second = build_status(inputs(blind, previous=first))
    assert second["lag"] == first["lag"] and second["latency"] == first["latency"]
    unavailable = get_condition(second["conditions"], "MetricsUnavailable")
    assert unavailable is not None and unavailable["status"] == "True"


def test_geometry_validation_lands_in_a_condition() -> None:
    done = Validation("Done", at(0), at(5), counts={"p00": 2, "p01": 0, "p03": 1})
    status = build_status(inputs(observation(schema_deviations=1), validation=done))
    found = get_condition(status["conditions"], "GeometryValidation")
    assert found is not None and found["status"] == "True"
    assert found["message"] == "3 invalid geometries in the sources (p00=2, p03=1)"
    assert done.to_k8s()["partitions"][0] == {"name": "p00", "invalid": 2}


def test_conform_drops_what_the_contract_does_not_define() -> None:
    data = {"severity": "P2", "assignmentPlan": [], "latency": {"p50Seconds": 1,
                                                                "p95Seconds": 2,
                                                                "oldestProcessingSeconds": 3},
            "escalations": [{"incidentId": "x", "extra": 1}]}
    conformed = conform(WorkerPoolStatus, data)
    declared = set(WorkerPoolStatus.model_fields)
    assert ("assignment_plan" in declared) == ("assignmentPlan" in conformed)
    assert conformed["escalations"] == [{"incidentId": "x"}]
    assert conformed["latency"]["p95Seconds"] == 2


def test_status_patch_sends_only_changes() -> None:
    assert status_patch({"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 5}) == {"b": 5, "c": None}


def test_deployment_reading() -> None:
    live = {"metadata": {"generation": 3}, "spec": {"replicas": 2},
            "status": {"observedGeneration": 3, "replicas": 2, "readyReplicas": 1,
                       "updatedReplicas": 2}}
    reading = deployment_reading(live)
    assert (reading.replicas, reading.ready, reading.desired, reading.rolled_out) == (2, 1, 2,
                                                                                      True)
    assert not deployment_reading(None).exists


def test_each_escalation_is_an_event_a_status_entry_a_metric_and_an_audit_line(
        caplog: pytest.LogCaptureFixture) -> None:
    line = Timeline(pool(escalation={"p2": {"consumerLag": 100}}))
    decision = line.step(0, lag(900, 3))
    records = escalation.records_for(decision.actions, namespace="ns", pool="pool-a", now=at(0),
                                     new_id=lambda: "0f0e")
    (record,) = records
    events: list[dict[str, Any]] = []
    before = REGISTRY.get_sample_value("spatialjoin_operator_escalations_total",
                                       {"severity": "P2", "action": "Rebalance"}) or 0.0
    logger = logging.getLogger(escalation.AUDIT_LOGGER)
    logger.addHandler(caplog.handler)
    try:
        escalation.emit(record, {"metadata": {"name": "pool-a"}},
                        lambda body, **kw: events.append(kw))
    finally:
        logger.removeHandler(caplog.handler)
    assert events == [{"type": "Warning", "reason": "P2Rebalance", "message": record.message()}]
    assert "incident 0f0e" in events[0]["message"]
    assert "escalation path Data Architecture" in events[0]["message"]
    after = REGISTRY.get_sample_value("spatialjoin_operator_escalations_total",
                                      {"severity": "P2", "action": "Rebalance"})
    assert after == before + 1
    (audit,) = [json.loads(r.getMessage()) for r in caplog.records
                if r.name == escalation.AUDIT_LOGGER]
    assert audit["incident_id"] == "0f0e" and audit["severity"] == "P2"
    assert (audit["observed"], audit["threshold"]) == (900.0, 100.0)
    assert audit["escalation_path"] == "Data Architecture" and audit["action"] == "Rebalance"
    entry = record.status_entry()
    assert entry["incidentId"] == "0f0e" and entry["time"] == "2026-01-01T12:00:00Z"


def test_history_is_bounded_oldest_dropped() -> None:
    line = Timeline(pool())
    records = escalation.records_for(line.step(0, lag(20000, 3)).actions, namespace="n",
                                     pool="p", now=at(0))
    previous = [{"incidentId": str(i)} for i in range(20)]
    kept = escalation.history(previous, records)
    assert len(kept) == 20 and kept[0]["incidentId"] == "1"
    assert kept[-1]["incidentId"] == records[-1].incident_id
