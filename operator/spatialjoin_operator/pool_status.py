"""WorkerPool.status from one round of observe and decide, as pure functions.

The status carries what the installed contract (WorkerPoolStatus) defines;
``conform`` drops anything else, because the CRD's structural schema would
prune it anyway. Fields proposed for the contract (desiredReplicas, health,
assignmentPlan, geometryValidation, latency.oldestProcessingSeconds) are built
here already and appear once the model has them; until then the same facts
are in the conditions' messages and in the escalation entries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, get_args

from pydantic import BaseModel

from spatialjoin_contracts.models import WorkerPoolSpec
from spatialjoin_contracts.models.pool import WorkerPoolStatus

from .conditions import rfc3339, set_condition
from .pool_observe import Observation
from .pool_plan import describe_plan, isolated_partitions
from .pool_policy import Decision

GEOMETRY_VALIDATION = "GeometryValidation"


@dataclass(frozen=True)
class Validation:
    """Geometry validation of the pool's sources, started by a P1 incident."""

    state: str  # Running, Done or Failed
    started_at: datetime
    finished_at: datetime | None = None
    counts: Mapping[str, int] = field(default_factory=dict)
    error: str | None = None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        if self.state == "Running":
            return f"validating source geometries since {rfc3339(self.started_at)}"
        if self.state == "Failed":
            return f"geometry validation failed: {self.error}"
        found = ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items()) if v) or "none"
        return f"{self.total} invalid geometries in the sources ({found})"

    def to_k8s(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"state": self.state, "startedTime": rfc3339(self.started_at),
                               "total": self.total,
                               "partitions": [{"name": k, "invalid": v}
                                              for k, v in sorted(self.counts.items())]}
        if self.finished_at is not None:
            doc["observedTime"] = rfc3339(self.finished_at)
        return doc


@dataclass(frozen=True)
class StatusInputs:
    spec: WorkerPoolSpec
    generation: int | None
    selector: str
    observation: Observation
    decision: Decision
    previous: Mapping[str, Any]
    escalations: Sequence[Mapping[str, Any]]
    validation: Validation | None
    now: datetime


def build_status(i: StatusInputs) -> dict[str, Any]:
    """The whole status document the pool should show (already conformed to the contract)."""
    obs, decision, prev = i.observation, i.decision, i.previous
    status: dict[str, Any] = {
        "observedGeneration": i.generation,
        "replicas": obs.deployment.replicas,
        "readyReplicas": obs.deployment.ready,
        "desiredReplicas": decision.effective.replicas,
        "selector": i.selector,
        "effectiveConcurrency": decision.effective.concurrency,
        "activeContract": decision.effective.contract.value,
        "lag": _lag(obs) or prev.get("lag"),  # a failed read keeps the last one
        "latency": _latency(obs) or prev.get("latency"),
        "health": _health(obs) or prev.get("health"),
        "severity": None if decision.severity is None else decision.severity.value,
        "escalations": [dict(e) for e in i.escalations],
        "lastEscalationTime": _last_time(i.escalations) or prev.get("lastEscalationTime"),
        "assignmentPlan": [a.to_k8s() for a in decision.plan],
        "geometryValidation": None if i.validation is None else i.validation.to_k8s(),
        "conditions": _conditions(i),
    }
    return conform(WorkerPoolStatus, {k: v for k, v in status.items() if v is not None})


def status_patch(previous: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch of the top-level keys that changed (None deletes)."""
    patch = {k: v for k, v in desired.items() if previous.get(k) != v}
    patch.update({k: None for k in previous if k not in desired})
    return patch


def conform(model: type[BaseModel], data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` without the keys ``model`` (and its nested models) does not declare."""
    fields = {(f.alias or name): f.annotation for name, f in model.model_fields.items()}
    result: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            continue
        inner = _model_in(fields[key])
        if inner is not None and isinstance(value, Mapping):
            value = conform(inner, value)
        elif inner is not None and isinstance(value, list):
            value = [conform(inner, v) if isinstance(v, Mapping) else v for v in value]
        result[key] = value
    return result


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _lag(obs: Observation) -> dict[str, Any] | None:
    if obs.lag is None:
        return None
    return {"total": obs.lag.total, "observedTime": rfc3339(obs.lag.observed_at),
            "partitions": [{"name": p.name, "kafkaPartition": p.kafka_partition, "lag": p.lag}
                           for p in obs.lag.partitions]}


def _latency(obs: Observation) -> dict[str, Any] | None:
    t = obs.tasks
    if t is None:
        return None
    return {"p50Seconds": round(t.p50_s, 3), "p95Seconds": round(t.p95_s, 3),
            "oldestProcessingSeconds": round(t.oldest_processing_s, 3),
            "processing": t.processing, "finished": t.finished,
            "observedTime": rfc3339(t.observed_at)}


def _health(obs: Observation) -> dict[str, Any] | None:
    t = obs.tasks
    if t is None:
        return None
    return {"windowSeconds": t.window_s, "failures": t.failed, "deadLettered": t.failed,
            "materializationFailures": t.materialization_failures,
            "schemaDeviations": t.schema_deviations, "observedTime": rfc3339(t.observed_at)}


def _last_time(escalations: Sequence[Mapping[str, Any]]) -> str | None:
    times = [str(e["time"]) for e in escalations if e.get("time")]
    return max(times) if times else None


def _conditions(i: StatusInputs) -> list[dict[str, Any]]:
    conditions, dep, decision = i.decision.conditions, i.observation.deployment, i.decision
    desired = decision.effective.replicas

    def put(type_: str, status: bool, reason: str, message: str) -> None:
        nonlocal conditions
        conditions = set_condition(conditions, type_=type_, status="True" if status else "False",
                                   reason=reason, message=message, generation=i.generation,
                                   now=i.now)

    ready = f"{dep.ready}/{desired} workers ready"
    if desired == 0:
        put("Available", True, "ScaledToZero", "no workers wanted")
    else:
        put("Available", dep.ready > 0, "WorkersReady" if dep.ready else "NoReadyWorkers", ready)
    rolling = not dep.exists or not dep.rolled_out or dep.desired != desired
    put("Progressing", rolling, "RollingOut" if rolling else "RolledOut",
        f"{dep.updated} updated, {dep.replicas} existing, {ready}")
    rolled_back = decision.effective.contract != i.spec.contract
    degraded = rolled_back or (desired > 0 and dep.exists and dep.ready == 0)
    reason = "ContractRolledBack" if rolled_back else "NoReadyWorkers" if degraded else "Healthy"
    put("Degraded", degraded, reason,
        f"writing contract {decision.effective.contract.value} instead of "
        f"{i.spec.contract.value} until the P1 incident is cleared" if rolled_back else ready)
    if decision.plan:
        isolated = ", ".join(isolated_partitions(decision.plan)) or "none"
        put("Rebalanced", True, "LagWeightedPlan",
            f"keep apart: {isolated}; plan {describe_plan(decision.plan)}")
    elif any(c.get("type") == "Rebalanced" for c in conditions):
        put("Rebalanced", False, "LagCleared", "no lag-weighted plan needed")
    if i.validation is not None:
        put(GEOMETRY_VALIDATION, i.validation.state != "Failed", i.validation.state,
            i.validation.summary())
    elif any(c.get("type") == GEOMETRY_VALIDATION for c in conditions):
        put(GEOMETRY_VALIDATION, False, "Idle", "no P1 incident open")
    return conditions
