"""Run one diagnosis: gather (Kubernetes, database), apply the rules, return a Report.

Two entry points: :func:`run` when the caller already holds the job and its
pool (the operator, on an SLA breach), and :func:`diagnose` for the CLI,
which finds the job by traceId and reads the database URL from the pool's
Secret unless one is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from kubernetes import client

from spatialjoin_contracts.ddl import JOBS_TABLE, RESULTS_TABLE, TaskStatus
from spatialjoin_contracts.models import SpatialJoinJobSpec, WorkerPoolSpec
from spatialjoin_contracts.task_message import JobIdentity, TaskMessage
from spatialjoin_contracts.task_plan import plan_tasks
from spatialjoin_worker.query import JoinQuery, build_join
from spatialjoin_worker.settings import InvalidGeometryPolicy

from . import findings, gather, kube
from .facts import EventRecord, Facts, JobRef, PartitionRecord, TableRole
from .report import Report

DEFAULT_STATEMENT_TIMEOUT_S: Final = 30.0


@dataclass(frozen=True)
class Options:
    partitions: tuple[str, ...] = ()
    """Partitions to EXPLAIN; empty means the stuck, failed or slowest ones."""
    max_plans: int = 1
    statement_timeout_s: float = DEFAULT_STATEMENT_TIMEOUT_S
    analyze: bool = True
    """EXPLAIN ANALYZE runs the query (read-only, rolled back); off shows the estimate only."""
    policy: InvalidGeometryPolicy = InvalidGeometryPolicy.MAKE_VALID
    """The workers' SPATIALJOIN_INVALID_GEOMETRY_POLICY: it changes the query text."""
    pgstattuple: bool = True


@dataclass(frozen=True)
class Target:
    """What is known about the trace before the database is read."""

    trace_id: str
    job: SpatialJoinJobSpec | None = None
    pool: WorkerPoolSpec | None = None
    ref: JobRef | None = None
    events: tuple[EventRecord, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)


class DiagnosisError(RuntimeError):
    """The diagnosis cannot start (no database URL, no job to take it from)."""


def diagnose(trace_id: str, *, database_url: str | None = None,
             kube_api: client.ApiClient | None = None, namespace: str | None = None,
             options: Options = Options(), now: datetime | None = None) -> Report:
    """Find the job by traceId (when a Kubernetes client is given), then :func:`run`."""
    target = Target(trace_id=trace_id)
    if kube_api is not None:
        target = _from_kubernetes(kube_api, trace_id, namespace)
        if not database_url and target.pool is not None and target.ref is not None:
            database_url = kube.database_url(kube_api, target.ref.namespace, target.pool)
    if not database_url:
        raise DiagnosisError("no database URL: pass --database-url (SPATIALJOIN_DATABASE_URL) "
                             "or let the job's WorkerPool Secret provide it")
    return run(target, database_url, options, now=now)


def _from_kubernetes(kube_api: client.ApiClient, trace_id: str, namespace: str | None) -> Target:
    notes: list[str] = []
    try:
        body = kube.find_job(kube_api, trace_id, namespace)
    except Exception as exc:  # the report still has the database side
        return Target(trace_id=trace_id, notes=(f"SpatialJoinJob lookup: {exc}",))
    if body is None:
        where = f"namespace {namespace}" if namespace else "any namespace"
        return Target(trace_id=trace_id,
                      notes=(f"no SpatialJoinJob with traceId {trace_id!r} in {where}",))
    spec = kube.job_spec(body)
    ref = kube.job_ref(body, spec)
    events: tuple[EventRecord, ...] = ()
    try:
        events = kube.job_events(kube_api, ref.namespace, ref.uid)
    except Exception as exc:
        notes.append(f"Events: {exc}")
    pool = None
    if spec is not None:
        pool = kube.pool_spec(kube_api, ref.namespace, spec.worker_pool_ref.name)
        if pool is None:
            notes.append(f"WorkerPool {ref.namespace}/{spec.worker_pool_ref.name} not found or "
                         "invalid: no partition bbox, so no plan")
    return Target(trace_id=trace_id, job=spec, pool=pool, ref=ref, events=events,
                  notes=tuple(notes))


