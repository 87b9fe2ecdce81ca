"""Database tables shared by the operator and the workers, and their idempotent migration.

spatial_async_jobs: one row per (trace_id, partition_key), written by the
operator when it queues a partition (status 'queued') and by the worker as it
processes it ('processing' -> 'done' | 'failed'; 'dead' once dead-lettered;
'cancelled' by the operator's finalizer when the job is deleted, which the
worker honours by skipping the task).
Its primary key (trace_id, partition_key) is the trace_id index (leading
column) and makes queueing idempotent with ON CONFLICT DO NOTHING.

spatial_join_results: one row per materialized (trace_id, partition_key);
the worker inserts it with ON CONFLICT (trace_id, partition_key) DO NOTHING,
which is what makes a redelivered task a no-op.

Every statement is idempotent (IF NOT EXISTS), migrations are recorded in
spatialjoin_schema_migrations, and a transaction-scoped advisory lock keeps
two migrators (operator start-up, ``spatialjoin db migrate``) from racing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Protocol

JOBS_TABLE: Final = "spatial_async_jobs"
RESULTS_TABLE: Final = "spatial_join_results"
MIGRATIONS_TABLE: Final = "spatialjoin_schema_migrations"
# pg_advisory_xact_lock key: the bytes of "sjmigr" as an integer, fixed forever.
MIGRATION_LOCK_KEY: Final = 0x736A6D696772


class TaskStatus(StrEnum):
    """spatial_async_jobs.status."""

    QUEUED = "queued"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"


class FailureKind(StrEnum):
    """spatial_async_jobs.failure_kind: why a partition failed, for severity decisions.

    Free text in the table (no CHECK), so a newer worker can add a kind without a migration.
    """

    TRANSIENT_EXHAUSTED = "transient-exhausted"
    MATERIALIZATION = "materialization"
    SCHEMA_DRIFT = "schema-drift"
    HEAP_CAP = "heap-cap"
    QUERY = "query"
    POISON = "poison"


@dataclass(frozen=True)
class Migration:
    """One schema change: an id that never changes and idempotent SQL statements."""

    id: str
    statements: tuple[str, ...]


_STATUS_VALUES = ", ".join(f"'{s.value}'" for s in TaskStatus)

MIGRATIONS: Final = (
    Migration(
        id="0001_jobs_and_results",
        statements=(
            f"""
            CREATE TABLE IF NOT EXISTS {JOBS_TABLE} (
                job_id          text        NOT NULL,
                trace_id        text        NOT NULL,
                partition_key   text        NOT NULL,
                kafka_partition integer,
                contract        text,
                status          text        NOT NULL DEFAULT 'queued'
                                CHECK (status IN ({_STATUS_VALUES})),
                attempt         integer     NOT NULL DEFAULT 0 CHECK (attempt >= 0),
                worker          text,
                queued_at       timestamptz NOT NULL DEFAULT now(),
                started_at      timestamptz,
                finished_at     timestamptz,
                updated_at      timestamptz NOT NULL DEFAULT now(),
                rows            bigint      CHECK (rows >= 0),
                bytes           bigint      CHECK (bytes >= 0),
                duration_ms     bigint      CHECK (duration_ms >= 0),
                invalid_geometries bigint   CHECK (invalid_geometries >= 0),
                failure_kind    text,
                error_log       text,
                CONSTRAINT {JOBS_TABLE}_pkey PRIMARY KEY (trace_id, partition_key)
            )
            """,
            f"COMMENT ON TABLE {JOBS_TABLE} IS "
            "'One row per (trace_id, partition_key): queued by the operator, run by a worker.'",
            f"COMMENT ON COLUMN {JOBS_TABLE}.job_id IS "
            "'metadata.uid of the SpatialJoinJob that queued the partition.'",
            f"CREATE INDEX IF NOT EXISTS {JOBS_TABLE}_job_id_idx ON {JOBS_TABLE} (job_id)",
            f"CREATE INDEX IF NOT EXISTS {JOBS_TABLE}_active_idx"
            f" ON {JOBS_TABLE} (status, updated_at) WHERE status IN ('queued', 'processing')",
            f"""
            CREATE TABLE IF NOT EXISTS {RESULTS_TABLE} (
                trace_id        text        NOT NULL,
                partition_key   text        NOT NULL,
                result_uri      text,
                result_blob     bytea,
                checksum_sha256 text        NOT NULL CHECK (checksum_sha256 ~ '^[0-9a-f]{{64}}$'),
                contract        text        NOT NULL,
                rows            bigint      NOT NULL CHECK (rows >= 0),
                bytes           bigint      NOT NULL CHECK (bytes >= 0),
                materialized_at timestamptz NOT NULL DEFAULT now(),
                CONSTRAINT {RESULTS_TABLE}_pkey PRIMARY KEY (trace_id, partition_key),
                CONSTRAINT {RESULTS_TABLE}_location_check
                    CHECK (result_uri IS NOT NULL OR result_blob IS NOT NULL)
            )
            """,
            f"COMMENT ON TABLE {RESULTS_TABLE} IS "
            "'Exactly one materialized result per (trace_id, partition_key).'",
        ),
    ),
    Migration(
        # The pool's sliding window (latency percentiles, failures) reads recently
        # finished rows; without this it scanned the whole table every 10 s.
        id="0002_finished_at_index",
        statements=(
            f"CREATE INDEX IF NOT EXISTS {JOBS_TABLE}_finished_at_idx"
            f" ON {JOBS_TABLE} (finished_at) WHERE finished_at IS NOT NULL",
        ),
    ),
)

_CREATE_MIGRATIONS_TABLE = f"""
CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
    id         text        PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class Cursor(Protocol):
    """The part of a DB-API / psycopg cursor the migration uses."""

    def execute(self, query: str, params: tuple[object, ...] = ..., /) -> object: ...

    def fetchall(self) -> list[tuple[object, ...]]: ...


def migration_statements() -> list[str]:
    """Every DDL statement, in order, for review or for ``psql``."""
    return [stmt for migration in MIGRATIONS for stmt in migration.statements]


def migrate(cursor: Cursor) -> list[str]:
    """Apply the migrations not yet recorded; return the ids applied now.

    Call inside a transaction (psycopg's ``with conn.transaction()`` or a
    connection without autocommit); the caller commits.  Safe to run any
    number of times and concurrently.
    """
    cursor.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
    cursor.execute(_CREATE_MIGRATIONS_TABLE)
    cursor.execute(f"SELECT id FROM {MIGRATIONS_TABLE}")
    done = {str(row[0]) for row in cursor.fetchall()}
    applied = []
    for migration in MIGRATIONS:
        if migration.id in done:
            continue
        for statement in migration.statements:
            cursor.execute(statement)
        cursor.execute(
            f"INSERT INTO {MIGRATIONS_TABLE} (id) VALUES (%s) ON CONFLICT DO NOTHING",
            (migration.id,),
        )
        applied.append(migration.id)
    return applied
