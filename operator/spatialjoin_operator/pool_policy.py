"""What a WorkerPool should run, decided in pure code from (spec, signals, history, now).

Nothing here talks to Kubernetes, Kafka or PostgreSQL: the handler gathers
``Signals`` (pool_observe) and ``History`` (status, the live Deployment,
annotations), calls :func:`decide`, and acts on the ``Decision``.

The rules (docs/workerpool.md has the long form):

* Severity is the highest that holds: P1 (materialization failure or schema
  drift, and for as long as a contract rollback is in force), P2 (total lag
  above ``escalation.p2.consumerLag``), P3 (worker latency above
  ``escalation.p3.latencySeconds``).
* Each trigger is remembered as a condition (``LatencyAboveThreshold``,
  ``LagAboveThreshold``, ``MaterializationFailing``) whose lastTransitionTime
  is the hysteresis clock: a trigger opens above its threshold and clears
  only at or below ``CLEAR_RATIO`` of it; in between it keeps its state.
* Every knob (concurrency, replicas, contract) acts at most once per
  ``cooldownSeconds``; the last action per knob is read back from
  ``status.escalations``. Stepping back down needs the trigger clear for a
  whole cooldown, and goes half the remaining way per step.
* A failed read holds: no decision is taken on a knob whose signal is
  unavailable, so lag that cannot be read is never taken for zero.
* ``spatialjoin.io/paused: "true"`` freezes replicas and concurrency (as
  KEDA's paused annotation does); P1 still rolls the contract back.
* ``spatialjoin.io/clear-p1: <incident id>`` lets a platform operator end
  the open P1 incident with that id; otherwise it ends once failures have
  stopped for a cooldown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from spatialjoin_contracts.models import ContractVersion, WorkerPoolSpec
from spatialjoin_contracts.models.common import Severity
from spatialjoin_contracts.models.pool import EscalationAction, EscalationTrigger

from .conditions import get_condition, parse_time, set_condition
from .pool_plan import WorkerAssignment, assignment_plan, describe_plan
from .pool_rules import (
    BASE_HEAP_MB,
    CLEAR_P1_ANNOTATION,
    ESCALATION_PATH,
    PAUSE_ANNOTATION,
    PER_TASK_HEAP_MB,
    HeapCheck,
    Knob,
    band,
    heap_check,
    heap_message,
    is_paused,
    last_action_time,
    last_step_down_time,
    open_incident,
    step_down,
)

__all__ = ["BASE_HEAP_MB", "CLEAR_P1_ANNOTATION", "ESCALATION_PATH", "PAUSE_ANNOTATION",
           "PER_TASK_HEAP_MB", "Action", "Decision", "Effective", "History", "Signals",
           "band", "decide", "heap_check", "step_down"]

class Trigger(StrEnum):
    """Condition types that remember whether a trigger holds, and since when."""

    LATENCY = "LatencyAboveThreshold"
    LAG = "LagAboveThreshold"
    MATERIALIZATION = "MaterializationFailing"


METRICS_UNAVAILABLE: Final = "MetricsUnavailable"
HEAP_INSUFFICIENT: Final = "HeapInsufficient"
SCALING_PAUSED: Final = "ScalingPaused"
ESCALATED: Final = "Escalated"


@dataclass(frozen=True)
class Signals:
    """One observation, reduced to what the policy reads; None means the read failed."""

    lag_total: int | None = None
    partition_lag: Mapping[str, int] = field(default_factory=dict)
    latency_s: float | None = None
    """Worker latency: the larger of p95 of finished tasks and the oldest running task's age."""
    materialization_failures: int | None = None
    schema_deviations: int | None = None
    last_failure_at: datetime | None = None
    """When the latest materialization failure or deviation finished."""
    unavailable: tuple[str, ...] = ()
    """One line per failed read, for the MetricsUnavailable condition."""


@dataclass(frozen=True)
class Effective:
    """The values in force: the Deployment's replicas and env, mirrored in status."""

    replicas: int
    concurrency: int
    contract: ContractVersion


