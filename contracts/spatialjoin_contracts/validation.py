"""Rules the CRD schema cannot express on Kubernetes 1.20 (no CEL), as pure functions.

Every error names the field path (``spec.partitionMap[2].bbox.minLon``) in
both ``field`` and ``message``, so the operator can put the message straight
into a condition or an Event.  The ``check_*`` functions start from the raw
``spec`` dict (what the apiserver stored) and also turn pydantic's parse
errors into field errors; the ``validate_*`` functions take parsed models.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from .models import BBox, SpatialJoinJobSpec, WorkerPoolSpec
from .models.job import Predicate


@dataclass(frozen=True)
class FieldError:
    """One rule broken by one field."""

    field: str
    """JSON path of the field, camelCase, rooted at ``spec``."""
    message: str
    """What is wrong; starts with the field path."""

    def __str__(self) -> str:
        return self.message


def field_path(prefix: str, loc: Iterable[str | int]) -> str:
    """``("partitionMap", 2, "bbox")`` under ``spec`` -> ``spec.partitionMap[2].bbox``."""
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _error(field: str, text: str) -> FieldError:
    return FieldError(field=field, message=f"{field}: {text}")


def parse_errors(exc: ValidationError, prefix: str = "spec") -> list[FieldError]:
    """Pydantic errors as field errors (camelCase paths, pydantic's own wording)."""
    return [_error(field_path(prefix, err["loc"]), err["msg"]) for err in exc.errors()]


def check_pool_spec(raw: Mapping[str, Any]) -> tuple[WorkerPoolSpec | None, list[FieldError]]:
    """Parse and validate a WorkerPool ``spec``; the model is None when it does not parse."""
    try:
        spec = WorkerPoolSpec.model_validate(raw)
    except ValidationError as exc:
        return None, parse_errors(exc)
    return spec, validate_pool(spec)


def check_job_spec(
    raw: Mapping[str, Any], pool: WorkerPoolSpec | None = None
) -> tuple[SpatialJoinJobSpec | None, list[FieldError]]:
    """Parse and validate a SpatialJoinJob ``spec`` (against its pool's spec when known)."""
    try:
        spec = SpatialJoinJobSpec.model_validate(raw)
    except ValidationError as exc:
        return None, parse_errors(exc)
    return spec, validate_job(spec, pool)


def validate_bbox(bbox: BBox, field: str) -> list[FieldError]:
    """Ordering of one bbox (the range is BBox's own field constraint)."""
    errors: list[FieldError] = []
    if bbox.min_lon >= bbox.max_lon:
        errors.append(
            _error(
                f"{field}.minLon",
                f"minLon ({bbox.min_lon}) must be less than {field}.maxLon ({bbox.max_lon}); "
                "boxes crossing the antimeridian are not supported",
            )
        )
    if bbox.min_lat >= bbox.max_lat:
        errors.append(
            _error(
                f"{field}.minLat",
                f"minLat ({bbox.min_lat}) must be less than {field}.maxLat ({bbox.max_lat})",
            )
        )
    return errors


def _duplicates(values: Sequence[object], field: str, what: str) -> list[FieldError]:
    """Each repeated value, reported at its second (third, ...) index."""
    first_seen: dict[object, int] = {}
    errors: list[FieldError] = []
    for index, value in enumerate(values):
        if value in first_seen:
            first = field.format(index=first_seen[value])
            errors.append(
                _error(field.format(index=index), f"duplicate {what} {value!r} (first at {first})")
            )
        else:
            first_seen[value] = index
    return errors


def validate_pool(spec: WorkerPoolSpec) -> list[FieldError]:
    """Cross-field rules of a WorkerPool spec."""
    errors: list[FieldError] = []
    if spec.replicas.min > spec.replicas.max:
        errors.append(
            _error(
                "spec.replicas.min",
                f"{spec.replicas.min} must be less than or equal to "
                f"spec.replicas.max ({spec.replicas.max})",
            )
        )
    if spec.escalation.p3.concurrency < spec.concurrency:
        errors.append(
            _error(
                "spec.escalation.p3.concurrency",
                f"{spec.escalation.p3.concurrency} must be greater than or equal to "
                f"spec.concurrency ({spec.concurrency}): P3 scales concurrency up",
            )
        )
    if spec.broker.dead_letter_topic == spec.broker.topic:
        errors.append(
            _error(
                "spec.broker.deadLetterTopic",
                f"{spec.broker.dead_letter_topic!r} must differ from spec.broker.topic",
            )
        )
    entries = spec.partition_map
    errors += _duplicates(
        [e.name for e in entries], "spec.partitionMap[{index}].name", "partition name"
    )
    errors += _duplicates(
        [e.kafka_partition for e in entries],
        "spec.partitionMap[{index}].kafkaPartition",
        "Kafka partition",
    )
    for index, entry in enumerate(entries):
        if entry.kafka_partition >= spec.broker.partitions:
            errors.append(
                _error(
                    f"spec.partitionMap[{index}].kafkaPartition",
                    f"{entry.kafka_partition} is out of range: the task topic has "
                    f"spec.broker.partitions = {spec.broker.partitions} partitions",
                )
            )
        errors += validate_bbox(entry.bbox, f"spec.partitionMap[{index}].bbox")
    return errors


def validate_job(spec: SpatialJoinJobSpec, pool: WorkerPoolSpec | None = None) -> list[FieldError]:
    """Cross-field rules of a SpatialJoinJob spec; pool rules only when the pool is known."""
    errors: list[FieldError] = []
    predicate = spec.source.predicate
    if predicate.type is Predicate.DWITHIN and predicate.distance_meters is None:
        errors.append(
            _error("spec.source.predicate.distanceMeters", "is required when type is dwithin")
        )
    if predicate.type is Predicate.INTERSECTS and predicate.distance_meters is not None:
        errors.append(
            _error(
                "spec.source.predicate.distanceMeters",
                "must be absent when type is intersects",
            )
        )
    for side, source in (("polygons", spec.source.polygons), ("points", spec.source.points)):
        if (source.table is None) == (source.geoparquet is None):
            errors.append(
                _error(
                    f"spec.source.{side}",
                    "set exactly one of table or geoparquet"
                    + (" (both are set)" if source.table is not None else ""),
                )
            )
    if spec.retry.initial_delay_seconds > spec.retry.max_delay_seconds:
        errors.append(
            _error(
                "spec.retry.initialDelaySeconds",
                f"{spec.retry.initial_delay_seconds} must be less than or equal to "
                f"spec.retry.maxDelaySeconds ({spec.retry.max_delay_seconds})",
            )
        )
    if spec.bbox is not None:
        errors += validate_bbox(spec.bbox, "spec.bbox")
    if spec.partitions is not None:
        errors += _duplicates(spec.partitions, "spec.partitions[{index}]", "partition")
    if pool is not None:
        errors += _validate_against_pool(spec, pool)
    return errors


def _validate_against_pool(spec: SpatialJoinJobSpec, pool: WorkerPoolSpec) -> list[FieldError]:
    errors: list[FieldError] = []
    known = pool.partition_names()
    pool_ref = f"WorkerPool {spec.worker_pool_ref.name!r}"
    for index, name in enumerate(spec.partitions or []):
        if name not in known:
            errors.append(
                _error(
                    f"spec.partitions[{index}]",
                    f"{name!r} is not in the partitionMap of {pool_ref} ({', '.join(known)})",
                )
            )
    if spec.bbox is not None and not errors:
        selected = spec.partitions or known
        boxes = [entry.bbox for entry in pool.partition_map if entry.name in selected]
        if not any(spec.bbox.intersects(box) for box in boxes):
            errors.append(
                _error(
                    "spec.bbox",
                    f"{spec.bbox.as_tuple()} intersects none of the selected partitions "
                    f"of {pool_ref}",
                )
            )
    return errors


def validate_job_update(
    old: SpatialJoinJobSpec, new: SpatialJoinJobSpec, effective_trace_id: str | None = None
) -> list[FieldError]:
    """traceId is immutable once set: by the user (old spec) or by default (the status' uid)."""
    before = old.trace_id or effective_trace_id
    if before is not None and new.trace_id is not None and new.trace_id != before:
        return [
            _error(
                "spec.traceId",
                f"is immutable once set: was {before!r}, now {new.trace_id!r}",
            )
        ]
    if old.trace_id is not None and new.trace_id is None:
        return [_error("spec.traceId", f"is immutable once set: was {old.trace_id!r}, now removed")]
    return []
