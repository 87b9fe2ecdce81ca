"""Pydantic models of both CRDs: the single source of the CRD YAML and of the operator's types.

Python attributes are snake_case; the Kubernetes JSON is camelCase (``by_alias``).
Parse an object's spec with ``Model.model_validate(body["spec"])`` and render
one with ``model.model_dump(by_alias=True, exclude_none=True, mode="json")``.
"""

from __future__ import annotations

from .common import (
    BBox,
    Compression,
    Condition,
    ConditionStatus,
    ContractVersion,
    LocalObjectReference,
    Severity,
)
from .job import (
    JobConditionType,
    JobPhase,
    JoinPredicate,
    JoinSource,
    OutputSpec,
    PartitionProgress,
    PartitionState,
    Predicate,
    ResultObject,
    SlaState,
    SpatialJoinJobSpec,
    SpatialJoinJobStatus,
)
from .pool import (
    ESCALATION_HISTORY_LIMIT,
    Escalation,
    EscalationAction,
    EscalationTrigger,
    LagStatus,
    LatencyStatus,
    PartitionLag,
    PartitionMapEntry,
    PoolConditionType,
    WorkerPoolSpec,
    WorkerPoolStatus,
)

__all__ = [
    "ESCALATION_HISTORY_LIMIT",
    "BBox",
    "Compression",
    "Condition",
    "ConditionStatus",
    "ContractVersion",
    "Escalation",
    "EscalationAction",
    "EscalationTrigger",
    "JobConditionType",
    "JobPhase",
    "JoinPredicate",
    "JoinSource",
    "LagStatus",
    "LatencyStatus",
    "LocalObjectReference",
    "OutputSpec",
    "PartitionLag",
    "PartitionMapEntry",
    "PartitionProgress",
    "PartitionState",
    "PoolConditionType",
    "Predicate",
    "ResultObject",
    "Severity",
    "SlaState",
    "SpatialJoinJobSpec",
    "SpatialJoinJobStatus",
    "WorkerPoolSpec",
    "WorkerPoolStatus",
]
