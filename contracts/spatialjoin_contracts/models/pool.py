"""WorkerPool: the workers, their broker, database and storage, and the escalation policy."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Final

from pydantic import Field

from .common import (
    DNS_SUBDOMAIN_PATTERN,
    BBox,
    CamelModel,
    Condition,
    ContractVersion,
    LocalObjectReference,
    PartitionName,
    Severity,
)

KAFKA_TOPIC_PATTERN: Final = r"^[a-zA-Z0-9._-]{1,249}$"
BOOTSTRAP_PATTERN: Final = r"^[^,\s]+:[0-9]{1,5}(,[^,\s]+:[0-9]{1,5})*$"
HTTP_URL_PATTERN: Final = r"^https?://[^\s/]+(/[^\s]*)?$"
ESCALATION_HISTORY_LIMIT: Final = 20


class Engine(StrEnum):
    """Where the join runs."""

    POSTGIS = "postgis"
    """In PostGIS: the seed's query, streamed from a server-side cursor (the default)."""
    VECTORIZED = "vectorized"
    """In the worker: inputs streamed out of PostGIS, joined with shapely/numpy."""


class Acks(StrEnum):
    """Producer acknowledgements (Kafka acks)."""

    ALL = "all"
    LEADER = "1"
    NONE = "0"


class PullPolicy(StrEnum):
    """Kubernetes image pull policy."""

    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


class ReplicasSpec(CamelModel):
    """Bounds of the worker Deployment's replicas; the scale subresource sets min."""

    min: int = Field(default=1, ge=0, le=1024)
    """Fewest worker pods; kubectl scale sets this floor."""
    max: int = Field(default=12, ge=1, le=1024)
    """Most worker pods; not less than min. More than broker.partitions would idle."""


class BrokerSpec(CamelModel):
    """The Kafka topic carrying tasks, one partition per spatial domain."""

    bootstrap_servers: str = Field(pattern=BOOTSTRAP_PATTERN, max_length=4096)
    """Comma-separated host:port list."""
    topic: str = Field(default="tasks", pattern=KAFKA_TOPIC_PATTERN)
    """Task topic."""
    partitions: int = Field(default=12, ge=1, le=1024)
    """Partitions of the task topic; partitionMap kafkaPartition values index into it."""
    retention_ms: int = Field(default=3_600_000, ge=60_000)
    """Topic retention in milliseconds."""
    acks: Acks = Acks.ALL
    """Producer acks: all, 1 or 0."""
    linger_ms: int = Field(default=5, ge=0, le=60_000)
    """Producer linger in milliseconds."""
    batch_size_bytes: int = Field(default=16384, ge=1, le=2_147_483_647)
    """Producer batch size in bytes."""
    idempotent_producer: bool = True
    """Enable the idempotent producer."""
    dead_letter_topic: str = Field(default="tasks.dlq", pattern=KAFKA_TOPIC_PATTERN)
    """Topic receiving poison tasks with the error; differs from topic."""
    consumer_group: str | None = Field(default=None, min_length=1, max_length=249)
    """Consumer group of the workers; absent means spatialjoin.NAMESPACE.POOL."""


class SecretKeySelector(CamelModel):
    """A key of a Secret in the pool's namespace."""

    name: str = Field(pattern=DNS_SUBDOMAIN_PATTERN, min_length=1, max_length=253)
    """Secret name."""
    key: str = Field(default="url", pattern=r"^[-._a-zA-Z0-9]+$", max_length=253)
    """Key within the Secret."""


class DatabaseSpec(CamelModel):
    """The PostGIS database; credentials only by Secret reference."""

    url_secret_ref: SecretKeySelector
    """Secret key holding a libpq connection URL (postgresql://user:pass@host:port/db)."""


class StorageSpec(CamelModel):
    """S3-compatible storage for the results; credentials only by Secret reference."""

    secret_ref: LocalObjectReference
    """Secret with keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."""
    endpoint: str | None = Field(default=None, pattern=HTTP_URL_PATTERN, max_length=1024)
    """S3 endpoint URL for S3-compatible stores; absent means AWS."""
    region: str = Field(default="us-east-1", min_length=1, max_length=64)
    """Signing region."""
    path_style: bool = True
    """Use path-style addressing (bucket in the path), as most S3-compatible stores need."""


class PartitionMapEntry(CamelModel):
    """One spatial domain: its name, extent and Kafka partition."""

    name: PartitionName
    """Partition name, as stored in the polygon table's partition column."""
    bbox: BBox
    """Extent of the partition in EPSG:4326."""
    kafka_partition: int = Field(ge=0, le=1023)
    """Index of the task topic partition carrying this domain's tasks; unique in the map."""


