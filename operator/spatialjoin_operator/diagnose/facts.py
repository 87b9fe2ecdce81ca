"""What a diagnosis observed, as plain frozen dataclasses (no I/O, no clients).

gather.py and kube.py fill these in; findings.py reads them; report.py renders
them. Keeping them free of psycopg and kubernetes types lets the rules be
tested table-driven with hand-made facts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class TableRole(StrEnum):
    """Why a table is in the report."""

    POLYGONS = "polygons"
    POINTS = "points"
    JOBS = "jobs"
    RESULTS = "results"


@dataclass(frozen=True)
class PartitionRecord:
    """One spatial_async_jobs row of the trace."""

    partition: str
    status: str
    job_id: str = ""
    attempt: int = 0
    worker: str | None = None
    kafka_partition: int | None = None
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime | None = None
    duration_ms: int | None = None
    rows: int | None = None
    bytes: int | None = None
    failure_kind: str | None = None
    error_log: str | None = None


@dataclass(frozen=True)
class ResultRecord:
    """One spatial_join_results row of the trace."""

    partition: str
    uri: str | None
    rows: int
    bytes: int
    sha256: str
    contract: str
    materialized_at: datetime | None = None


@dataclass(frozen=True)
class IndexFacts:
    """One index of a table, from pg_indexes / pg_index / pg_am."""

    name: str
    method: str
    columns: tuple[str, ...]
    bytes: int
    valid: bool = True
    definition: str = ""
    free_percent: float | None = None
    """pgstattuple's free_percent, when it was measured."""
    dead_tuple_percent: float | None = None


@dataclass(frozen=True)
class TableFacts:
    """Size, indexes and statistics of one table the job reads or writes."""

    role: TableRole
    table: str
    """The name as the job (or the DDL) spells it."""
    qualified: str | None = None
    """schema.name it resolved to with the connection's search_path; None when missing."""
    geometry_column: str | None = None
    table_bytes: int = 0
    """pg_table_size: heap, TOAST, free space and visibility maps, without indexes."""
    indexes_bytes: int = 0
    """pg_indexes_size."""
    total_bytes: int = 0
    """pg_total_relation_size."""
    relpages: int = 0
    reltuples: float = -1.0
    last_analyze: datetime | None = None
    last_autoanalyze: datetime | None = None
    n_live_tup: int | None = None
    n_dead_tup: int | None = None
    n_mod_since_analyze: int | None = None
    indexes: tuple[IndexFacts, ...] = ()
    heap_free_percent: float | None = None
    heap_dead_tuple_percent: float | None = None

    @property
    def exists(self) -> bool:
        return self.qualified is not None

    @property
    def index_ratio(self) -> float | None:
        """pg_indexes_size / pg_table_size."""
        return self.indexes_bytes / self.table_bytes if self.table_bytes > 0 else None

    @property
    def last_analyzed(self) -> datetime | None:
        times = [t for t in (self.last_analyze, self.last_autoanalyze) if t is not None]
        return max(times) if times else None


@dataclass(frozen=True)
class ScanNode:
    """A plan node that reads a relation (or an index of one)."""

    node_type: str
    relation: str | None
    index: str | None = None
    alias: str | None = None
    plan_rows: float | None = None
    actual_rows: float | None = None
    loops: int | None = None
    total_ms: float | None = None
    """Actual Total Time x loops: the time spent in the node over all loops."""
    filter: str | None = None
    rows_removed_by_filter: float | None = None


@dataclass(frozen=True)
class PlanFacts:
    """EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) of one partition's join."""

    partition: str
    reason: str
    """Why this partition was inspected (stuck, failed, slowest, asked for)."""
    analyzed: bool = False
    planning_ms: float | None = None
    execution_ms: float | None = None
    timed_out: bool = False
    statement_timeout_s: float | None = None
    error: str | None = None
    scans: tuple[ScanNode, ...] = ()
    shared_hit_blocks: int = 0
    shared_read_blocks: int = 0
    temp_blocks: int = 0
    plan: object = None
    """The raw JSON plan, for --json readers who want every node."""


@dataclass(frozen=True)
class JobRef:
    """The SpatialJoinJob the trace belongs to, as the apiserver has it."""

    namespace: str
    name: str
    uid: str
    phase: str | None = None
    sla_state: str | None = None
    deadline_seconds: int | None = None
    pool: str | None = None
    uri_prefix: str | None = None
    conditions: tuple[dict[str, object], ...] = ()


@dataclass(frozen=True)
class EventRecord:
    """A Kubernetes Event about the job."""

    type: str
    reason: str
    message: str
    count: int = 1
    last_time: datetime | None = None


@dataclass(frozen=True)
class Facts:
    """Everything one diagnosis observed about one trace."""

    trace_id: str
    now: datetime
    job: JobRef | None = None
    events: tuple[EventRecord, ...] = ()
    partitions: tuple[PartitionRecord, ...] = ()
    results: tuple[ResultRecord, ...] = ()
    plans: tuple[PlanFacts, ...] = ()
    tables: tuple[TableFacts, ...] = ()
    pgstattuple: bool = False
    """Whether the pgstattuple extension was installed and usable."""
    notes: tuple[str, ...] = field(default_factory=tuple)
    """What could not be gathered, and why."""
