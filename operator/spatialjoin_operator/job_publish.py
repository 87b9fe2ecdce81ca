"""The job's writes: register partition rows, publish tasks, re-publish, cancel, forget results.

Exactly-once bookkeeping without a new column: a registered row is 'queued'
with attempt 0; after the broker acknowledged the task (acks per the pool's
broker spec, all by default, idempotent producer) the row gets attempt 1.
Only rows still at (queued, 0) are published, so re-running the handler after
a restart publishes nothing twice. The one window left, a crash between the
acknowledgement and the UPDATE, re-publishes the same attempt, which the
worker's result-row idempotency turns into a no-op.

Re-publishing (a retry or a stuck attempt) publishes first and then moves
the row to (queued, attempt + 1) only if it is still as observed: if a
worker got there first, the guard does nothing and the duplicate task is
skipped by the worker.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from confluent_kafka import Producer
from psycopg_pool import ConnectionPool

from spatialjoin_contracts.ddl import JOBS_TABLE, RESULTS_TABLE, TaskStatus, migrate
from spatialjoin_contracts.models.pool import StorageSpec
from spatialjoin_contracts.task_message import TaskMessage, encode

from .job_policy import Republish

DB_TIMEOUT_S: Final = 10.0
DELIVERY_TIMEOUT_S: Final = 15.0

_migrated: set[str] = set()
_migrate_lock = threading.Lock()
# Delivery callbacks run in whichever thread calls flush(): one publisher at a time.
_produce_lock = threading.Lock()


class PublishFailed(RuntimeError):
    """The broker did not acknowledge some tasks; they stay unpublished and are tried again."""


@dataclass(frozen=True)
class PublishReport:
    delivered: tuple[str, ...] = ()
    failed: dict[str, str] = field(default_factory=dict)


def ensure_migrated(url: str, db: ConnectionPool) -> None:
    """Run the DDL migration once per database URL in this process."""
    if url in _migrated:
        return
    with _migrate_lock:
        if url in _migrated:
            return
        with db.connection(timeout=DB_TIMEOUT_S) as conn, conn.transaction(), \
                conn.cursor() as cur:
            migrate(cur)
        _migrated.add(url)


def publish_tasks(producer: Producer, topic: str, tasks: Sequence[TaskMessage],
                  timeout_s: float = DELIVERY_TIMEOUT_S) -> PublishReport:
    """Produce each task to its partition; report which the broker acknowledged."""
    delivered: list[str] = []
    failed: dict[str, str] = {}

    def on_delivery(err: Any, msg: Any) -> None:
        key = (msg.key() or b"").decode()
        if err is None:
            delivered.append(key)
        else:
            failed[key] = str(err)

    with _produce_lock:
        for task in tasks:
            encoded = encode(task)
            try:
                producer.produce(topic, value=encoded.value, key=encoded.key,
                                 partition=encoded.partition, on_delivery=on_delivery,
                                 headers=list(encoded.headers))
            except Exception as exc:  # BufferError, KafkaException: this task is not sent
                failed[task.partition_key] = f"{type(exc).__name__}: {exc}"
        if producer.flush(timeout_s) > 0:
            # Not acknowledged in time: drop what never left, so it cannot arrive later
            # after we reported it unpublished (and publish it again).
            producer.purge(in_queue=True, in_flight=False)
            producer.flush(5.0)
    for task in tasks:
        name = task.partition_key
        if name not in delivered and name not in failed:
            failed[name] = f"not acknowledged within {timeout_s:g}s"
    return PublishReport(tuple(delivered), failed)


def register(db: ConnectionPool, uid: str, tasks: Sequence[TaskMessage]) -> None:
    """One 'queued' row per task, attempt 0; rows a deleted or failed job left are taken over."""
    with db.connection(timeout=DB_TIMEOUT_S) as conn, conn.transaction(), \
            conn.cursor() as cur:
        cur.executemany(
            f"""
            INSERT INTO {JOBS_TABLE} AS j (job_id, trace_id, partition_key, kafka_partition,
                contract, status, attempt, queued_at, updated_at)
            VALUES (%s, %s, %s, %s, %s, 'queued', 0, now(), now())
            ON CONFLICT (trace_id, partition_key) DO UPDATE
            SET job_id = EXCLUDED.job_id, kafka_partition = EXCLUDED.kafka_partition,
                contract = EXCLUDED.contract, status = 'queued', attempt = 0, worker = NULL,
                queued_at = now(), started_at = NULL, finished_at = NULL, updated_at = now(),
                rows = NULL, bytes = NULL, duration_ms = NULL, invalid_geometries = NULL,
                failure_kind = NULL, error_log = NULL
            WHERE j.job_id <> EXCLUDED.job_id AND j.status IN ('cancelled', 'failed', 'dead')
            """,
            [(uid, t.trace_id, t.partition_key, t.kafka_partition, t.output.contract.value)
             for t in tasks])


def unpublished(db: ConnectionPool, uid: str, trace_id: str, names: Sequence[str]) -> set[str]:
    """Of ``names``, the rows of this job still registered but never published."""
    with db.connection(timeout=DB_TIMEOUT_S) as conn:
        rows = conn.execute(
            f"SELECT partition_key FROM {JOBS_TABLE} WHERE trace_id = %s AND job_id = %s "
            "AND status = 'queued' AND attempt = 0 AND partition_key = ANY(%s)",
            (trace_id, uid, list(names))).fetchall()
    return {str(row[0]) for row in rows}


def mark_published(db: ConnectionPool, trace_id: str, names: Sequence[str]) -> None:
    """Attempt 1 is out: unless a worker already claimed the row."""
    if not names:
        return
    with db.connection(timeout=DB_TIMEOUT_S) as conn:
        conn.execute(
            f"UPDATE {JOBS_TABLE} SET attempt = 1, updated_at = now() "
            "WHERE trace_id = %s AND partition_key = ANY(%s) AND status = 'queued' "
            "AND attempt = 0", (trace_id, list(names)))


def queue_partitions(db: ConnectionPool, producer: Producer, topic: str, uid: str,
                     tasks: Sequence[TaskMessage]) -> PublishReport:
    """Register, then publish only what is still unpublished, then record it."""
    if not tasks:
        return PublishReport()
    register(db, uid, tasks)
    trace_id = tasks[0].trace_id
    todo = unpublished(db, uid, trace_id, [t.partition_key for t in tasks])
    report = publish_tasks(producer, topic, [t for t in tasks if t.partition_key in todo])
    mark_published(db, trace_id, report.delivered)
    return report


def republish(db: ConnectionPool, producer: Producer, topic: str, task: TaskMessage,
              decision: Republish) -> bool:
    """Publish ``task`` (attempt + 1), then requeue the row if it is still as observed.

    Returns False when a worker moved the row first (the task is then a harmless duplicate).
    Raises PublishFailed when the broker did not acknowledge it.
    """
    report = publish_tasks(producer, topic, [task])
    if report.failed:
        raise PublishFailed("; ".join(f"{k}: {v}" for k, v in report.failed.items()))
    guard = "AND updated_at = %(seen)s" if decision.from_status is TaskStatus.PROCESSING else ""
    with db.connection(timeout=DB_TIMEOUT_S) as conn:
        cursor = conn.execute(
            f"""
            UPDATE {JOBS_TABLE}
            SET status = 'queued', attempt = %(attempt)s, worker = NULL, started_at = NULL,
                finished_at = NULL, updated_at = now()
            WHERE trace_id = %(trace)s AND partition_key = %(part)s
              AND status = %(status)s AND attempt = %(from)s {guard}
            """,
            {"attempt": decision.attempt, "trace": task.trace_id, "part": task.partition_key,
             "status": decision.from_status.value, "from": decision.from_attempt,
             "seen": decision.observed_updated_at})
        return cursor.rowcount == 1


def cancel(db: ConnectionPool, uid: str, trace_id: str) -> list[str]:
    """Mark this job's queued and processing partitions 'cancelled'; workers skip them."""
    with db.connection(timeout=DB_TIMEOUT_S) as conn:
        rows = conn.execute(
            f"""
            UPDATE {JOBS_TABLE}
            SET status = 'cancelled', updated_at = now(), finished_at = now(),
                error_log = concat_ws(E'\\n', error_log, 'cancelled: SpatialJoinJob deleted')
            WHERE trace_id = %s AND job_id = %s AND status IN ('queued', 'processing')
            RETURNING partition_key
            """, (trace_id, uid)).fetchall()
    return sorted(str(row[0]) for row in rows)


