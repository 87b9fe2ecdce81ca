"""Read-only gathering for a WorkerPool: consumer lag, task latency and health, the Deployment.

Every read can fail on its own; a failed read is recorded as unavailable
(``Observation.errors``) and its signal is None, never zero, so the policy
holds its last decision instead of scaling down on lag it could not read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from confluent_kafka import Consumer, KafkaException, TopicPartition
from psycopg import sql
from psycopg_pool import ConnectionPool

from spatialjoin_contracts.ddl import JOBS_TABLE, FailureKind, TaskStatus
from spatialjoin_contracts.models import PartitionMapEntry
from spatialjoin_contracts.models.job import JoinSource

from .pool_policy import Signals

READ_TIMEOUT_S: Final = 5.0
VALIDATION_TIMEOUT_S: Final = 120.0
_kafka_log = logging.getLogger("spatialjoin.operator.kafka")


class ReadFailed(RuntimeError):
    """A source could not be read; the message says which and why."""


@dataclass(frozen=True)
class PartitionLagReading:
    name: str
    kafka_partition: int
    lag: int


@dataclass(frozen=True)
class LagReading:
    total: int
    partitions: tuple[PartitionLagReading, ...]
    observed_at: datetime


@dataclass(frozen=True)
class TaskWindow:
    """Finished tasks of the pool in the sliding window, and the ones still running."""

    window_s: float
    finished: int
    p50_s: float
    p95_s: float
    processing: int
    oldest_processing_s: float
    failed: int
    """Failed tasks; the worker dead-letters each of them."""
    materialization_failures: int
    schema_deviations: int
    last_failure_at: datetime | None
    observed_at: datetime


@dataclass(frozen=True)
class DeploymentReading:
    exists: bool = False
    replicas: int = 0
    """Pods that exist (status.replicas)."""
    ready: int = 0
    updated: int = 0
    desired: int | None = None
    rolled_out: bool = True


@dataclass(frozen=True)
class Observation:
    lag: LagReading | None
    tasks: TaskWindow | None
    deployment: DeploymentReading
    errors: tuple[str, ...] = field(default=())

    def signals(self) -> Signals:
        lag, tasks = self.lag, self.tasks
        return Signals(
            lag_total=None if lag is None else lag.total,
            partition_lag={} if lag is None else {p.name: p.lag for p in lag.partitions},
            latency_s=None if tasks is None else max(tasks.p95_s, tasks.oldest_processing_s),
            materialization_failures=None if tasks is None else tasks.materialization_failures,
            schema_deviations=None if tasks is None else tasks.schema_deviations,
            last_failure_at=None if tasks is None else tasks.last_failure_at,
            unavailable=self.errors)


# --- Kafka ------------------------------------------------------------------------------


def read_lag(bootstrap: str, group: str, topic: str, partition_map: Sequence[PartitionMapEntry],
             timeout: float = READ_TIMEOUT_S) -> LagReading:
    """Committed offsets of ``group`` against high watermarks, per mapped partition.

    A separate consumer that never subscribes: it only asks. No committed
    offset means the group starts from the low watermark (auto.offset.reset
    earliest), so everything retained counts as lag.
    """
    deadline = time.monotonic() + timeout

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ReadFailed(f"broker did not answer within {timeout:g} s")
        return remaining

    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                       "enable.auto.commit": False, "client.id": "spatialjoin-operator-lag",
                       "socket.timeout.ms": max(10, int(timeout * 1000)),
                       "logger": _kafka_log})
    try:
        metadata = reader.list_topics(topic, timeout=left())
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            raise ReadFailed(f"topic {topic}: {found.error if found else 'missing'}")
        missing = [e.kafka_partition for e in partition_map
                   if e.kafka_partition not in found.partitions]
        if missing:
            raise ReadFailed(f"topic {topic} lacks partitions {missing}")
        wanted = [TopicPartition(topic, e.kafka_partition) for e in partition_map]
        committed = {tp.partition: tp for tp in reader.committed(wanted, timeout=left())}
        readings = []
        for entry in partition_map:
            offset = committed[entry.kafka_partition]
            if offset.error is not None:
                raise ReadFailed(f"committed offset of partition {entry.kafka_partition}: "
                                 f"{offset.error}")
            low, high = reader.get_watermark_offsets(
                TopicPartition(topic, entry.kafka_partition), timeout=left(), cached=False)
            start = offset.offset if offset.offset is not None and offset.offset >= 0 else low
            readings.append(PartitionLagReading(entry.name, entry.kafka_partition,
                                                max(0, high - max(start, low))))
        return LagReading(sum(r.lag for r in readings), tuple(readings), datetime.now(UTC))
    except KafkaException as exc:
        raise ReadFailed(f"broker: {exc.args[0] if exc.args else exc}") from exc
    finally:
        reader.close()


# --- PostgreSQL -------------------------------------------------------------------------

_FAILED = (TaskStatus.FAILED.value, TaskStatus.DEAD.value)
_FINISHED = (TaskStatus.DONE.value, *_FAILED)
_TASK_WINDOW_SQL: Final = f"""
SELECT count(*) FILTER (WHERE finished),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) FILTER (WHERE finished),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY seconds) FILTER (WHERE finished),
       count(*) FILTER (WHERE running),
       max(age) FILTER (WHERE running),
       count(*) FILTER (WHERE finished AND status = ANY(%(failed)s)),
       count(*) FILTER (WHERE finished AND failure_kind = %(materialization)s),
       count(*) FILTER (WHERE finished AND failure_kind = %(drift)s),
       max(finished_at) FILTER (WHERE finished AND failure_kind = ANY(%(p1_kinds)s))
