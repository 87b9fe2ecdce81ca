"""kopf handlers for SpatialJoinJobs: one reconciling timer and a deletion handler.

The timer is the only writer of a job's status. It fires as soon as a job
appears (that is the "on create") and then every ``job_interval_s``: parse
and validate, resolve the WorkerPool, observe the job's rows, let
:mod:`job_policy` decide, act through :mod:`job_publish`, and write status
once, with an Event per transition. Everything it needs to resume lives in
the cluster or the database (status, the queued-spec annotation, the rows),
so an operator restart continues where the last one stopped.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import kopf
import psycopg
import psycopg_pool
from confluent_kafka import KafkaException
from kubernetes.client.exceptions import ApiException

from spatialjoin_contracts import api
from spatialjoin_contracts.models import SpatialJoinJobSpec
from spatialjoin_contracts.models.job import JobPhase
from spatialjoin_contracts.models.pool import WorkerPoolSpec
from spatialjoin_contracts.task_message import JobIdentity, TaskMessage
from spatialjoin_contracts.task_plan import plan_tasks
from spatialjoin_contracts.validation import check_job_spec, validate_job

from . import job_observe, job_policy, job_publish
from . import kopf_setup as _kopf_setup  # noqa: F401  (shared startup settings)
from .conditions import parse_time
from .connections import CONNECTIONS, SecretMissing
from .diagnose import background as diagnosis
from .diagnose import record as diagnosis_record
from .job_facts import Blocked, Blocker, JobEvent, JobFacts, Observation
from .job_metrics import JOB_METRICS
from .settings import load

SETTINGS = load()
QUEUED_SPEC_ANNOTATION: Final = api.QUEUED_SPEC_ANNOTATION
"""The spec as it was queued: retries re-publish exactly this join."""
DELETE_RESULTS_ANNOTATION: Final = "spatialjoin.io/delete-results"
"""Set to "true" to delete the result objects and rows when the job is deleted."""
BACKEND_ERRORS: Final = (psycopg.Error, psycopg_pool.PoolTimeout, KafkaException,
                         job_publish.PublishFailed)


# --- the reconciling timer --------------------------------------------------------------


@dataclass
class _Driven:
    """What observing and acting on a job produced."""

    partitions: list[str] = field(default_factory=list)
    observation: Observation | None = None
    queued: bool = False
    blocked: Blocked | None = None
    events: list[JobEvent] = field(default_factory=list)


@kopf.timer(api.GROUP, api.VERSION, api.JOB_PLURAL, interval=SETTINGS.job_interval_s,
            backoff=SETTINGS.job_interval_s)
def reconcile_job(body: kopf.Body, meta: kopf.Meta, spec: kopf.Spec, status: kopf.Status,
                  patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
    """Observe, decide, act, write status once."""
    try:
        _reconcile(body, meta, spec, status, patch, logger, datetime.now(UTC))
    except Exception as exc:
        JOB_METRICS.reconcile_errors.labels(handler="timer", reason=type(exc).__name__).inc()
        raise


def _reconcile(body: kopf.Body, meta: kopf.Meta, spec: kopf.Spec, status: kopf.Status,
               patch: kopf.Patch, logger: kopf.Logger, now: datetime) -> None:
    uid, generation = str(meta["uid"]), meta.get("generation")
    previous: dict[str, Any] = copy.deepcopy(dict(status))
    current, errors = check_job_spec(copy.deepcopy(dict(spec)))
    queued_spec = _queued_spec(meta.annotations)
    if job_policy.settled(previous, generation):
        effective = job_policy.effective_spec(queued_spec, current, not errors)
        JOB_METRICS.job_phase(uid, JobPhase(previous["phase"]))
        _expire_if_due(body, meta, effective or current, previous, now)
        return
    recorded = previous.get("traceId")
    refused = job_policy.refused_changes(queued_spec, current, recorded)
    effective = job_policy.effective_spec(queued_spec, current, not errors)
    trace_id = recorded or (effective.effective_trace_id(uid) if effective else None)
    if effective is not None and trace_id is not None:
        effective = effective.model_copy(update={"trace_id": None if trace_id == uid
                                                 else trace_id})
    driven, pool_contract = _Driven(queued=queued_spec is not None), None
    pool_spec: WorkerPoolSpec | None = None
    if effective is not None and trace_id is not None:
        pool = job_observe.resolve_pool(meta["namespace"], effective.worker_pool_ref.name)
        if isinstance(pool, Blocked):
            driven.blocked = pool
        else:
            pool_contract, pool_spec = pool.active_contract, pool.spec
            if queued_spec is None and current is not None:
                errors = validate_job(current, pool.spec)
            if not errors or queued_spec is not None:
                driven = _drive(meta, effective, pool, trace_id, previous, now, queued_spec)
                if driven.queued and queued_spec is None:
                    patch.meta.annotations[QUEUED_SPEC_ANNOTATION] = json.dumps(
                        effective.to_k8s(), sort_keys=True, separators=(",", ":"))
    if driven.blocked is not None:
        logger.debug("job blocked: %s: %s", driven.blocked.reason, driven.blocked.message)
    facts = JobFacts(
        generation=generation, created=parse_time(meta["creationTimestamp"]) or now,
        spec=effective, invalid=errors, refused=refused, trace_id=trace_id,
        partitions=driven.partitions, queued=driven.queued, blocked=driven.blocked,
        observation=driven.observation, pool_contract=pool_contract)
    assessment = job_policy.assess(facts, previous, now)
    status_out = dict(assessment.status)
    recorded = diagnosis_record.condition_from_annotation(meta.annotations)
    if recorded is not None:  # re-asserted each tick: the background writer may lose a race
        status_out["conditions"] = diagnosis_record.with_condition(
            status_out.get("conditions") or [], recorded[0], recorded[1], generation, now)
    _write_status(patch, previous, status_out)
    _post(body, logger, [*driven.events, *assessment.events])
    if (effective is not None and trace_id is not None and pool_spec is not None
            and diagnosis_record.needs_diagnosis(meta.annotations, assessment.status, now)):
        diagnosis.diagnose_in_background(
            namespace=str(meta["namespace"]), name=str(meta["name"]), uid=uid,
            trace_id=trace_id, job=effective, pool=pool_spec, generation=generation)
    JOB_METRICS.job_phase(uid, assessment.phase)
    if assessment.sla_breached_now:
        JOB_METRICS.sla_breaches.inc()
    if assessment.finished_now:
        JOB_METRICS.finished(assessment.phase, assessment.duration_s)
    _expire_if_due(body, meta, effective or current, assessment.status, now)


def _drive(meta: kopf.Meta, job: SpatialJoinJobSpec, pool: job_observe.PoolContext, trace_id: str,
           previous: Mapping[str, Any], now: datetime,
           queued_spec: SpatialJoinJobSpec | None) -> _Driven:
    """Observe the rows; queue, retry and re-publish as the policy says; observe again."""
    namespace, uid = str(meta["namespace"]), str(meta["uid"])
    identity = JobIdentity(namespace=namespace, name=str(meta["name"]), uid=uid)
    tasks = plan_tasks(job, pool.spec, identity, enqueued_at=now, contract=pool.active_contract)
    driven = _Driven(partitions=[t.partition_key for t in tasks], queued=queued_spec is not None)
    try:
        url = job_observe.database_url(pool.spec, namespace)
        db = CONNECTIONS.database(url)
        job_publish.ensure_migrated(url, db)
        observation = job_observe.observe(db, trace_id)
        if not job_policy.finished(previous):
            acted = _act(db, job, pool, identity, tasks, observation, now, driven)
            if acted:
                observation = job_observe.observe(db, trace_id)
        driven.observation = observation
        driven.queued = driven.queued or any(n in observation.rows for n in driven.partitions)
    except SecretMissing as exc:
        driven.blocked = Blocked(Blocker.SECRET_MISSING, f"{exc}; waiting for it")
    except BACKEND_ERRORS as exc:
        JOB_METRICS.reconcile_errors.labels(handler="timer", reason=type(exc).__name__).inc()
        driven.blocked = Blocked(Blocker.BACKEND_UNAVAILABLE, f"{type(exc).__name__}: {exc}")
    return driven


def _act(db: psycopg_pool.ConnectionPool, job: SpatialJoinJobSpec, pool: job_observe.PoolContext,
         identity: JobIdentity, tasks: Sequence[TaskMessage], observation: Observation,
         now: datetime, driven: _Driven) -> bool:
    """Publish what the policy asks for; True when anything was written."""
    if job.suspend:
        return False
    broker = pool.spec.broker
    todo = set(job_policy.partitions_to_queue(driven.partitions, observation.rows, identity.uid))
    republishes = job_policy.decide_republish(job, observation.rows, driven.partitions, now)
    if not todo and not republishes:
        return False
    producer = CONNECTIONS.producer(broker)
    if todo:
        report = job_publish.queue_partitions(db, producer, broker.topic, identity.uid,
                                              [t for t in tasks if t.partition_key in todo])
        if report.delivered:
            driven.events.append(JobEvent(
                "Normal", "TasksPublished",
                f"{len(report.delivered)} task(s) published to topic {broker.topic!r} "
                f"(attempt 1): {', '.join(sorted(report.delivered))}"))
        if report.failed:
            listed = "; ".join(f"{k}: {v}" for k, v in sorted(report.failed.items()))
            raise job_publish.PublishFailed(f"tasks not acknowledged, retried next time: {listed}")
    for decision in republishes:
        (task,) = [t for t in plan_tasks(job, pool.spec, identity, enqueued_at=now,
                                         contract=pool.active_contract, attempt=decision.attempt)
                   if t.partition_key == decision.partition]
        moved = job_publish.republish(db, producer, broker.topic, task, decision)
        reason = ("PartitionRetried" if decision.reason is job_policy.RepublishReason.RETRY
                  else "PartitionRepublished")
        note = "" if moved else " (a worker picked the partition up meanwhile)"
        driven.events.append(JobEvent(
            "Warning", reason, f"partition {decision.partition}: attempt {decision.attempt} "
                               f"published; {decision.message}{note}"))
    return True


def _write_status(patch: kopf.Patch, previous: Mapping[str, Any],
                  new: Mapping[str, Any]) -> None:
    """Only the top-level fields that changed; None removes a field."""
    for key in sorted(set(previous) | set(new)):
        if previous.get(key) != new.get(key):
            patch.status[key] = new.get(key)


def _post(body: kopf.Body, logger: kopf.Logger, events: Sequence[JobEvent]) -> None:
    """Each Event, also into the operator's log (the audit trail outlives Events' TTL)."""
    for event in events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
        level = logging.WARNING if event.type == "Warning" else logging.INFO
        logger.log(level, "%s: %s", event.reason, event.message)


def _expire_if_due(body: kopf.Body, meta: kopf.Meta, spec: SpatialJoinJobSpec | None,
                   status: Mapping[str, Any], now: datetime) -> None:
    if spec is None or not job_policy.ttl_expired(spec, status, now):
        return
    kopf.info(body, reason="Expired",
              message=f"ttlSecondsAfterFinished ({spec.ttl_seconds_after_finished}s) passed "
                      f"since {status.get('completionTime')}; deleting the job")
    try:
        job_observe.custom_api().delete_namespaced_custom_object(
            api.GROUP, api.VERSION, str(meta["namespace"]), api.JOB_PLURAL, str(meta["name"]),
            _request_timeout=job_observe.KUBE_TIMEOUT_S)
    except ApiException as exc:
        if exc.status != 404:
            raise


def _queued_spec(annotations: Mapping[str, str]) -> SpatialJoinJobSpec | None:
    raw = annotations.get(QUEUED_SPEC_ANNOTATION)
    if not raw:
        return None
    try:
        return SpatialJoinJobSpec.model_validate(json.loads(raw))
    except ValueError:
        return None  # a hand-edited annotation: fall back to the current spec


# --- deletion: cancel, never wedge ------------------------------------------------------


@kopf.on.delete(api.GROUP, api.VERSION, api.JOB_PLURAL, retries=3, backoff=2.0, timeout=60.0)
def cancel_job(body: kopf.Body, meta: kopf.Meta, spec: kopf.Spec, status: kopf.Status,
               retry: int, logger: kopf.Logger, **_: Any) -> None:
    """Cancel the job's queued and processing partitions; keep results unless asked.

    Bounded: after the last retry it gives up with a Warning Event and lets
    the finalizer go, so a job never blocks its namespace's deletion.
    """
    uid = str(meta["uid"])
    JOB_METRICS.forget(uid)
    trace_id = status.get("traceId")
    if not trace_id:
        logger.info("job deleted before anything was queued; nothing to cancel")
        return
    try:
        message = _cancel(meta, spec, str(trace_id))
    except Exception as exc:
        JOB_METRICS.reconcile_errors.labels(handler="delete", reason=type(exc).__name__).inc()
        if retry < 2 and isinstance(exc, BACKEND_ERRORS):
            raise kopf.TemporaryError(f"cancelling failed, retrying: {exc}", delay=2.0) from exc
        logger.exception("cancelling traceId %s failed; releasing the finalizer", trace_id)
        kopf.warn(body, reason="CancellationFailed",
                     message=f"could not cancel the partitions of traceId {trace_id!r}: "
                             f"{type(exc).__name__}: {exc}; queued tasks may still run")
        return
    logger.info(message)
    kopf.info(body, reason="Cancelled", message=message)


def _cancel(meta: kopf.Meta, spec: kopf.Spec, trace_id: str) -> str:
    namespace, uid = str(meta["namespace"]), str(meta["uid"])
    queued = _queued_spec(meta.annotations)
    pool_name = queued.worker_pool_ref.name if queued else (spec.get("workerPoolRef") or {}).get(
        "name")
    if not pool_name:
        return "nothing cancelled: the job names no WorkerPool"
    pool = job_observe.resolve_pool(namespace, str(pool_name))
    if isinstance(pool, Blocked):
        return f"nothing cancelled: {pool.message.removesuffix('; waiting for it')}"
    url = job_observe.database_url(pool.spec, namespace)
    db = CONNECTIONS.database(url)
    job_publish.ensure_migrated(url, db)
    cancelled = job_publish.cancel(db, uid, trace_id)
    listed = ", ".join(cancelled) if cancelled else "none"
    message = f"job deleted: cancelled queued or processing partitions of traceId " \
              f"{trace_id!r}: {listed}"
    if meta.annotations.get(DELETE_RESULTS_ANNOTATION, "").lower() != "true":
        return f"{message}; results kept"
    uris = job_publish.result_uris(db, uid, trace_id)
    job_publish.delete_objects(pool.spec.storage, job_observe.storage_keys(pool.spec, namespace),
                               uris)
    forgotten = job_publish.forget_results(db, uid, trace_id)
    return f"{message}; {len(uris)} result object(s) and {forgotten} result row(s) deleted " \
           f"({DELETE_RESULTS_ANNOTATION})"