class P3Escalation(CamelModel):
    """P3: worker latency above the threshold scales concurrency up (within the heap cap)."""

    latency_seconds: float = Field(default=45, gt=0)
    """p95 task latency above which P3 opens."""
    concurrency: int = Field(default=12, ge=1, le=256)
    """Concurrency per worker while P3 is open; not less than spec.concurrency."""


class P2Escalation(CamelModel):
    """P2: consumer lag above the threshold rebalances partitions across workers."""

    consumer_lag: int = Field(default=10_000, ge=1)
    """Total consumer lag (messages) above which P2 opens."""


class P1Escalation(CamelModel):
    """P1: materialization failure or schema drift rolls the contract back and validates."""

    on_materialization_failure: bool = True
    """Open P1 when a result fails to materialize after retries."""
    on_schema_drift: bool = True
    """Open P1 when a written file deviates from its contract."""
    rollback_contract: ContractVersion = ContractVersion.V2_0
    """Contract the pool falls back to."""


class EscalationSpec(CamelModel):
    """Severity thresholds and the actions they trigger."""

    p3: P3Escalation = P3Escalation()
    """Latency threshold and the concurrency it scales to."""
    p2: P2Escalation = P2Escalation()
    """Lag threshold that triggers a rebalance."""
    p1: P1Escalation = P1Escalation()
    """Triggers of a contract rollback."""
    cooldown_seconds: int = Field(default=300, ge=0, le=86400)
    """Minimum seconds between two escalation actions, and before stepping back down."""


