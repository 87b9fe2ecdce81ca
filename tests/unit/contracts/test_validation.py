"""Rules the schema cannot express: every error names the field path."""

from __future__ import annotations

from typing import Any

import pytest

from spatialjoin_contracts import samples
from spatialjoin_contracts.models import SpatialJoinJobSpec, WorkerPoolSpec
from spatialjoin_contracts.partition_map import grid_partition_map, partition_map_document
from spatialjoin_contracts.validation import (
    FieldError,
    check_job_spec,
    check_pool_spec,
    field_path,
    validate_job_update,
)

pytestmark = pytest.mark.unit


def _map(**changes: dict[str, Any]) -> list[dict[str, Any]]:
    """The 12-tile map with some entries changed: ``changes={"2": {...}}``."""
    entries: list[dict[str, Any]] = partition_map_document(grid_partition_map())["partitionMap"]
    for index, change in changes.items():
        entries[int(index)] = {**entries[int(index)], **change}
    return entries


POOL_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "min above max",
        {"replicas": {"min": 5, "max": 3}},
        "spec.replicas.min",
        "spec.replicas.max (3)",
    ),
    (
        "duplicate name",
        {"partitionMap": _map(**{"4": {"name": "p01"}})},
        "spec.partitionMap[4].name",
        "duplicate partition name 'p01' (first at spec.partitionMap[1]",
    ),
    (
        "duplicate kafka index",
        {"partitionMap": _map(**{"7": {"kafkaPartition": 2}})},
        "spec.partitionMap[7].kafkaPartition",
        "duplicate Kafka partition 2",
    ),
    (
        "kafka index out of range",
        {"partitionMap": _map(**{"11": {"kafkaPartition": 12}})},
        "spec.partitionMap[11].kafkaPartition",
        "spec.broker.partitions = 12",
    ),
    (
        "bbox lon order",
        {
            "partitionMap": _map(
                **{"0": {"bbox": {"minLon": 10, "minLat": 0, "maxLon": 5, "maxLat": 1}}}
            )
        },
        "spec.partitionMap[0].bbox.minLon",
        "must be less than spec.partitionMap[0].bbox.maxLon",
    ),
    (
        "bbox lat order",
        {
            "partitionMap": _map(
                **{"3": {"bbox": {"minLon": 0, "minLat": 5, "maxLon": 1, "maxLat": 5}}}
            )
        },
        "spec.partitionMap[3].bbox.minLat",
        "must be less than spec.partitionMap[3].bbox.maxLat",
    ),
    (
        "bbox range (schema)",
        {
            "partitionMap": _map(
                **{"2": {"bbox": {"minLon": -190, "minLat": 0, "maxLon": 1, "maxLat": 5}}}
            )
        },
        "spec.partitionMap[2].bbox.minLon",
        "greater than or equal to -180",
    ),
    (
        "p3 concurrency below base",
        {"concurrency": 16},
        "spec.escalation.p3.concurrency",
        "spec.concurrency (16)",
    ),
    (
        "dlq equals topic",
        {"broker": {"bootstrapServers": "k:9092", "deadLetterTopic": "tasks"}},
        "spec.broker.deadLetterTopic",
        "must differ from spec.broker.topic",
    ),
    (
        "bad bootstrap (schema)",
        {"broker": {"bootstrapServers": "no-port"}},
        "spec.broker.bootstrapServers",
        "should match pattern",
    ),
    ("concurrency zero (schema)", {"concurrency": 0}, "spec.concurrency", "greater than or equal"),
    ("empty partition map (schema)", {"partitionMap": []}, "spec.partitionMap", "at least 1"),
    ("unknown field", {"replica": 3}, "spec.replica", "Extra inputs are not permitted"),
]