FROM (
    SELECT status, failure_kind, finished_at,
           status = ANY(%(finished)s) AND finished_at >= now() - %(window)s * interval '1 second'
               AS finished,
           status = 'processing' AND worker = ANY(%(live)s) AS running,
           COALESCE(duration_ms / 1000.0, EXTRACT(EPOCH FROM finished_at - started_at))::float8
               AS seconds,
           EXTRACT(EPOCH FROM now() - started_at)::float8 AS age
    FROM {JOBS_TABLE}
    WHERE worker ~ %(pattern)s
      AND (status = 'processing' OR finished_at >= now() - %(window)s * interval '1 second')
) AS pool_tasks
"""


def read_task_window(db: ConnectionPool, worker_pattern: str, live_workers: Iterable[str],
                     window_s: float) -> TaskWindow:
    """Latency percentiles and failures of the pool's tasks (rows whose worker is its pod).

    Running tasks count only on live pods: a row a crashed pod left in
    'processing' is not a slow task, it waits for redelivery.
    """
    params = {"failed": list(_FAILED), "finished": list(_FINISHED), "window": window_s,
              "live": list(live_workers), "pattern": worker_pattern,
              "materialization": FailureKind.MATERIALIZATION.value,
              "drift": FailureKind.SCHEMA_DRIFT.value,
              "p1_kinds": [FailureKind.MATERIALIZATION.value, FailureKind.SCHEMA_DRIFT.value]}
    try:
        with db.connection(timeout=READ_TIMEOUT_S) as conn, conn.transaction():
            conn.execute(f"SET LOCAL statement_timeout = {int(READ_TIMEOUT_S * 1000)}")
            row = conn.execute(_TASK_WINDOW_SQL, params).fetchone()
    except Exception as exc:
        raise ReadFailed(f"database: {type(exc).__name__}: {exc}") from exc
    assert row is not None  # an aggregate always returns a row
    return TaskWindow(window_s=window_s, finished=int(row[0]), p50_s=float(row[1] or 0.0),
                      p95_s=float(row[2] or 0.0), processing=int(row[3]),
                      oldest_processing_s=float(row[4] or 0.0), failed=int(row[5]),
                      materialization_failures=int(row[6]), schema_deviations=int(row[7]),
                      last_failure_at=row[8], observed_at=datetime.now(UTC))


def count_invalid_geometries(db: ConnectionPool, sources: Iterable[JoinSource],
                             partition_map: Sequence[PartitionMapEntry],
                             timeout_s: float = VALIDATION_TIMEOUT_S) -> dict[str, int]:
    """Invalid geometries per partition over the given join sources (ST_IsValid).

    Polygons count by their partition column, points by the partition's bbox.
    """
    names = [e.name for e in partition_map]
    counts = dict.fromkeys(names, 0)
    # GeoParquet sources have no table to count in; the worker reports their invalid
    # polygons when it reads them.
    polygons = {(s.polygons.table, s.polygons.geometry_column, s.polygons.partition_column)
                for s in sources if s.polygons.table is not None}
    points = {(s.points.table, s.points.geometry_column)
              for s in sources if s.points.table is not None}
    boxes = [e.bbox.as_tuple() for e in partition_map]
    try:
        with db.connection(timeout=READ_TIMEOUT_S) as conn, conn.transaction():
            conn.execute(f"SET LOCAL statement_timeout = {int(timeout_s * 1000)}")
            for table, geom, part in sorted(polygons):
                rows = conn.execute(sql.SQL(
                    "SELECT {part}::text, count(*) FROM {table} "
                    "WHERE {part}::text = ANY(%s) AND NOT ST_IsValid({geom}) GROUP BY 1").format(
                        part=sql.Identifier(part), table=_table(table),
                        geom=sql.Identifier(geom)), (names,)).fetchall()
                _add(counts, rows)
            for table, geom in sorted(points):
                rows = conn.execute(sql.SQL(
                    "SELECT v.name, count(*) FROM unnest(%s::text[], %s::float8[], %s::float8[],"
                    " %s::float8[], %s::float8[]) AS v(name, x0, y0, x1, y1) "
                    "JOIN {table} AS b ON b.{geom} && ST_MakeEnvelope(v.x0, v.y0, v.x1, v.y1, "
                    "4326) WHERE NOT ST_IsValid(b.{geom}) GROUP BY 1").format(
                        table=_table(table), geom=sql.Identifier(geom)),
                    (names, *[list(column) for column in zip(*boxes, strict=True)])).fetchall()
                _add(counts, rows)
    except Exception as exc:
        raise ReadFailed(f"geometry validation: {type(exc).__name__}: {exc}") from exc
    return counts


def _table(name: str) -> sql.Identifier:
    return sql.Identifier(*name.split("."))


def _add(counts: dict[str, int], rows: Iterable[tuple[Any, ...]]) -> None:
    for name, count in rows:
        if name in counts:
            counts[str(name)] += int(count)


# --- Kubernetes (parsing only; the handler reads) -------------------------------------------


def deployment_reading(live: Mapping[str, Any] | None) -> DeploymentReading:
    """Replicas, ready and updated pods of the live Deployment (a plain dict)."""
    if not live:
        return DeploymentReading()
    spec, status = live.get("spec") or {}, live.get("status") or {}
    desired = spec.get("replicas")
    updated = int(status.get("updatedReplicas") or 0)
    replicas = int(status.get("replicas") or 0)
    generation = (live.get("metadata") or {}).get("generation")
    rolled_out = (status.get("observedGeneration") == generation
                  and updated == (desired or 0) and replicas == (desired or 0))
    return DeploymentReading(exists=True, replicas=replicas,
                             ready=int(status.get("readyReplicas") or 0), updated=updated,
                             desired=None if desired is None else int(desired),
                             rolled_out=rolled_out)
