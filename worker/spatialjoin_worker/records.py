"""The task's rows in PostgreSQL: progress in spatial_async_jobs, results in spatial_join_results.

The result row's primary key (trace_id, partition_key) is what makes a
redelivered task a no-op: the insert does nothing the second time.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg_pool import ConnectionPool

from spatialjoin_contracts.ddl import JOBS_TABLE, RESULTS_TABLE, FailureKind, TaskStatus
from spatialjoin_contracts.task_message import TaskMessage


@dataclass(frozen=True)
class ExistingResult:
    uri: str | None
    rows: int
    bytes: int
    checksum: str


@dataclass(frozen=True)
class ResultRecord:
    uri: str
    rows: int
    bytes: int
    checksum: str
    contract: str


class TaskRecords:
    """All SQL the worker runs against the bookkeeping tables."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def is_cancelled(self, task: TaskMessage) -> bool:
        """The job was deleted: its rows say 'cancelled' (the operator's finalizer)."""
        with self._pool.connection() as conn:
            row = conn.execute(
                f"SELECT status FROM {JOBS_TABLE} WHERE trace_id = %s AND partition_key = %s",
                (task.trace_id, task.partition_key)).fetchone()
        return row is not None and row[0] == TaskStatus.CANCELLED.value

    def existing_result(self, task: TaskMessage) -> ExistingResult | None:
        with self._pool.connection() as conn:
            row = conn.execute(
                f"SELECT result_uri, rows, bytes, checksum_sha256 FROM {RESULTS_TABLE} "
                "WHERE trace_id = %s AND partition_key = %s",
                (task.trace_id, task.partition_key)).fetchone()
        return None if row is None else ExistingResult(row[0], row[1], row[2], row[3])

    def mark_processing(self, task: TaskMessage, worker: str) -> None:
        """Claim the partition; registers the row when the operator has not (direct producers)."""
        with self._pool.connection() as conn:
            conn.execute(
                f"""
                INSERT INTO {JOBS_TABLE} (job_id, trace_id, partition_key, kafka_partition,
                    contract, status, attempt, worker, started_at, updated_at)
                VALUES (%(job)s, %(trace)s, %(part)s, %(kp)s, %(contract)s, 'processing',
                    %(attempt)s, %(worker)s, now(), now())
                ON CONFLICT (trace_id, partition_key) DO UPDATE
                SET status = 'processing', attempt = GREATEST({JOBS_TABLE}.attempt,
                        EXCLUDED.attempt),
                    worker = EXCLUDED.worker, started_at = now(), updated_at = now(),
                    finished_at = NULL
                WHERE {JOBS_TABLE}.status NOT IN ('done', 'cancelled')
                """,
                {"job": task.job.uid, "trace": task.trace_id, "part": task.partition_key,
                 "kp": task.kafka_partition, "contract": task.output.contract.value,
                 "attempt": task.attempt, "worker": worker})

    def record_result(self, task: TaskMessage, result: ResultRecord, duration_ms: int,
                      invalid_geometries: int) -> bool:
        """Insert the result (idempotent) and mark the partition done, in one transaction.

        Returns False when the result row already existed (another delivery won).
        """
        with self._pool.connection() as conn, conn.transaction():
            inserted = conn.execute(
                f"""
                INSERT INTO {RESULTS_TABLE} (trace_id, partition_key, result_uri,
                    checksum_sha256, contract, rows, bytes)
                VALUES (%s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (trace_id, partition_key) DO NOTHING
                """,
                (task.trace_id, task.partition_key, result.uri, result.checksum,
                 result.contract, result.rows, result.bytes)).rowcount
            conn.execute(
                f"""
                UPDATE {JOBS_TABLE}
                SET status = 'done', rows = %s, bytes = %s, duration_ms = %s,
                    invalid_geometries = %s, contract = %s, finished_at = now(),
                    updated_at = now(), error_log = NULL, failure_kind = NULL
                WHERE trace_id = %s AND partition_key = %s AND status <> 'cancelled'
                """,
                (result.rows, result.bytes, duration_ms, invalid_geometries, result.contract,
                 task.trace_id, task.partition_key))
        return inserted == 1

    def mark_done_from_existing(self, task: TaskMessage, existing: ExistingResult) -> None:
        """A redelivery found the result: make sure the progress row says so too."""
        with self._pool.connection() as conn:
            conn.execute(
                f"""
                UPDATE {JOBS_TABLE}
                SET status = 'done', rows = %s, bytes = %s, updated_at = now(),
                    finished_at = COALESCE(finished_at, now())
                WHERE trace_id = %s AND partition_key = %s AND status NOT IN ('done', 'cancelled')
                """,
                (existing.rows, existing.bytes, task.trace_id, task.partition_key))

    def mark_failed(self, task: TaskMessage, kind: FailureKind, error: str) -> None:
        """The partition failed for good (it goes to the dead-letter topic too)."""
        status = TaskStatus.FAILED
        with self._pool.connection() as conn:
            conn.execute(
                f"""
                INSERT INTO {JOBS_TABLE} (job_id, trace_id, partition_key, kafka_partition,
                    contract, status, attempt, error_log, failure_kind, finished_at, updated_at)
                VALUES (%(job)s, %(trace)s, %(part)s, %(kp)s, %(contract)s, %(status)s,
                    %(attempt)s, %(error)s, %(kind)s, now(), now())
                ON CONFLICT (trace_id, partition_key) DO UPDATE
                SET status = EXCLUDED.status, error_log = EXCLUDED.error_log,
                    failure_kind = EXCLUDED.failure_kind, finished_at = now(),
                    updated_at = now()
                WHERE {JOBS_TABLE}.status NOT IN ('done', 'cancelled')
                """,
                {"job": task.job.uid, "trace": task.trace_id, "part": task.partition_key,
                 "kp": task.kafka_partition, "contract": task.output.contract.value,
                 "status": status.value, "attempt": task.attempt, "error": error[:8000],
                 "kind": kind.value})