def result_uris(db: ConnectionPool, uid: str, trace_id: str) -> list[str]:
    """URIs of the results of partitions this job queued."""
    with db.connection(timeout=DB_TIMEOUT_S) as conn:
        rows = conn.execute(
            f"SELECT r.result_uri FROM {RESULTS_TABLE} AS r JOIN {JOBS_TABLE} AS j "
            "USING (trace_id, partition_key) WHERE r.trace_id = %s AND j.job_id = %s "
            "AND r.result_uri IS NOT NULL ORDER BY r.partition_key", (trace_id, uid)).fetchall()
    return [str(row[0]) for row in rows]


def forget_results(db: ConnectionPool, uid: str, trace_id: str) -> int:
    """Delete the result rows of partitions this job queued (after their objects are gone)."""
    with db.connection(timeout=DB_TIMEOUT_S) as conn:
        cursor = conn.execute(
            f"DELETE FROM {RESULTS_TABLE} AS r USING {JOBS_TABLE} AS j "
            "WHERE r.trace_id = j.trace_id AND r.partition_key = j.partition_key "
            "AND r.trace_id = %s AND j.job_id = %s", (trace_id, uid))
        return cursor.rowcount


def delete_objects(storage: StorageSpec, keys: tuple[str, str], uris: Sequence[str]) -> None:
    """Delete result objects with the pool's storage settings; missing ones are fine."""
    from urllib.parse import urlparse

    from pyarrow import fs

    options: dict[str, Any] = {"access_key": keys[0], "secret_key": keys[1],
                               "region": storage.region, "connect_timeout": 5,
                               "request_timeout": 30}
    if storage.endpoint:
        endpoint = urlparse(storage.endpoint)
        options.update(endpoint_override=endpoint.netloc, scheme=endpoint.scheme or "https",
                       force_virtual_addressing=not storage.path_style)
    s3 = fs.S3FileSystem(**options)
    for uri in uris:
        with contextlib.suppress(FileNotFoundError):
            s3.delete_file(uri.removeprefix("s3://"))
