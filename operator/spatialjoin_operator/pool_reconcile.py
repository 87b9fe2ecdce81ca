"""One round for one WorkerPool: read, observe, decide, act, write status once, record.

The handlers (pool_handlers) call :func:`reconcile` from the timer and on
spec changes; a per-pool lock makes the rounds one at a time, and each round
starts from a fresh read of the pool and its Deployment, so what one round
did is what the next one sees. Everything that matters is in status and in
the Deployment; process memory holds only a running geometry validation.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from spatialjoin_contracts import api
from spatialjoin_contracts.models import ContractVersion, WorkerPoolSpec
from spatialjoin_contracts.validation import check_pool_spec

from . import children, escalation, pool_act, pool_metrics
from .conditions import get_condition, set_condition
from .connections import CONNECTIONS, SecretMissing
from .pool_observe import (
    Observation,
    ReadFailed,
    count_invalid_geometries,
    deployment_reading,
    read_lag,
    read_task_window,
)
from .pool_policy import Decision, Effective, History, decide
from .pool_status import StatusInputs, Validation, build_status, status_patch
from .settings import OperatorSettings

log = logging.getLogger("spatialjoin.operator.pool")


@dataclass
class _PoolMemory:
    lock: threading.Lock
    validation: Validation | None = None
    running: Future[dict[str, int]] | None = None


_memory: dict[tuple[str, str], _PoolMemory] = {}
_memory_lock = threading.Lock()
_validator = ThreadPoolExecutor(max_workers=2, thread_name_prefix="geometry-validation")


def _pool_memory(namespace: str, name: str) -> _PoolMemory:
    with _memory_lock:
        return _memory.setdefault((namespace, name), _PoolMemory(threading.Lock()))


def forget(namespace: str, name: str) -> None:
    with _memory_lock:
        _memory.pop((namespace, name), None)
    pool_metrics.forget(namespace, name)


def reconcile(namespace: str, name: str, settings: OperatorSettings) -> None:
    """Observe, decide, act and write status for one pool; TemporaryError when Kubernetes fails."""
    memory = _pool_memory(namespace, name)
    started = time.monotonic()
    with memory.lock:
        try:
            _round(namespace, name, settings, memory)
        except ApiException as exc:
            raise kopf.TemporaryError(f"Kubernetes API: {exc.status} {exc.reason}",
                                      delay=settings.pool_interval_s) from exc
        finally:
            pool_metrics.OBSERVE_SECONDS.labels(namespace, name).observe(
                time.monotonic() - started)


def _round(namespace: str, name: str, settings: OperatorSettings, memory: _PoolMemory) -> None:
    body = pool_act.read_pool(namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return
    status: Mapping[str, Any] = body.get("status") or {}
    generation = body["metadata"].get("generation")
    spec, errors = check_pool_spec(body.get("spec") or {})
    if spec is None or errors:
        _invalid_spec(body, status, generation, "; ".join(str(e) for e in errors))
        return
    now = datetime.now(UTC)
    live = pool_act.read_deployment(namespace, name)
    observation = observe(spec, namespace, name, live, settings.latency_window_s)
    history = History(effective=children.effective_from_deployment(live)
                      or effective_from_status(status),
                      conditions=status.get("conditions") or [],
                      escalations=status.get("escalations") or [],
                      annotations=body["metadata"].get("annotations") or {})
    decision = decide(spec, observation.signals(), history, now, generation)
    deployed = decision.effective
    restoring = history.annotations.get(api.PAUSED_FOR_RESTORE_ANNOTATION)
    if restoring:
        decision, deployed = paused_for_restore(decision, restoring, generation, now)
    records = escalation.records_for(decision.actions, namespace=namespace, pool=name, now=now)
    applied = pool_act.apply_children(body, spec, deployed, live,
                                      image=settings.worker_image,
                                      query=children.QuerySettings(log_level=settings.log_level))
    observation = replace(observation, deployment=deployment_reading(applied))
    validation = _validation(memory, decision, spec, namespace, name, now)
    desired = build_status(StatusInputs(
        spec=spec, generation=generation, selector=children.selector_string(name),
        observation=observation, decision=decision, previous=status,
        escalations=escalation.history(status.get("escalations") or [], records),
        validation=validation, now=now))
    pool_act.patch_status(namespace, name, status_patch(status, desired))
    for record in records:
        escalation.emit(record, body, pool_act.post_event)
        log.info("escalation %s %s %s: %s", record.incident_id, record.severity.value,
                 record.action.value, record.detail)
    _export_metrics(namespace, name, observation, decision)


def paused_for_restore(decision: Decision, note: str, generation: int | None,
                       now: datetime) -> tuple[Decision, Effective]:
    """While `spatialjoin restore` rebuilds the results table: no workers, no actions."""
    conditions = set_condition(
        decision.conditions, type_="ScalingPaused", status="True", reason="PausedForRestore",
        message=f"annotation {api.PAUSED_FOR_RESTORE_ANNOTATION} ({note}): workers scaled to "
                "0 and no escalation acts until the restore finishes",
        generation=generation, now=now)
    return (replace(decision, actions=(), conditions=conditions),
            replace(decision.effective, replicas=0))


def observe(spec: WorkerPoolSpec, namespace: str, name: str, live: Mapping[str, Any] | None,
            window_s: float) -> Observation:
    """Lag, latency and health, each on its own: a failed read is recorded, never zero."""
    errors: list[str] = []
    lag = None
    try:
        lag = read_lag(spec.broker.bootstrap_servers,
                       children.consumer_group(spec, namespace, name), spec.broker.topic,
                       spec.partition_map)
    except ReadFailed as exc:
        errors.append(f"consumer lag: {exc}")
    tasks = None
    try:
        db = CONNECTIONS.database(pool_act.database_url(namespace, spec))
        tasks = read_task_window(db, children.worker_id_pattern(namespace, name),
                                 pool_act.live_worker_ids(namespace, name), window_s)
    except (ReadFailed, SecretMissing) as exc:
        errors.append(f"task latency and health: {exc}")
    if errors:
        log.warning("pool %s/%s: metrics unavailable: %s", namespace, name, "; ".join(errors))
    return Observation(lag=lag, tasks=tasks, deployment=deployment_reading(live),
                       errors=tuple(errors))


def effective_from_status(status: Mapping[str, Any]) -> Effective | None:
    """The values in force as status last recorded them (when the Deployment is gone)."""
    try:
        return Effective(replicas=int(status.get("desiredReplicas", status["replicas"])),
                         concurrency=int(status["effectiveConcurrency"]),
                         contract=ContractVersion(status["activeContract"]))
    except (KeyError, ValueError, TypeError):
        return None


def _validation(memory: _PoolMemory, decision: Decision, spec: WorkerPoolSpec, namespace: str,
                name: str, now: datetime) -> Validation | None:
    """Start, follow and refresh (once per cooldown) the geometry validation while P1 is open."""
    if not decision.validate_geometries:
        memory.validation, memory.running = None, None
        return None
    current = memory.validation
    if memory.running is not None and memory.running.done() and current is not None:
        try:
            current = replace(current, state="Done", finished_at=now,
                              counts=memory.running.result())
        except Exception as exc:
            current = replace(current, state="Failed", finished_at=now, error=str(exc))
        memory.running = None
    refresh = timedelta(seconds=max(spec.escalation.cooldown_seconds, 60))
    stale = current is None or (current.finished_at is not None
                                and now - current.finished_at >= refresh)
    if memory.running is None and stale:
        try:
            db = CONNECTIONS.database(pool_act.database_url(namespace, spec))
            sources = pool_act.job_sources(namespace, name)
        except SecretMissing as exc:
            current = Validation("Failed", now, now, error=str(exc))
        else:
            memory.running = _validator.submit(count_invalid_geometries, db, sources,
                                               spec.partition_map)
            current = Validation("Running", now, counts=current.counts if current else {})
    memory.validation = current
    return current


def _invalid_spec(body: Mapping[str, Any], status: Mapping[str, Any], generation: int | None,
                  message: str) -> None:
    meta = body["metadata"]
    before = get_condition(status.get("conditions"), "Degraded")
    conditions = set_condition(status.get("conditions") or [], type_="Degraded", status="True",
                               reason="InvalidSpec", message=message, generation=generation,
                               now=datetime.now(UTC))
    pool_act.patch_status(meta["namespace"], meta["name"],
                          {"conditions": conditions, "observedGeneration": generation})
    if before is None or before.get("message") != message:
        pool_act.post_event(body, type="Warning", reason="InvalidSpec", message=message)


def _export_metrics(namespace: str, name: str, observation: Observation,
                    decision: Decision) -> None:
    m = pool_metrics
    if observation.lag is not None:
        m.set_lag(namespace, name, observation.lag.total,
                  {p.name: p.lag for p in observation.lag.partitions})
    tasks = observation.tasks
    if tasks is not None:
        m.LATENCY.labels(namespace, name, "0.5").set(tasks.p50_s)
        m.LATENCY.labels(namespace, name, "0.95").set(tasks.p95_s)
        m.OLDEST_RUNNING.labels(namespace, name).set(tasks.oldest_processing_s)
        m.FAILURES.labels(namespace, name, "all").set(tasks.failed)
        m.FAILURES.labels(namespace, name, "materialization").set(tasks.materialization_failures)
        m.FAILURES.labels(namespace, name, "schema-drift").set(tasks.schema_deviations)
    m.REPLICAS.labels(namespace, name, "desired").set(decision.effective.replicas)
    m.REPLICAS.labels(namespace, name, "existing").set(observation.deployment.replicas)
    m.REPLICAS.labels(namespace, name, "ready").set(observation.deployment.ready)
    m.CONCURRENCY.labels(namespace, name).set(decision.effective.concurrency)
    m.SEVERITY.labels(namespace, name).set(m.SEVERITY_LEVEL[decision.severity])
    m.METRICS_UNAVAILABLE.labels(namespace, name).set(1 if observation.errors else 0)
