"""The Kafka task message: deterministic encoding, strict decoding, dead-letter headers."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from spatialjoin_contracts import samples
from spatialjoin_contracts.models import SpatialJoinJobSpec, WorkerPoolSpec
from spatialjoin_contracts.result_schema import result_uri
from spatialjoin_contracts.task_message import (
    DLQ_HEADER_ERROR,
    DLQ_HEADER_REASON,
    DLQ_HEADER_SOURCE,
    DLQ_HEADER_STAGE,
    EncodedTask,
    JobIdentity,
    MalformedReason,
    MalformedTask,
    TaskMessage,
    TaskOutput,
    dead_letter_headers,
    decode,
    encode,
)

pytestmark = pytest.mark.unit

POOL = WorkerPoolSpec.model_validate(samples.pool_spec())
JOB = SpatialJoinJobSpec.model_validate(samples.job_spec())


def make_task(attempt: int = 1) -> TaskMessage:
    entry = POOL.partition_map[5]
    return TaskMessage(
        version=1,
        trace_id="trace-1",
        job=JobIdentity(namespace="ns", name="job-a", uid="0f1e-uid"),
        partition_key=entry.name,
        kafka_partition=entry.kafka_partition,
        bbox=entry.bbox,
        source=JOB.source,
        output=TaskOutput(
            uri=result_uri(JOB.output.uri_prefix, "trace-1", entry.name),
            contract=JOB.output.contract,
            compression=JOB.output.compression,
        ),
        attempt=attempt,
        enqueued_at=datetime(2024, 5, 1, 10, 0, tzinfo=UTC),
    )


def test_round_trip() -> None:
    task = make_task()
    encoded = encode(task)
    assert decode(encoded.value, encoded.headers) == task


def test_record_key_partition_and_headers() -> None:
    encoded = encode(make_task(attempt=2))
    assert encoded.key == b"p05"
    assert encoded.partition == 5
    assert encoded.headers == [
        ("traceId", b"trace-1"),
        ("jobUid", b"0f1e-uid"),
        ("contract", b"v2.1"),
        ("attempt", b"2"),
    ]


def test_encoding_is_deterministic_camel_case_json_with_a_version() -> None:
    encoded = encode(make_task())
    assert encoded.value == encode(make_task()).value
    body = json.loads(encoded.value)
    assert body["version"] == 1
    assert body["traceId"] == "trace-1"
    assert body["source"]["polygons"]["partitionColumn"] == "spatial_partition"
    assert list(body) == sorted(body)


def test_headers_may_be_str_and_extra_headers_are_ignored() -> None:
    encoded = encode(make_task())
    headers = [(k, v.decode()) for k, v in encoded.headers] + [("traceparent", b"00-abc")]
    assert decode(encoded.value, headers) == make_task()


def _body(mutate: Callable[[dict[str, Any]], None]) -> Callable[[EncodedTask], Any]:
    def build(encoded: EncodedTask) -> tuple[bytes, list[tuple[str, bytes]]]:
        body = json.loads(encoded.value)
        mutate(body)
        return json.dumps(body).encode(), encoded.headers

    return build


def _headers(mutate: Callable[[list[tuple[str, Any]]], list[tuple[str, Any]]]) -> Any:
    def build(encoded: EncodedTask) -> tuple[bytes, list[tuple[str, Any]]]:
        return encoded.value, mutate(list(encoded.headers))

    return build


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        node = body
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value

    return mutate


def _delete(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda body: body.pop(key)


MALFORMED: list[tuple[str, Callable[[EncodedTask], Any], MalformedReason, str | None]] = [
    ("not utf-8", lambda e: (b"\xff\xfe", e.headers), MalformedReason.NOT_UTF8, None),
    ("not json", lambda e: (b"{nope", e.headers), MalformedReason.INVALID_JSON, None),
    ("empty value", lambda e: (None, e.headers), MalformedReason.INVALID_JSON, None),
    ("json array", lambda e: (b"[1]", e.headers), MalformedReason.INVALID_JSON, None),
    ("no version", _body(_delete("version")), MalformedReason.UNSUPPORTED_VERSION, "version"),
    ("version 2", _body(_set("version", 2)), MalformedReason.UNSUPPORTED_VERSION, "version"),
    ("version true", _body(_set("version", True)), MalformedReason.UNSUPPORTED_VERSION, "version"),
    (
        "version as string",
        _body(_set("version", "1")),
        MalformedReason.UNSUPPORTED_VERSION,
        "version",
    ),
    ("attempt as string", _body(_set("attempt", "1")), MalformedReason.INVALID_FIELD, "attempt"),
    ("attempt zero", _body(_set("attempt", 0)), MalformedReason.INVALID_FIELD, "attempt"),
    ("unknown key", _body(_set("extra", 1)), MalformedReason.INVALID_FIELD, "extra"),
    (
        "snake_case key",
        _body(lambda b: b.update(trace_id=b.pop("traceId"))),
        MalformedReason.INVALID_FIELD,
        "traceId",
    ),
    (
        "naive timestamp",
        _body(_set("enqueuedAt", "2024-05-01T10:00:00")),
        MalformedReason.INVALID_FIELD,
        "enqueuedAt",
    ),
    (
        "bad contract",
        _body(_set("output.contract", "v3")),
        MalformedReason.INVALID_FIELD,
        "output.contract",
    ),
    (
        "bbox out of range",
        _body(_set("bbox.minLat", -95)),
        MalformedReason.INVALID_FIELD,
        "bbox.minLat",
    ),
    (
        "sql in table name",
        _body(_set("source.points.table", "b; drop table x")),
        MalformedReason.INVALID_FIELD,
        "source.points.table",
    ),
    ("missing header", _headers(lambda h: h[:3]), MalformedReason.MISSING_HEADER, "attempt"),
    ("no headers", lambda e: (e.value, None), MalformedReason.MISSING_HEADER, "traceId"),
    (
        "null header",
        _headers(lambda h: [*h[:3], ("attempt", None)]),
        MalformedReason.MISSING_HEADER,
        "attempt",
    ),
    (
        "duplicate header",
        _headers(lambda h: [*h, ("traceId", b"trace-1")]),
        MalformedReason.DUPLICATE_HEADER,
        "traceId",
    ),
    (
        "header not utf-8",
        _headers(lambda h: [("traceId", b"\xff"), *h[1:]]),
        MalformedReason.NOT_UTF8,
        "traceId",
    ),
    (
        "trace header mismatch",
        _headers(lambda h: [("traceId", b"other"), *h[1:]]),
        MalformedReason.HEADER_MISMATCH,
        "traceId",
    ),
    (
        "contract header mismatch",
        _headers(lambda h: [*h[:2], ("contract", b"v2.0"), h[3]]),
        MalformedReason.HEADER_MISMATCH,
        "contract",
    ),
    (
        "attempt header mismatch",
        _headers(lambda h: [*h[:3], ("attempt", b"3")]),
        MalformedReason.HEADER_MISMATCH,
        "attempt",
    ),
]


@pytest.mark.parametrize(
    ("build", "reason", "field"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_malformed_messages_raise_a_typed_error(
    build: Callable[[EncodedTask], Any], reason: MalformedReason, field: str | None
) -> None:
    value, headers = build(encode(make_task()))
    with pytest.raises(MalformedTask) as info:
        decode(value, headers)
    assert info.value.reason is reason
    assert info.value.field == field
    assert str(info.value).startswith(reason.value)
    assert isinstance(info.value, ValueError)


def test_integral_floats_in_bboxes_are_accepted() -> None:
    encoded = encode(make_task())
    body = json.loads(encoded.value)
    body["bbox"] = {"minLon": -110, "minLat": 33, "maxLon": -95, "maxLat": 41}
    assert decode(json.dumps(body).encode(), encoded.headers).bbox.min_lon == -110.0


def test_dead_letter_headers_keep_the_original_and_add_the_reason() -> None:
    original = [*encode(make_task()).headers, ("dlq.reason", b"old")]
    headers = dead_letter_headers(
        original, reason="invalid-json", error="x" * 5000, stage="decode", source="tasks/5@42"
    )
    as_dict = dict(headers)
    assert as_dict["traceId"] == b"trace-1"
    assert as_dict[DLQ_HEADER_REASON] == b"invalid-json"
    assert len(as_dict[DLQ_HEADER_ERROR]) == 4096
    assert as_dict[DLQ_HEADER_STAGE] == b"decode"
    assert as_dict[DLQ_HEADER_SOURCE] == b"tasks/5@42"
    assert [k for k, _ in headers].count(DLQ_HEADER_REASON) == 1