def run(target: Target, database_url: str, options: Options = Options(), *,
        now: datetime | None = None) -> Report:
    """Gather the database side of ``target`` read-only and apply the rules."""
    now = now or datetime.now(UTC)
    notes = gather.Notes(list(target.notes))
    with gather.connect(database_url) as conn:
        partitions = gather.partition_records(conn, target.trace_id, notes)
        results = gather.result_records(conn, target.trace_id, notes)
        stattuple = gather.pgstattuple_schema(conn) if options.pgstattuple else None
        tables = [gather.table_facts(conn, name, role, geometry_column=column,
                                     stattuple_schema=stattuple, notes=notes)
                  for name, role, column in _tables(target.job)]
        plans = []
        deadline = target.job.sla.deadline_seconds if target.job else findings.DEFAULT_DEADLINE_S
        planned = _planned_partitions(target)
        if target.job is None or target.pool is None:
            notes.items.append("no job spec and pool: plan inspection skipped")
        reads_geoparquet = target.job is not None and target.job.source.reads_geoparquet()
        if reads_geoparquet:
            notes.items.append("the job reads GeoParquet (engine: vectorized): no SQL plan "
                               "to inspect")
        chosen = [] if reads_geoparquet else choose_partitions(
            partitions, planned, options.partitions, options.max_plans, now, deadline)
        for name, reason in chosen:
            query = partition_query(target, name, options.policy)
            if query is None:
                notes.items.append(f"partition {name} is not one of the job's partitions")
                continue
            plans.append(gather.explain(conn, query, partition=name, reason=reason,
                                        timeout_s=options.statement_timeout_s,
                                        analyze=options.analyze))
    facts = Facts(trace_id=target.trace_id, now=now, job=target.ref, events=target.events,
                  partitions=partitions, results=results, plans=tuple(plans),
                  tables=tuple(tables), pgstattuple=stattuple is not None,
                  notes=tuple(notes.items))
    return Report(facts, tuple(findings.find(facts)))


def _tables(job: SpatialJoinJobSpec | None) -> list[tuple[str, TableRole, str | None]]:
    tables: list[tuple[str, TableRole, str | None]] = []
    if job is not None:  # a GeoParquet side has no table to look at
        if job.source.polygons.table is not None:
            tables.append((job.source.polygons.table, TableRole.POLYGONS,
                           job.source.polygons.geometry_column))
        if job.source.points.table is not None:
            tables.append((job.source.points.table, TableRole.POINTS,
                           job.source.points.geometry_column))
    tables += [(JOBS_TABLE, TableRole.JOBS, None), (RESULTS_TABLE, TableRole.RESULTS, None)]
    return tables


def _planned_partitions(target: Target) -> list[str]:
    if target.job is None or target.pool is None:
        return []
    return [t.partition_key for t in _tasks(target)]


def _tasks(target: Target) -> list[TaskMessage]:
    assert target.job is not None and target.pool is not None
    identity = JobIdentity(namespace=target.ref.namespace if target.ref else "diagnose",
                           name=target.ref.name if target.ref else "diagnose",
                           uid=target.ref.uid if target.ref else target.trace_id)
    return plan_tasks(target.job, target.pool, identity, enqueued_at=datetime.now(UTC))


def partition_query(target: Target, partition: str,
                    policy: InvalidGeometryPolicy) -> JoinQuery | None:
    """The worker's exact query for ``partition`` (its bbox cut by the job's bbox)."""
    if target.job is None or target.pool is None:
        return None
    for task in _tasks(target):
        if task.partition_key == partition:
            return build_join(task.source, task.partition_key, task.bbox, policy)
    return None


def choose_partitions(records: Sequence[PartitionRecord], planned: Sequence[str],
                      asked: Sequence[str], limit: int, now: datetime,
                      deadline_s: int) -> list[tuple[str, str]]:
    """Which partitions to EXPLAIN, and why: asked for; else stuck or processing (oldest
    first), failed, the slowest done, queued; else the first planned one."""
    if asked:
        return [(name, "asked for") for name in asked]
    known = set(planned)
    ranked: list[tuple[str, str]] = []
    active = [r for r in records if r.status == TaskStatus.PROCESSING.value]
    for row in sorted(active, key=lambda r: r.updated_at or r.started_at or now):
        since = row.updated_at or row.started_at or now
        age = (now - since).total_seconds()
        ranked.append((row.partition, f"stuck: processing for {age:.0f}s" if age > deadline_s
                       else f"processing for {age:.0f}s"))
    failed = [r for r in records if r.status in (TaskStatus.FAILED.value, TaskStatus.DEAD.value)]
    ranked += [(r.partition, f"failed ({r.failure_kind or 'unknown'})") for r in failed]
    done = [r for r in records if r.status == TaskStatus.DONE.value and r.duration_ms is not None]
    ranked += [(r.partition, f"slowest done: {(r.duration_ms or 0) / 1000:.1f}s")
               for r in sorted(done, key=lambda r: r.duration_ms or 0, reverse=True)]
    ranked += [(r.partition, "queued") for r in records if r.status == TaskStatus.QUEUED.value]
    if not records and planned:
        ranked.append((planned[0], "first partition (nothing has run yet)"))
    chosen: list[tuple[str, str]] = []
    for name, reason in ranked:
        if name in known and name not in {c[0] for c in chosen}:
            chosen.append((name, reason))
    return chosen[:max(0, limit)]
