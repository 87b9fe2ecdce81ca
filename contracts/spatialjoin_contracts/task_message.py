"""The task message on the Kafka topic: one partition of one job, and how it is (de)coded.

Encoding: UTF-8 JSON object, camelCase keys sorted, with ``"version": 1``.
Record key: the partition key (UTF-8); record partition: the partition's
``kafkaPartition``.  Headers (UTF-8 values, each exactly once):

    traceId    the job's effective traceId          (must equal body traceId)
    jobUid     the SpatialJoinJob's metadata.uid    (must equal body job.uid)
    contract   v2.1 | v2.0                          (must equal body output.contract)
    attempt    1, 2, ...                            (must equal body attempt)

Parsing is strict (no unknown keys, no snake_case keys, no type coercion, no
naive timestamps); anything else raises :class:`MalformedTask`, which the
worker routes to the dead-letter topic with :func:`dead_letter_headers`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Literal

from pydantic import AwareDatetime, Field, ValidationError

from .models import BBox, ContractVersion
from .models.common import CamelModel, Compression, PartitionName
from .models.job import JoinSource
from .validation import field_path

TASK_MESSAGE_VERSION: Final = 1

HEADER_TRACE_ID: Final = "traceId"
HEADER_JOB_UID: Final = "jobUid"
HEADER_CONTRACT: Final = "contract"
HEADER_ATTEMPT: Final = "attempt"
REQUIRED_HEADERS: Final = (HEADER_TRACE_ID, HEADER_JOB_UID, HEADER_CONTRACT, HEADER_ATTEMPT)

DLQ_HEADER_REASON: Final = "dlq.reason"
DLQ_HEADER_ERROR: Final = "dlq.error"
DLQ_HEADER_STAGE: Final = "dlq.stage"
DLQ_HEADER_SOURCE: Final = "dlq.source"

Headers = Sequence[tuple[str, bytes | str | None]]


class MalformedReason(StrEnum):
    """Why a message could not be accepted."""

    NOT_UTF8 = "not-utf8"
    INVALID_JSON = "invalid-json"
    UNSUPPORTED_VERSION = "unsupported-version"
    INVALID_FIELD = "invalid-field"
    MISSING_HEADER = "missing-header"
    DUPLICATE_HEADER = "duplicate-header"
    HEADER_MISMATCH = "header-mismatch"


class MalformedTask(ValueError):
    """A poison task: route it to the dead-letter topic, never retry it."""

    def __init__(self, reason: MalformedReason, detail: str, field: str | None = None) -> None:
        self.reason = reason
        self.detail = detail
        self.field = field
        super().__init__(f"{reason.value}: {detail}")


class JobIdentity(CamelModel):
    """The SpatialJoinJob a task belongs to."""

    namespace: str = Field(min_length=1, max_length=63)
    name: str = Field(min_length=1, max_length=253)
    uid: str = Field(min_length=1, max_length=128)


class TaskOutput(CamelModel):
    """Where and how the worker writes this partition's result."""

    uri: str = Field(pattern=r"^s3://\S+\.parquet$", max_length=2048)
    contract: ContractVersion
    compression: Compression


class TaskMessage(CamelModel):
    """One partition of one job, as the worker receives it."""

    version: Literal[1]
    trace_id: str = Field(min_length=1, max_length=128)
    job: JobIdentity
    partition_key: PartitionName
    kafka_partition: int = Field(ge=0)
    bbox: BBox
    """The query envelope: the partition's bbox cut by the job's extra bbox."""
    source: JoinSource
    output: TaskOutput
    attempt: int = Field(ge=1)
    enqueued_at: AwareDatetime


@dataclass(frozen=True)
class EncodedTask:
    """What the producer sends."""

    partition: int
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def task_headers(task: TaskMessage) -> list[tuple[str, bytes]]:
    """The four required headers, in a fixed order."""
    values = (task.trace_id, task.job.uid, task.output.contract.value, str(task.attempt))
    return [(name, value.encode()) for name, value in zip(REQUIRED_HEADERS, values, strict=True)]


def encode(task: TaskMessage) -> EncodedTask:
    """Serialize a task for the producer (deterministic bytes)."""
    body = json.dumps(task.model_dump(by_alias=True, mode="json"), sort_keys=True)
    return EncodedTask(
        partition=task.kafka_partition,
        key=task.partition_key.encode(),
        value=body.encode(),
        headers=task_headers(task),
    )


def decode(value: bytes | None, headers: Headers | None) -> TaskMessage:
    """Parse a consumed record strictly; raise MalformedTask with a reason otherwise."""
    header_map = _header_map(headers or [])
    try:
        text = (value or b"").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedTask(MalformedReason.NOT_UTF8, f"value is not UTF-8: {exc}") from exc
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MalformedTask(MalformedReason.INVALID_JSON, f"value is not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise MalformedTask(MalformedReason.INVALID_JSON, "value is not a JSON object")
    version = raw.get("version")
    if version != TASK_MESSAGE_VERSION or isinstance(version, bool):
        raise MalformedTask(
            MalformedReason.UNSUPPORTED_VERSION,
            f"version {version!r} is not supported (expected {TASK_MESSAGE_VERSION})",
            "version",
        )
    try:
        task = TaskMessage.model_validate_json(text, strict=True, by_alias=True, by_name=False)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = field_path("", first["loc"]).lstrip(".")
        detail = "; ".join(
            f"{field_path('', e['loc']).lstrip('.')}: {e['msg']}" for e in exc.errors()
        )
        raise MalformedTask(MalformedReason.INVALID_FIELD, detail, where) from exc
    for name, expected in task_headers(task):
        body_value = expected.decode()
        if header_map[name] != body_value:
            raise MalformedTask(
                MalformedReason.HEADER_MISMATCH,
                f"header {name}={header_map[name]!r} disagrees with the body ({body_value!r})",
                name,
            )
    return task


def _header_map(headers: Headers) -> dict[str, str]:
    seen: dict[str, str] = {}
    for name, raw in headers:
        if name not in REQUIRED_HEADERS:
            continue  # tracing and other infrastructure headers are allowed
        if name in seen:
            raise MalformedTask(
                MalformedReason.DUPLICATE_HEADER, f"header {name} appears twice", name
            )
        if raw is None:
            raise MalformedTask(MalformedReason.MISSING_HEADER, f"header {name} is empty", name)
        try:
            seen[name] = raw if isinstance(raw, str) else raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedTask(
                MalformedReason.NOT_UTF8, f"header {name} is not UTF-8", name
            ) from exc
    missing = [name for name in REQUIRED_HEADERS if name not in seen]
    if missing:
        raise MalformedTask(
            MalformedReason.MISSING_HEADER, f"missing header(s): {', '.join(missing)}", missing[0]
        )
    return seen


def dead_letter_headers(
    original: Headers | None, *, reason: str, error: str, stage: str, source: str | None = None
) -> list[tuple[str, bytes]]:
    """Headers of a dead-lettered record: the original ones plus why, where and from where.

    ``reason`` is a MalformedReason value or another short code; ``stage`` the worker
    step that failed (decode, query, materialize, validate); ``source`` "topic/partition@offset".
    """
    out = [
        (name, raw.encode() if isinstance(raw, str) else raw)
        for name, raw in (original or [])
        if raw is not None and not name.startswith("dlq.")
    ]
    out += [(DLQ_HEADER_REASON, reason.encode()), (DLQ_HEADER_ERROR, error[:4096].encode())]
    out.append((DLQ_HEADER_STAGE, stage.encode()))
    if source is not None:
        out.append((DLQ_HEADER_SOURCE, source.encode()))
    return out
