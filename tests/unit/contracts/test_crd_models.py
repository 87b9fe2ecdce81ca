"""The CRD models: camelCase JSON, the DESIGN defaults, parsing of status objects."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from spatialjoin_contracts import samples
from spatialjoin_contracts.models import (
    ContractVersion,
    JobPhase,
    Severity,
    SpatialJoinJobSpec,
    SpatialJoinJobStatus,
    WorkerPoolSpec,
    WorkerPoolStatus,
)

pytestmark = pytest.mark.unit


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = obj[int(part)] if isinstance(obj, list) else obj[part]
    return obj


# The seed's numbers from DESIGN.md, as the models default them.
POOL_DEFAULTS = [
    ("concurrency", 8),
    ("maxHeapMb", 4096),
    ("engine", "postgis"),
    ("contract", "v2.1"),
    ("replicas.min", 1),
    ("replicas.max", 12),
    ("broker.partitions", 12),
    ("broker.retentionMs", 3_600_000),
    ("broker.acks", "all"),
    ("broker.lingerMs", 5),
    ("broker.batchSizeBytes", 16384),
    ("broker.idempotentProducer", True),
    ("broker.topic", "tasks"),
    ("broker.deadLetterTopic", "tasks.dlq"),
    ("escalation.p3.latencySeconds", 45),
    ("escalation.p3.concurrency", 12),
    ("escalation.p2.consumerLag", 10_000),
    ("escalation.p1.onMaterializationFailure", True),
    ("escalation.p1.onSchemaDrift", True),
    ("escalation.p1.rollbackContract", "v2.0"),
    ("escalation.cooldownSeconds", 300),
    ("database.urlSecretRef.key", "url"),
]

JOB_DEFAULTS = [
    ("sla.deadlineSeconds", 90),
    ("retry.maxRetries", 3),
    ("retry.initialDelaySeconds", 2),
    ("retry.maxDelaySeconds", 30),
    ("output.contract", "v2.1"),
    ("output.compression", "zstd"),
    ("source.predicate.type", "intersects"),
    ("source.polygons.idColumn", "id"),
    ("source.polygons.geometryColumn", "geom"),
    ("source.polygons.partitionColumn", "spatial_partition"),
    ("source.points.idColumn", "id"),
    ("source.points.geometryColumn", "geom"),
    ("suspend", False),
]


@pytest.mark.parametrize(("path", "expected"), POOL_DEFAULTS)
def test_pool_defaults_follow_the_design(path: str, expected: object) -> None:
    spec = WorkerPoolSpec.model_validate(samples.pool_spec())
    assert _get(spec.to_k8s(), path) == expected


@pytest.mark.parametrize(("path", "expected"), JOB_DEFAULTS)
def test_job_defaults_follow_the_design(path: str, expected: object) -> None:
    spec = SpatialJoinJobSpec.model_validate(samples.job_spec())
    assert _get(spec.to_k8s(), path) == expected


def test_json_is_camel_case_and_python_is_snake_case() -> None:
    spec = WorkerPoolSpec.model_validate(samples.pool_spec())
    assert spec.max_heap_mb == 4096
    assert spec.partition_map[3].kafka_partition == 3
    dumped = spec.to_k8s()
    assert "maxHeapMb" in dumped and "max_heap_mb" not in dumped
    assert WorkerPoolSpec.model_validate(dumped) == spec


def test_absent_optionals_are_left_out_of_the_json() -> None:
    dumped = SpatialJoinJobSpec.model_validate(samples.job_spec()).to_k8s()
    assert "traceId" not in dumped
    assert "partitions" not in dumped
    assert "bbox" not in dumped
    assert "ttlSecondsAfterFinished" not in dumped


def test_trace_id_defaults_to_the_uid() -> None:
    spec = SpatialJoinJobSpec.model_validate(samples.job_spec())
    assert spec.effective_trace_id("uid-1") == "uid-1"
    explicit = SpatialJoinJobSpec.model_validate(samples.job_spec(traceId="run-7"))
    assert explicit.effective_trace_id("uid-1") == "run-7"


@pytest.mark.parametrize(
    ("overrides", "loc"),
    [
        ({"traceId": "has space"}, ("traceId",)),
        ({"partitions": []}, ("partitions",)),
        ({"partitions": ["P01"]}, ("partitions", 0)),
        ({"output": {"uriPrefix": "http://bucket/x"}}, ("output", "uriPrefix")),
        ({"output": {"uriPrefix": "s3://bkt/x", "contract": "v3"}}, ("output", "contract")),
        (
            {"source": {"polygons": {"table": "a; drop"}, "points": {"table": "b"}}},
            ("source", "polygons", "table"),
        ),
        ({"sla": {"deadlineSeconds": 0}}, ("sla", "deadlineSeconds")),
        ({"unknownField": 1}, ("unknownField",)),
    ],
)
def test_job_spec_rejects_bad_values(overrides: dict[str, Any], loc: tuple[Any, ...]) -> None:
    with pytest.raises(ValidationError) as info:
        SpatialJoinJobSpec.model_validate(samples.job_spec(**overrides))
    assert loc in [err["loc"] for err in info.value.errors()]


def test_job_status_round_trips() -> None:
    raw = {
        "observedGeneration": 2,
        "phase": "Running",
        "traceId": "t-1",
        "conditions": [
            {
                "type": "Progressing",
                "status": "True",
                "reason": "PartitionsRunning",
                "message": "3 of 12 done",
                "observedGeneration": 2,
                "lastTransitionTime": "2024-05-01T10:00:00Z",
            }
        ],
        "partitions": [{"name": "p00", "state": "Done", "attempt": 1, "rows": 10}],
        "partitionsTotal": 12,
        "partitionsDone": 3,
        "progress": "3/12",
        "results": [
            {"partition": "p00", "uri": "s3://bkt/t-1/p00.parquet", "rows": 10, "sha256": "a" * 64}
        ],
        "activeContract": "v2.1",
        "severity": "P3",
        "slaState": "OnTrack",
    }
    status = SpatialJoinJobStatus.model_validate(raw)
    assert status.phase is JobPhase.RUNNING
    assert status.severity is Severity.P3
    assert status.to_k8s()["conditions"][0]["lastTransitionTime"] == "2024-05-01T10:00:00Z"
    assert SpatialJoinJobStatus.model_validate(status.to_k8s()) == status


def test_pool_status_round_trips() -> None:
    raw = {
        "replicas": 2,
        "readyReplicas": 1,
        "selector": "app=w",
        "effectiveConcurrency": 12,
        "activeContract": "v2.0",
        "lag": {"total": 5, "partitions": [{"name": "p00", "kafkaPartition": 0, "lag": 5}]},
        "latency": {"p50Seconds": 1.5, "p95Seconds": 50.0},
        "severity": "P1",
        "escalations": [
            {
                "incidentId": "inc-1",
                "severity": "P1",
                "trigger": "SchemaDrift",
                "action": "RollbackContract",
                "time": "2024-05-01T10:00:00Z",
            }
        ],
    }
    status = WorkerPoolStatus.model_validate(raw)
    assert status.active_contract is ContractVersion.V2_0
    assert WorkerPoolStatus.model_validate(status.to_k8s()) == status


def test_escalation_history_is_bounded() -> None:
    entry = {
        "incidentId": "i",
        "severity": "P3",
        "trigger": "WorkerLatency",
        "action": "ScaleConcurrency",
        "time": "2024-05-01T10:00:00Z",
    }
    with pytest.raises(ValidationError):
        WorkerPoolStatus.model_validate({"escalations": [entry] * 21})


def test_models_are_immutable() -> None:
    spec = WorkerPoolSpec.model_validate(samples.pool_spec())
    with pytest.raises(ValidationError):
        setattr(spec, "concurrency", 3)  # noqa: B010 - the assignment is what is tested