@pytest.mark.parametrize(
    ("overrides", "field", "text"),
    [case[1:] for case in POOL_CASES],
    ids=[case[0] for case in POOL_CASES],
)
def test_pool_rules(overrides: dict[str, Any], field: str, text: str) -> None:
    _, errors = check_pool_spec(samples.pool_spec(**overrides))
    assert field in [e.field for e in errors], errors
    error = next(e for e in errors if e.field == field)
    assert error.message.startswith(f"{field}: ")
    assert text in error.message


def test_a_valid_pool_has_no_errors() -> None:
    spec, errors = check_pool_spec(samples.pool_spec())
    assert errors == []
    assert isinstance(spec, WorkerPoolSpec)


def test_every_pool_error_is_reported_not_just_the_first() -> None:
    overrides = {
        "replicas": {"min": 9, "max": 2},
        "partitionMap": _map(**{"1": {"name": "p00", "kafkaPartition": 0}}),
    }
    _, errors = check_pool_spec(samples.pool_spec(**overrides))
    assert {e.field for e in errors} == {
        "spec.replicas.min",
        "spec.partitionMap[1].name",
        "spec.partitionMap[1].kafkaPartition",
    }


POOL = WorkerPoolSpec.model_validate(samples.pool_spec())

JOB_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "unknown partition",
        {"partitions": ["p01", "p99"]},
        "spec.partitions[1]",
        "'p99' is not in the partitionMap of WorkerPool 'pool-a'",
    ),
    (
        "duplicate partition",
        {"partitions": ["p01", "p02", "p01"]},
        "spec.partitions[2]",
        "duplicate partition 'p01' (first at spec.partitions[0])",
    ),
    (
        "bbox order",
        {"bbox": {"minLon": -90, "minLat": 30, "maxLon": -100, "maxLat": 40}},
        "spec.bbox.minLon",
        "must be less than spec.bbox.maxLon",
    ),
    (
        "bbox outside the selected partitions",
        {"partitions": ["p00"], "bbox": {"minLon": -70, "minLat": 45, "maxLon": -66, "maxLat": 48}},
        "spec.bbox",
        "intersects none of the selected partitions",
    ),
    (
        "dwithin without distance",
        {
            "source": {
                "polygons": {"table": "a"},
                "points": {"table": "b"},
                "predicate": {"type": "dwithin"},
            }
        },
        "spec.source.predicate.distanceMeters",
        "required when type is dwithin",
    ),
    (
        "intersects with distance",
        {
            "source": {
                "polygons": {"table": "a"},
                "points": {"table": "b"},
                "predicate": {"type": "intersects", "distanceMeters": 5},
            }
        },
        "spec.source.predicate.distanceMeters",
        "must be absent",
    ),
    (
        "backoff order",
        {"retry": {"initialDelaySeconds": 60, "maxDelaySeconds": 30}},
        "spec.retry.initialDelaySeconds",
        "spec.retry.maxDelaySeconds (30)",
    ),
    (
        "bad uri (schema)",
        {"output": {"uriPrefix": "file:///tmp"}},
        "spec.output.uriPrefix",
        "should match pattern",
    ),
    ("missing pool ref (schema)", {"workerPoolRef": None}, "spec.workerPoolRef", "valid"),
    (
        "points with neither table nor geoparquet",
        {"source": {"polygons": {"table": "a"}, "points": {"idColumn": "fid"}}},
        "spec.source.points",
        "set exactly one of table or geoparquet",
    ),
    (
        "polygons with both table and geoparquet",
        {"source": {"polygons": {"table": "a", "geoparquet": "s3://bucket/a.parquet"},
                    "points": {"table": "b"}}},
        "spec.source.polygons",
        "set exactly one of table or geoparquet (both are set)",
    ),
    (
        "geoparquet not on s3 (schema)",
        {"source": {"polygons": {"table": "a"}, "points": {"geoparquet": "/tmp/b.parquet"}}},
        "spec.source.points.geoparquet",
        "should match pattern",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "field", "text"),
    [case[1:] for case in JOB_CASES],
    ids=[case[0] for case in JOB_CASES],
)
def test_job_rules(overrides: dict[str, Any], field: str, text: str) -> None:
    _, errors = check_job_spec(samples.job_spec(**overrides), POOL)
    assert field in [e.field for e in errors], errors
    error = next(e for e in errors if e.field == field)
    assert error.message.startswith(f"{field}: ")
    assert text in error.message