class WorkerPoolSpec(CamelModel):
    """Desired state of a WorkerPool: workers consuming one task topic partition per domain."""

    image: str = Field(min_length=1, max_length=1024)
    """Worker container image."""
    image_pull_policy: PullPolicy = PullPolicy.IF_NOT_PRESENT
    """Image pull policy of the worker container."""
    replicas: ReplicasSpec = ReplicasSpec()
    """Worker pod bounds."""
    concurrency: int = Field(default=8, ge=1, le=256)
    """Tasks a worker runs at once."""
    max_heap_mb: int = Field(default=4096, ge=256, le=262_144)
    """Memory cap of a worker in MiB; concurrency never grows past what it allows."""
    engine: Engine = Engine.POSTGIS
    """Join engine: postgis (the default, the join runs in the database) or vectorized."""
    broker: BrokerSpec
    """Kafka task topic, producer settings and dead-letter topic."""
    database: DatabaseSpec
    """Database connection, by Secret reference."""
    storage: StorageSpec
    """Result storage, by Secret reference."""
    partition_map: list[PartitionMapEntry] = Field(
        min_length=1,
        max_length=1024,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """The spatial domains: unique names and unique Kafka partitions."""
    escalation: EscalationSpec = EscalationSpec()
    """Severity thresholds, actions and cooldown."""
    contract: ContractVersion = ContractVersion.V2_1
    """Result schema contract the pool writes unless rolled back."""

    def partition(self, name: str) -> PartitionMapEntry | None:
        """The partitionMap entry called ``name``."""
        return next((entry for entry in self.partition_map if entry.name == name), None)

    def partition_names(self) -> list[str]:
        """Names in partitionMap order."""
        return [entry.name for entry in self.partition_map]


class PoolConditionType(StrEnum):
    """Condition types a WorkerPool reports."""

    AVAILABLE = "Available"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    ESCALATED = "Escalated"
    METRICS_UNAVAILABLE = "MetricsUnavailable"
    HEAP_INSUFFICIENT = "HeapInsufficient"
    SCALING_PAUSED = "ScalingPaused"
    LATENCY_ABOVE_THRESHOLD = "LatencyAboveThreshold"
    LAG_ABOVE_THRESHOLD = "LagAboveThreshold"
    MATERIALIZATION_FAILING = "MaterializationFailing"
    REBALANCED = "Rebalanced"
    GEOMETRY_VALIDATION = "GeometryValidation"


class EscalationTrigger(StrEnum):
    """What opened an incident."""

    WORKER_LATENCY = "WorkerLatency"
    CONSUMER_LAG = "ConsumerLag"
    MATERIALIZATION_FAILURE = "MaterializationFailure"
    SCHEMA_DRIFT = "SchemaDrift"


class EscalationAction(StrEnum):
    """What the operator did about it."""

    SCALE_CONCURRENCY = "ScaleConcurrency"
    REBALANCE = "Rebalance"
    ROLLBACK_CONTRACT = "RollbackContract"
    STEP_DOWN = "StepDown"


class Escalation(CamelModel):
    """One escalation in the pool's history."""

    incident_id: str = Field(min_length=1, max_length=128)
    """Incident id, also in Events and the audit log."""
    severity: Severity
    """P1, P2 or P3."""
    trigger: EscalationTrigger
    """WorkerLatency, ConsumerLag, MaterializationFailure or SchemaDrift."""
    action: EscalationAction
    """ScaleConcurrency, Rebalance, RollbackContract or StepDown."""
    time: datetime
    """When the action was taken."""
    message: str | None = Field(default=None, max_length=4096)
    """What was observed and done."""


class PartitionLag(CamelModel):
    """Consumer lag of one task topic partition."""

    name: PartitionName
    """Partition name."""
    kafka_partition: int = Field(ge=0)
    """Kafka partition index."""
    lag: int = Field(ge=0)
    """High watermark minus committed offset."""


class LagStatus(CamelModel):
    """Consumer lag of the pool's consumer group."""

    total: int = Field(ge=0)
    """Sum over partitions."""
    partitions: list[PartitionLag] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """Lag per partition."""
    observed_time: datetime | None = None
    """When the lag was read."""


class LatencyStatus(CamelModel):
    """Task latency of the pool's workers."""

    p50_seconds: float = Field(ge=0)
    """Median task latency."""
    p95_seconds: float = Field(ge=0)
    """95th percentile task latency."""
    oldest_processing_seconds: float | None = Field(default=None, ge=0)
    """Age of the oldest task still processing."""
    processing: int | None = Field(default=None, ge=0)
    """Tasks processing now."""
    finished: int | None = Field(default=None, ge=0)
    """Tasks finished in the window the percentiles cover."""
    observed_time: datetime | None = None
    """When the latency was read."""


class HealthStatus(CamelModel):
    """Materialization health of the pool's workers in the sliding window."""

    window_seconds: float = Field(ge=0)
    """Length of the window."""
    failures: int = Field(ge=0)
    """Tasks that failed for good."""
    dead_lettered: int = Field(ge=0)
    """Tasks sent to the dead-letter topic."""
    materialization_failures: int = Field(ge=0)
    """Results that failed to materialize."""
    schema_deviations: int = Field(ge=0)
    """Results that deviated from their contract."""
    observed_time: datetime | None = None
    """When health was read."""


class WorkerAssignment(CamelModel):
    """One worker's share of the lag-weighted rebalance plan."""

    worker: int = Field(ge=0)
    """Worker index in the plan."""
    partitions: list[PartitionName] = Field(default_factory=list, max_length=1024)
    """Partitions this worker should take."""
    lag: int = Field(ge=0)
    """Their summed lag."""


class GeometryValidationState(StrEnum):
    """Progress of the P1 geometry validation."""

    RUNNING = "Running"
    DONE = "Done"
    FAILED = "Failed"


class PartitionInvalidCount(CamelModel):
    """Invalid source geometries in one partition."""

    name: PartitionName
    """Partition name."""
    invalid: int = Field(ge=0)
    """Invalid polygons found."""


class GeometryValidationStatus(CamelModel):
    """The source geometry validation P1 starts."""

    state: GeometryValidationState
    """Running, Done or Failed."""
    started_time: datetime
    """When it started."""
    observed_time: datetime | None = None
    """When it last reported."""
    total: int = Field(ge=0)
    """Invalid polygons over all partitions."""
    partitions: list[PartitionInvalidCount] = Field(
        default_factory=list, max_length=1024,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """Invalid polygons per partition."""


class WorkerPoolStatus(CamelModel):
    """Observed state of a WorkerPool, including the effective values the operator chose."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The metadata.generation this status reflects."""
    replicas: int | None = Field(default=None, ge=0)
    """Worker pods that exist (scale subresource)."""
    ready_replicas: int | None = Field(default=None, ge=0)
    """Worker pods that are ready."""
    desired_replicas: int | None = Field(default=None, ge=0)
    """Replicas the operator asks of the Deployment (within spec.replicas min..max)."""
    selector: str | None = None
    """Label selector of the worker pods (scale subresource)."""
    effective_concurrency: int | None = Field(default=None, ge=1)
    """Concurrency in force: spec.concurrency, or escalation.p3.concurrency under P3."""
    active_contract: ContractVersion | None = None
    """Contract in force: spec.contract, or escalation.p1.rollbackContract after P1."""
    lag: LagStatus | None = None
    """Consumer lag, total and per partition."""
    latency: LatencyStatus | None = None
    """Task latency percentiles."""
    health: HealthStatus | None = None
    """Materialization health in the window."""
    assignment_plan: list[WorkerAssignment] = Field(default_factory=list, max_length=1024)
    """Lag-weighted plan: which partitions should not share a worker (advice under P2)."""
    geometry_validation: GeometryValidationStatus | None = None
    """Source geometry validation started by P1."""
    severity: Severity | None = None
    """Most severe open incident; absent when none."""
    escalations: list[Escalation] = Field(default_factory=list, max_length=ESCALATION_HISTORY_LIMIT)
    """Most recent escalations, oldest first, at most 20."""
    last_escalation_time: datetime | None = None
    """Time of the last escalation action, the start of the cooldown."""
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    """Kubernetes-style conditions, one per type."""
