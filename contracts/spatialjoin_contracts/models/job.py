"""SpatialJoinJob: one partitioned spatial join, run once per (traceId, partition)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Final

from pydantic import Field

from .common import (
    BBox,
    CamelModel,
    Compression,
    Condition,
    ContractVersion,
    LocalObjectReference,
    PartitionName,
    Severity,
    SqlIdentifier,
    SqlTable,
)

TRACE_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
S3_URI_PATTERN: Final = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?$"
SHA256_PATTERN: Final = r"^[0-9a-f]{64}$"


class Predicate(StrEnum):
    """The spatial predicate joining a polygon to a point."""

    INTERSECTS = "intersects"
    DWITHIN = "dwithin"


class PolygonSource(CamelModel):
    """The polygon side of the join (domain A), partitioned by a column."""

    table: SqlTable | None = None
    """Table name, optionally schema-qualified (schema.table); set this or geoparquet."""
    geoparquet: str | None = Field(default=None, pattern=S3_URI_PATTERN, max_length=1024)
    """s3:// GeoParquet file or prefix read instead of table (engine: vectorized only)."""
    id_column: SqlIdentifier = "id"
    """Column holding the polygon id (bigint); becomes domain_id in the result."""
    geometry_column: SqlIdentifier = "geom"
    """Geometry column in EPSG:4326, GiST-indexed."""
    partition_column: SqlIdentifier = "spatial_partition"
    """Column naming the spatial partition (a WorkerPool partitionMap name) of each polygon."""


class PointSource(CamelModel):
    """The point side of the join (domain B)."""

    table: SqlTable | None = None
    """Table name, optionally schema-qualified (schema.table); set this or geoparquet."""
    geoparquet: str | None = Field(default=None, pattern=S3_URI_PATTERN, max_length=1024)
    """s3:// GeoParquet file or prefix read instead of table (engine: vectorized only)."""
    id_column: SqlIdentifier = "id"
    """Column holding the feature id (bigint); becomes feature_id in the result."""
    geometry_column: SqlIdentifier = "geom"
    """Geometry column in EPSG:4326, GiST-indexed."""


class JoinPredicate(CamelModel):
    """How polygons and points are matched."""

    type: Predicate = Predicate.INTERSECTS
    """intersects (ST_Intersects) or dwithin (ST_DWithin on geography, needs distanceMeters)."""
    distance_meters: float | None = Field(default=None, gt=0, le=1_000_000)
    """Distance in meters for dwithin; must be absent for intersects."""


class JoinSource(CamelModel):
    """Where the join reads from."""

    polygons: PolygonSource
    """The polygon table (or GeoParquet) and its id, geometry and partition columns."""
    points: PointSource
    """The point table (or GeoParquet) and its id and geometry columns."""
    predicate: JoinPredicate = JoinPredicate()
    """The spatial predicate; defaults to intersects."""

    def reads_geoparquet(self) -> bool:
        """True when either side names a GeoParquet source instead of a table."""
        return self.polygons.geoparquet is not None or self.points.geoparquet is not None


class OutputSpec(CamelModel):
    """Where and how the result is materialized."""

    uri_prefix: str = Field(pattern=S3_URI_PATTERN, max_length=1024)
    """s3://bucket/prefix; each partition lands at PREFIX/TRACE_ID/PARTITION.parquet."""
    contract: ContractVersion = ContractVersion.V2_1
    """Requested result schema contract; the pool may roll back to v2.0 on a P1 incident."""
    compression: Compression = Compression.ZSTD
    """Parquet compression codec."""


class SlaSpec(CamelModel):
    """Service level of the job."""

    deadline_seconds: int = Field(default=90, ge=1, le=86400)
    """Seconds from the job's start within which every partition must be materialized."""


class RetrySpec(CamelModel):
    """Retries of a failed partition, with exponential backoff (factor 2, capped)."""

    max_retries: int = Field(default=3, ge=0, le=20)
    """Retries after the first attempt before the partition, and the job, fail."""
    initial_delay_seconds: int = Field(default=2, ge=0, le=3600)
    """Delay before the first retry; doubles on each further retry."""
    max_delay_seconds: int = Field(default=30, ge=0, le=3600)
    """Cap of the backoff delay; not less than initialDelaySeconds."""