@dataclass(frozen=True)
class History:
    """What the pool remembers between observations (never process memory)."""

    effective: Effective | None = None
    conditions: Sequence[Mapping[str, Any]] = ()
    escalations: Sequence[Mapping[str, Any]] = ()
    """status.escalations, camelCase, oldest first."""
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Action:
    """One step taken; the escalation record is made from it."""

    severity: Severity
    trigger: EscalationTrigger
    action: EscalationAction
    observed: float
    threshold: float
    detail: str
    incident_id: str | None = None
    """For a step down: the incident it steps down from. None: a new incident."""


@dataclass(frozen=True)
class Decision:
    effective: Effective
    severity: Severity | None
    actions: tuple[Action, ...]
    conditions: list[dict[str, Any]]
    plan: tuple[WorkerAssignment, ...]
    heap: HeapCheck
    validate_geometries: bool
    paused: bool


def replica_cap(spec: WorkerPoolSpec) -> int:
    """P2 raises replicas up to this: spec max, and never more than the partitions in the map."""
    return max(spec.replicas.min, min(spec.replicas.max, len(spec.partition_map)))


# --- the decision -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Ctx:
    spec: WorkerPoolSpec
    signals: Signals
    history: History
    conditions: list[dict[str, Any]]
    now: datetime
    paused: bool

    @property
    def cooldown(self) -> timedelta:
        return timedelta(seconds=self.spec.escalation.cooldown_seconds)

    def holds(self, trigger: Trigger) -> bool:
        found = get_condition(self.conditions, trigger.value)
        return found is not None and found.get("status") == "True"

    def clear_for_cooldown(self, trigger: Trigger) -> bool:
        found = get_condition(self.conditions, trigger.value)
        if found is None or found.get("status") != "False":
            return False
        since = parse_time(found.get("lastTransitionTime"))
        return since is not None and self.now - since >= self.cooldown

    def cooled(self, knob: Knob) -> bool:
        last = last_action_time(self.history.escalations, knob)
        return last is None or self.now - last >= self.cooldown

    def incident_of(self, severity: Severity) -> str | None:
        found = open_incident(self.history.escalations, severity)
        return None if found is None else str(found.get("incidentId"))


def decide(spec: WorkerPoolSpec, signals: Signals, history: History, now: datetime,
           generation: int | None = None) -> Decision:
    """The effective values, the actions taken to get there, and the pool's conditions."""
    paused = is_paused(history.annotations)
    conditions = _update_triggers(spec, signals, history, now, generation)
    ctx = _Ctx(spec, signals, history, conditions, now, paused)
    current = _within_spec(spec, history.effective)
    heap = heap_check(spec)
    concurrency, p3 = _decide_concurrency(ctx, current.concurrency, heap)
    replicas, p2, plan = _decide_replicas(ctx, current.replicas)
    contract, p1, p1_open = _decide_contract(ctx, current.contract)
    actions = tuple(a for a in (p1, p2, p3) if a is not None)
    severity = _severity(ctx, p1_open)
    conditions = _status_conditions(ctx, severity, heap, generation)
    return Decision(effective=Effective(replicas, concurrency, contract), severity=severity,
                    actions=actions, conditions=conditions, plan=plan, heap=heap,
                    validate_geometries=p1_open, paused=paused)


def _within_spec(spec: WorkerPoolSpec, effective: Effective | None) -> Effective:
    """The values in force, brought within what the spec allows now (a spec edit wins)."""
    if effective is None:
        return Effective(spec.replicas.min, spec.concurrency, spec.contract)
    heap = heap_check(spec)
    ceiling = max(spec.concurrency, min(spec.escalation.p3.concurrency, heap.max_concurrency))
    return Effective(
        replicas=min(max(effective.replicas, spec.replicas.min), spec.replicas.max),
        concurrency=min(max(effective.concurrency, spec.concurrency), ceiling),
        contract=effective.contract)


def _update_triggers(spec: WorkerPoolSpec, signals: Signals, history: History, now: datetime,
                     generation: int | None) -> list[dict[str, Any]]:
    esc = spec.escalation
    conditions = [dict(c) for c in history.conditions]
    states: list[tuple[Trigger, bool | None, str]] = [
        (Trigger.LATENCY, band(signals.latency_s, esc.p3.latency_seconds),
         f"worker latency {_num(signals.latency_s)} s, threshold {_num(esc.p3.latency_seconds)}"
         " s"),
        (Trigger.LAG, band(signals.lag_total, esc.p2.consumer_lag),
         f"consumer lag {signals.lag_total}, threshold {esc.p2.consumer_lag}"),
        (Trigger.MATERIALIZATION, _p1_state(spec, signals, history),
         f"{signals.materialization_failures} materialization failures and "
         f"{signals.schema_deviations} schema deviations in the window"),
    ]
    for trigger, state, message in states:
        if state is None:
            continue  # unknown, or inside the hysteresis band: keep what was
        conditions = set_condition(conditions, type_=trigger.value,
                                   status="True" if state else "False",
                                   reason="AboveThreshold" if state else "BelowThreshold",
                                   message=message, generation=generation, now=now)
    return conditions


