"""What a job's decisions read and produce: observed rows, facts, events, the assessment.

Plain data, shared by the pure policy (job_policy), the observer (job_observe)
and the handlers; nothing here imports kopf, kubernetes, Kafka or psycopg.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from spatialjoin_contracts.ddl import TaskStatus
from spatialjoin_contracts.models import ContractVersion, SpatialJoinJobSpec
from spatialjoin_contracts.models.job import JobPhase
from spatialjoin_contracts.validation import FieldError


@dataclass(frozen=True)
class PartitionRow:
    """One spatial_async_jobs row."""

    partition: str
    status: TaskStatus
    attempt: int
    job_id: str = ""
    worker: str | None = None
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime | None = None
    rows: int | None = None
    bytes: int | None = None
    failure_kind: str | None = None
    error: str | None = None

    @property
    def published(self) -> bool:
        return self.attempt >= 1 or self.status is not TaskStatus.QUEUED

    @property
    def started(self) -> bool:
        return self.status in (TaskStatus.PROCESSING, TaskStatus.DONE, TaskStatus.FAILED,
                               TaskStatus.DEAD)


@dataclass(frozen=True)
class ResultRow:
    """One spatial_join_results row."""

    partition: str
    uri: str | None
    sha256: str
    rows: int
    bytes: int
    contract: str


@dataclass(frozen=True)
class Observation:
    """The job's rows, keyed by partition name."""

    rows: Mapping[str, PartitionRow] = field(default_factory=dict)
    results: Mapping[str, ResultRow] = field(default_factory=dict)


class Blocker(StrEnum):
    """Why the operator cannot act on (or observe) a job right now; it waits, never fails."""

    WORKER_POOL_NOT_FOUND = "WorkerPoolNotFound"
    WORKER_POOL_INVALID = "WorkerPoolInvalid"
    SECRET_MISSING = "SecretMissing"
    BACKEND_UNAVAILABLE = "BackendUnavailable"
    POOL_PAUSED_FOR_RESTORE = "PoolPausedForRestore"


@dataclass(frozen=True)
class Blocked:
    reason: Blocker
    message: str


@dataclass(frozen=True)
class JobFacts:
    """Everything the status decision needs, gathered by the handler."""

    generation: int | None
    created: datetime
    spec: SpatialJoinJobSpec | None
    """The effective spec (see effective_spec); None when no valid spec was ever seen."""
    invalid: Sequence[FieldError] = ()
    """Errors of the current spec."""
    refused: Sequence[FieldError] = ()
    """Edits of immutable fields that were refused."""
    trace_id: str | None = None
    partitions: Sequence[str] = ()
    """Names of the partitions the job runs, in partitionMap order."""
    queued: bool = False
    """Rows were registered for the job's plan."""
    blocked: Blocked | None = None
    observation: Observation | None = None
    pool_contract: ContractVersion | None = None
    """The pool's status.activeContract."""


@dataclass(frozen=True)
class JobEvent:
    type: str
    """Normal or Warning."""
    reason: str
    message: str


@dataclass(frozen=True)
class Assessment:
    status: dict[str, Any]
    """The full new status, camelCase, validated against the CRD model."""
    events: list[JobEvent]
    phase: JobPhase
    sla_breached_now: bool
    finished_now: bool
    duration_s: float | None
    """startTime to completionTime, once finished."""