def test_a_valid_job_has_no_errors_with_or_without_its_pool() -> None:
    raw = samples.job_spec(
        partitions=["p00", "p05"], bbox={"minLon": -120, "minLat": 26, "maxLon": -100, "maxLat": 40}
    )
    for pool in (POOL, None):
        spec, errors = check_job_spec(raw, pool)
        assert errors == []
        assert isinstance(spec, SpatialJoinJobSpec)


def test_without_the_pool_partition_membership_is_not_checked() -> None:
    _, errors = check_job_spec(samples.job_spec(partitions=["p99"]), None)
    assert errors == []


TRACE_CASES: list[tuple[str, str | None, str | None, str | None, str | None]] = [
    # (case, old traceId, new traceId, effective from status, expected message part)
    ("unchanged", "a", "a", "a", None),
    ("set later to the uid default", None, "uid-1", "uid-1", None),
    ("set for the first time before status", None, "b", None, None),
    ("changed", "a", "b", "a", "was 'a', now 'b'"),
    ("set to something else than the uid default", None, "b", "uid-1", "was 'uid-1', now 'b'"),
    ("removed", "a", None, "a", "now removed"),
]


@pytest.mark.parametrize(
    ("old", "new", "effective", "expected"),
    [case[1:] for case in TRACE_CASES],
    ids=[case[0] for case in TRACE_CASES],
)
def test_trace_id_is_immutable_once_set(
    old: str | None, new: str | None, effective: str | None, expected: str | None
) -> None:
    before = SpatialJoinJobSpec.model_validate(samples.job_spec(traceId=old))
    after = SpatialJoinJobSpec.model_validate(samples.job_spec(traceId=new))
    errors = validate_job_update(before, after, effective)
    if expected is None:
        assert errors == []
    else:
        assert [e.field for e in errors] == ["spec.traceId"]
        assert expected in errors[0].message and errors[0].message.startswith("spec.traceId")


@pytest.mark.parametrize(
    ("loc", "path"),
    [
        ((), "spec"),
        (("replicas", "min"), "spec.replicas.min"),
        (("partitionMap", 2, "bbox", "minLon"), "spec.partitionMap[2].bbox.minLon"),
        (("partitions", 0), "spec.partitions[0]"),
    ],
)
def test_field_paths(loc: tuple[str | int, ...], path: str) -> None:
    assert field_path("spec", loc) == path


def test_field_error_prints_its_message() -> None:
    assert str(FieldError("spec.x", "spec.x: bad")) == "spec.x: bad"


@pytest.mark.parametrize(
    ("polygons", "points"),
    [
        ({"geoparquet": "s3://bucket/polygons.parquet"}, {"geoparquet": "s3://bucket/points/"}),
        ({"table": "a"}, {"geoparquet": "s3://bucket/points"}),
        ({"geoparquet": "s3://bucket/polygons.parquet"}, {"table": "b"}),
    ],
)
def test_each_side_reads_a_table_or_geoparquet(
    polygons: dict[str, str], points: dict[str, str]
) -> None:
    spec, errors = check_job_spec(
        samples.job_spec(source={"polygons": polygons, "points": points}), POOL
    )
    assert errors == []
    assert spec is not None and spec.source.reads_geoparquet()


def test_both_sides_are_reported() -> None:
    _, errors = check_job_spec(samples.job_spec(source={"polygons": {}, "points": {}}), POOL)
    assert [e.message for e in errors] == [
        "spec.source.polygons: set exactly one of table or geoparquet",
        "spec.source.points: set exactly one of table or geoparquet",
    ]