class SpatialJoinJobSpec(CamelModel):
    """Desired state of a SpatialJoinJob: what to join, on which pool, where the result goes."""

    trace_id: str | None = Field(default=None, pattern=TRACE_ID_PATTERN, max_length=128)
    """Idempotency key of the run. Defaults to the object's uid; immutable once set."""
    worker_pool_ref: LocalObjectReference
    """The WorkerPool in this namespace that runs the join."""
    source: JoinSource
    """Input tables, columns and predicate."""
    partitions: list[PartitionName] | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    """Partition names from the pool's partitionMap to run; absent means all of them."""
    bbox: BBox | None = None
    """Optional extra bounding box intersected with every partition's bbox."""
    output: OutputSpec
    """Result location, contract and compression."""
    sla: SlaSpec = SlaSpec()
    """Service level (deadline)."""
    retry: RetrySpec = RetrySpec()
    """Retry policy of failed partitions."""
    suspend: bool = False
    """When true, no new partitions are queued; running ones finish."""
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0)
    """Delete the job this many seconds after it succeeded or failed; absent keeps it."""

    def effective_trace_id(self, uid: str) -> str:
        """traceId when set, otherwise the object's uid."""
        return self.trace_id or uid


class JobPhase(StrEnum):
    """Summary of a job's conditions."""

    PENDING = "Pending"
    QUEUED = "Queued"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"


class JobConditionType(StrEnum):
    """Condition types a SpatialJoinJob reports."""

    ACCEPTED = "Accepted"
    PROGRESSING = "Progressing"
    COMPLETE = "Complete"
    FAILED = "Failed"
    SUSPENDED = "Suspended"
    SLA_BREACHED = "SLABreached"


class PartitionState(StrEnum):
    """Progress of one partition, mirroring spatial_async_jobs.status."""

    PENDING = "Pending"
    QUEUED = "Queued"
    PROCESSING = "Processing"
    DONE = "Done"
    FAILED = "Failed"


class SlaState(StrEnum):
    """Where the job stands against sla.deadlineSeconds."""

    ON_TRACK = "OnTrack"
    AT_RISK = "AtRisk"
    MET = "Met"
    BREACHED = "Breached"


class PartitionProgress(CamelModel):
    """Progress and counts of one partition."""

    name: PartitionName
    """Partition name."""
    state: PartitionState
    """Pending, Queued, Processing, Done or Failed."""
    attempt: int = Field(default=0, ge=0)
    """Attempts made so far (1 is the first)."""
    worker: str | None = None
    """Worker that processed (or is processing) the partition."""
    rows: int | None = Field(default=None, ge=0)
    """Result rows written."""
    bytes: int | None = Field(default=None, ge=0)
    """Result bytes written."""
    started_at: datetime | None = None
    """When the current attempt started."""
    finished_at: datetime | None = None
    """When the partition finished."""
    message: str | None = Field(default=None, max_length=4096)
    """Last error, when the partition failed or is being retried."""


class ResultObject(CamelModel):
    """One materialized result file."""

    partition: PartitionName
    """Partition the file holds."""
    uri: str = Field(pattern=S3_URI_PATTERN, max_length=2048)
    """s3:// URI of the Parquet file."""
    rows: int = Field(ge=0)
    """Rows in the file."""
    bytes: int | None = Field(default=None, ge=0)
    """Size of the file."""
    sha256: str = Field(pattern=SHA256_PATTERN)
    """Hex SHA-256 of the file's bytes."""


class SpatialJoinJobStatus(CamelModel):
    """Observed state of a SpatialJoinJob, written only by the operator."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The metadata.generation this status reflects."""
    phase: JobPhase | None = None
    """Summary derived from the conditions."""
    trace_id: str | None = None
    """Effective idempotency key: spec.traceId or the object's uid."""
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    """Kubernetes-style conditions, one per type."""
    partitions: list[PartitionProgress] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """Per-partition progress and counts."""
    partitions_total: int | None = Field(default=None, ge=0)
    """Number of partitions the job runs."""
    partitions_done: int | None = Field(default=None, ge=0)
    """Number of partitions materialized."""
    partitions_failed: int | None = Field(default=None, ge=0)
    """Number of partitions that failed after all retries."""
    progress: str | None = Field(default=None, pattern=r"^[0-9]+/[0-9]+$")
    """partitionsDone/partitionsTotal, for kubectl get."""
    start_time: datetime | None = None
    """When the first partition was queued."""
    completion_time: datetime | None = None
    """When the job succeeded or failed."""
    deadline_time: datetime | None = None
    """startTime + sla.deadlineSeconds."""
    sla_state: SlaState | None = None
    """OnTrack, AtRisk, Met or Breached."""
    rows: int | None = Field(default=None, ge=0)
    """Result rows over all partitions."""
    bytes: int | None = Field(default=None, ge=0)
    """Result bytes over all partitions."""
    results: list[ResultObject] = Field(
        default_factory=list,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["partition"],
        },
    )
    """Materialized result files, one per partition."""
    active_contract: ContractVersion | None = None
    """Contract the results are written with (v2.0 after a pool rollback)."""
    severity: Severity | None = None
    """Most severe open incident affecting the job; absent when none."""