def _p1_state(spec: WorkerPoolSpec, signals: Signals, history: History) -> bool | None:
    if signals.materialization_failures is None or signals.schema_deviations is None:
        return None
    p1 = spec.escalation.p1
    failing = ((p1.on_materialization_failure and signals.materialization_failures > 0)
               or (p1.on_schema_drift and signals.schema_deviations > 0))
    last_clear = last_step_down_time(history.escalations, Severity.P1)
    if failing and last_clear is not None and signals.last_failure_at is not None:
        return signals.last_failure_at > last_clear  # failures before a clear are done with
    return failing


def _decide_concurrency(ctx: _Ctx, current: int, heap: HeapCheck) -> tuple[int, Action | None]:
    spec, p3 = ctx.spec, ctx.spec.escalation.p3
    if ctx.paused or ctx.signals.latency_s is None:
        return current, None
    observed, threshold = ctx.signals.latency_s, p3.latency_seconds
    target = max(spec.concurrency, min(p3.concurrency, heap.max_concurrency))
    if ctx.holds(Trigger.LATENCY) and current < target and ctx.cooled(Knob.CONCURRENCY):
        note = "" if heap.fits else (f" (capped by maxHeapMb {spec.max_heap_mb}: "
                                     f"{p3.concurrency} tasks need {heap.required_mb} MiB)")
        return target, Action(Severity.P3, EscalationTrigger.WORKER_LATENCY,
                              EscalationAction.SCALE_CONCURRENCY, observed, threshold,
                              f"concurrency {current} -> {target}{note}")
    if (current > spec.concurrency and ctx.clear_for_cooldown(Trigger.LATENCY)
            and ctx.cooled(Knob.CONCURRENCY)):
        lower = step_down(current, spec.concurrency)
        return lower, Action(Severity.P3, EscalationTrigger.WORKER_LATENCY,
                             EscalationAction.STEP_DOWN, observed, threshold,
                             f"concurrency {current} -> {lower}",
                             ctx.incident_of(Severity.P3))
    return current, None


def _decide_replicas(ctx: _Ctx, current: int
                     ) -> tuple[int, Action | None, tuple[WorkerAssignment, ...]]:
    spec, signals = ctx.spec, ctx.signals
    if signals.lag_total is None:
        return current, None, ()  # a failed read is never zero lag: hold
    lags = {e.name: signals.partition_lag.get(e.name, 0) for e in spec.partition_map}
    holds = ctx.holds(Trigger.LAG)
    plan = assignment_plan(lags, max(current, 1)) if holds else ()
    if ctx.paused:
        return current, None, plan
    observed, threshold = float(signals.lag_total), float(spec.escalation.p2.consumer_lag)
    if holds:
        lagging = sum(1 for lag in lags.values() if lag > 0)
        target = min(replica_cap(spec), max(current, lagging))
        if target > current and ctx.cooled(Knob.REPLICAS):
            plan = assignment_plan(lags, target)
            return target, Action(Severity.P2, EscalationTrigger.CONSUMER_LAG,
                                  EscalationAction.REBALANCE, observed, threshold,
                                  f"replicas {current} -> {target} for {lagging} lagging "
                                  f"partitions; plan {describe_plan(plan)}"), plan
        return current, None, plan
    if (current > spec.replicas.min and ctx.clear_for_cooldown(Trigger.LAG)
            and ctx.cooled(Knob.REPLICAS)):
        lower = step_down(current, spec.replicas.min)
        return lower, Action(Severity.P2, EscalationTrigger.CONSUMER_LAG,
                             EscalationAction.STEP_DOWN, observed, threshold,
                             f"replicas {current} -> {lower}",
                             ctx.incident_of(Severity.P2)), ()
    return current, None, ()


def _decide_contract(ctx: _Ctx, current: ContractVersion
                     ) -> tuple[ContractVersion, Action | None, bool]:
    """(contract, action, whether a P1 incident is open afterwards)."""
    spec, signals = ctx.spec, ctx.signals
    rollback = spec.escalation.p1.rollback_contract
    incident = open_incident(ctx.history.escalations, Severity.P1)
    p1_records = [e for e in ctx.history.escalations if e.get("severity") == Severity.P1.value]
    # Open by the record, or a rollback in force whose record fell out of the history.
    is_open = (bool(p1_records) and p1_records[-1].get("action") != EscalationAction.STEP_DOWN.value
               ) or (current == rollback != spec.contract)
    observed = float((signals.materialization_failures or 0) + (signals.schema_deviations or 0))
    trigger = _p1_trigger(spec, signals, incident)
    if is_open:
        incident_id = None if incident is None else str(incident.get("incidentId"))
        cleared = incident_id is not None and \
            ctx.history.annotations.get(CLEAR_P1_ANNOTATION, "").strip() == incident_id
        stable = (signals.materialization_failures is not None
                  and ctx.clear_for_cooldown(Trigger.MATERIALIZATION)
                  and ctx.cooled(Knob.CONTRACT))
        if cleared or stable:
            how = f"cleared by annotation {CLEAR_P1_ANNOTATION}" if cleared else \
                "failures stopped for the stabilization window"
            return spec.contract, Action(
                Severity.P1, trigger, EscalationAction.STEP_DOWN, observed, 0.0,
                f"contract {current.value} -> {spec.contract.value}: {how}", incident_id), False
        return rollback, None, True
    if (signals.materialization_failures is not None and ctx.holds(Trigger.MATERIALIZATION)
            and ctx.cooled(Knob.CONTRACT)):
        return rollback, Action(Severity.P1, trigger, EscalationAction.ROLLBACK_CONTRACT,
                                observed, 0.0,
                                f"contract {current.value} -> {rollback.value}; validating "
                                "source geometries"), True
    return spec.contract, None, False


def _p1_trigger(spec: WorkerPoolSpec, signals: Signals,
                incident: Mapping[str, Any] | None) -> EscalationTrigger:
    if spec.escalation.p1.on_schema_drift and (signals.schema_deviations or 0) > 0:
        return EscalationTrigger.SCHEMA_DRIFT
    if (signals.materialization_failures or 0) > 0 or incident is None:
        return EscalationTrigger.MATERIALIZATION_FAILURE
    return EscalationTrigger(str(incident.get("trigger")))


def _severity(ctx: _Ctx, p1_open: bool) -> Severity | None:
    if p1_open or ctx.holds(Trigger.MATERIALIZATION):
        return Severity.P1
    if ctx.holds(Trigger.LAG):
        return Severity.P2
    if ctx.holds(Trigger.LATENCY):
        return Severity.P3
    return None


def _status_conditions(ctx: _Ctx, severity: Severity | None, heap: HeapCheck,
                       generation: int | None) -> list[dict[str, Any]]:
    conditions, now = ctx.conditions, ctx.now

    def put(type_: str, status: bool, reason: str, message: str) -> None:
        nonlocal conditions
        conditions = set_condition(conditions, type_=type_, status="True" if status else "False",
                                   reason=reason, message=message, generation=generation,
                                   now=now)

    missing = ctx.signals.unavailable
    put(METRICS_UNAVAILABLE, bool(missing), "ReadFailed" if missing else "MetricsRead",
        "; ".join(missing) + "; holding the last decision" if missing
        else "lag, latency and health read")
    put(HEAP_INSUFFICIENT, not heap.fits, "HeapCapTooLow" if not heap.fits else "HeapCapFits",
        heap_message(ctx.spec, heap))
    put(SCALING_PAUSED, ctx.paused, "Paused" if ctx.paused else "Active",
        f"annotation {PAUSE_ANNOTATION} freezes replicas and concurrency" if ctx.paused
        else "scaling follows lag and latency")
    put(ESCALATED, severity is not None, f"Severity{severity.value}" if severity else "Normal",
        f"{severity.value} open; escalation path {ESCALATION_PATH[severity]}" if severity
        else "no open incident")
    return conditions


def _num(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.1f}"
